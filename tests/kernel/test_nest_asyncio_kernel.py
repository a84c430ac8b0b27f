"""Notebooks that apply nest-asyncio (issue 19, item 2).

The package never patches asyncio (its network work runs on a private loop in a thread of
its own, see ``_core/engine.py``), but many notebooks do: older tutorials and some LLM
frameworks start with ``import nest_asyncio; nest_asyncio.apply()``. That swaps asyncio's
C ``Task`` and ``Future`` for the pure-Python ones (``nest_asyncio2`` only below Python 3.14),
replaces ``asyncio.run`` and makes every loop of the kernel's class (the engine's too)
re-entrant. Each library gets ONE real kernel, patched before the extension is loaded, and
every way of using the package runs in it: the live card, ``--wait``, ``task.wait()``,
``await task``, ``asyncio.run(...)`` of the async API, and the panel. A last test applies
each library in a plain process whose engine already runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter.sandbox import Sandbox
from tests.conftest import SENTINEL_KEY
from tests.kernel.conftest import Execution, Kernel, start_kernel

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

# 1 API second = 50 ms: a task takes 0.1 s of wall time.
SCALE = 0.05
LIBRARIES = ["nest_asyncio", "nest_asyncio2"]


@pytest.fixture(scope="module", params=LIBRARIES)
def patched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kernel]:
    """A kernel whose first cell applies the library, then loads the extension."""
    library = request.param
    with Sandbox(time_scale=SCALE, duration=2.0, max_side=128, api_key=SENTINEL_KEY) as sb:
        k = start_kernel(sb, tmp_path_factory.mktemp(library) / "data")
        try:
            applied = k.execute(f"import asyncio, {library}\n{library}.apply()")
            assert not applied.of_type("error"), _errors(applied)
            # The patch took: asyncio is marked patched, asyncio.run is replaced, and the
            # kernel's loop class runs re-entrantly (what every later check runs under).
            # (Below Python 3.14 both also swap asyncio.Task for the pure-Python class.)
            check = _run(
                k,
                "import asyncio.runners\n"
                "print(getattr(asyncio, '_nest_patched', False),"
                " asyncio.run is not asyncio.runners.run,"
                " type(asyncio.get_event_loop()).__dict__.get('_nest_patched', False))",
            )
            assert check.split() == ["True", "True", "True"], check
            _run(
                k,
                "%load_ext nanobanana_jupyter\n"
                "from nanobanana_jupyter import PollPolicy, Session, set_default_session\n"
                f"set_default_session(Session(poll_policy=PollPolicy().scaled({SCALE})))",
            )
            yield k
        finally:
            k.close()


def _errors(ex: Execution) -> list[str]:
    return [f"{m['content']['ename']}: {m['content']['evalue']}" for m in ex.of_type("error")]


def _run(k: Kernel, code: str, timeout: float = 30) -> str:
    """Run a cell that must not fail; return what it printed."""
    ex = k.execute(code, timeout=timeout)
    assert not ex.of_type("error"), _errors(ex)
    return "".join(m["content"].get("text", "") for m in ex.of_type("stream"))


def _last_line(text: str) -> Any:
    """The cell's last printed line, read as JSON (the checks print one JSON line)."""
    return json.loads(text.strip().splitlines()[-1])


def test_the_card_updates_in_place_to_the_image(patched: Kernel) -> None:
    """The cell returns with a live card; the engine's updates end with the image."""
    ex = patched.execute("%%nanobanana -o card\nA cat in a banana costume")
    assert not ex.of_type("error"), _errors(ex)
    (shown,) = ex.of_type("display_data")
    display_id = shown["content"]["transient"]["display_id"]
    assert "image/jpeg" not in shown["content"]["data"]  # not done yet: a live card
    messages = list(ex.messages)
    deadline = time.monotonic() + 20
    final = None
    while final is None and time.monotonic() < deadline:
        messages += patched.collect(0.2)
        final = next(
            (
                m
                for _, m in messages
                if m["msg_type"] == "update_display_data"
                and m["content"]["transient"]["display_id"] == display_id
                and "image/jpeg" in m["content"]["data"]
            ),
            None,
        )
    assert final is not None, "the card never showed the image"
    assert final["content"]["metadata"]["nanobanana"]["status"] == "success"


def test_wait_saves_the_image(patched: Kernel) -> None:
    ex = patched.execute("%%nanobanana --wait -o waited\nA slow banana", timeout=30)
    assert not ex.of_type("error"), _errors(ex)
    bundles = [m["content"]["data"] for m in ex.of_type("display_data", "update_display_data")]
    assert bundles and "image/jpeg" in bundles[-1]
    out = _run(
        patched,
        "import json, os\n"
        "print(json.dumps([waited.status.value, [os.path.isfile(p) for p in waited.paths]]))",
    )
    assert _last_line(out) == ["success", [True]]


def test_task_wait(patched: Kernel) -> None:
    out = _run(
        patched,
        "import json, os\n"
        "t = %nanobanana a kettle\n"
        "t.wait(20)\n"
        "print(json.dumps([t.status.value, [os.path.isfile(p) for p in t.paths]]))",
    )
    assert _last_line(out) == ["success", [True]]


def test_await_task_in_a_cell(patched: Kernel) -> None:
    """Top-level await runs on the kernel's (patched) loop."""
    _run(patched, "a = %nanobanana a lamp")
    out = _run(
        patched, "import json\nawaited = await a\nprint(json.dumps([awaited is a, a.status.value]))"
    )
    assert _last_line(out) == [True, "success"]


def test_asyncio_run_of_the_async_api(patched: Kernel) -> None:
    """``asyncio.run`` inside a cell (what nest-asyncio is applied for): awaiting a task and
    the AsyncClient both work on the nested loop."""
    out = _run(
        patched,
        "import asyncio, json\n"
        "from nanobanana_jupyter import AsyncClient, get_default_session\n"
        "async def main():\n"
        "    task = get_default_session().generate('a banana under asyncio.run')\n"
        "    await task\n"
        "    async with AsyncClient() as client:\n"
        "        snapshot = await client.query(task.task_id)\n"
        "        submitted = await client.submit('a second banana, straight to the API')\n"
        "        again = await client.query(submitted)\n"
        "    return [task.status.value, snapshot.status.value, bool(submitted), again.task_id == submitted]\n"
        "print(json.dumps(asyncio.run(main())))",
    )
    assert _last_line(out) == ["success", "success", True, True]


def _comm_msg(k: Kernel, comm_id: str, data: dict[str, Any]) -> None:
    """What a front end sends when a widget changes or is clicked."""
    msg = k.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    k.client.shell_channel.send(msg)


def test_the_panel_generates_and_shows_the_result(patched: Kernel) -> None:
    """``%nanobanana panel`` in the patched kernel, driven as a front end drives it (comm
    messages that the kernel's patched loop dispatches): typing a prompt and clicking
    Generate ends with a card showing the image and the file in the gallery."""
    ids = _last_line(
        _run(
            patched,
            "import json\n"
            "panel = %nanobanana panel\n"
            "print(json.dumps([panel.prompt_box.model_id, panel.generate_button.model_id]))",
        )
    )
    prompt_id, button_id = ids
    _comm_msg(
        patched,
        prompt_id,
        {"method": "update", "state": {"value": "a banana in the panel"}, "buffer_paths": []},
    )
    _comm_msg(patched, button_id, {"method": "custom", "content": {"event": "click"}})
    out = _run(
        patched,
        "import json, os, time\n"
        "deadline = time.monotonic() + 20\n"
        "while time.monotonic() < deadline and not panel.tasks:\n"
        "    time.sleep(0.02)\n"
        "task = panel.tasks[0]\n"
        "card = panel.cards.card_of(task.local_id)\n"
        "def shown():\n"
        "    return card.status.value == 'success' and task.paths and "
        "set(task.paths) <= set(panel.gallery_paths)\n"
        "while time.monotonic() < deadline and not shown():\n"
        "    time.sleep(0.02)\n"
        "paths = task.paths\n"
        "print(json.dumps([task.prompt, card.status.value, card.image.value[:2] == b'\\xff\\xd8',"
        " [os.path.isfile(p) for p in paths], set(paths) <= set(panel.gallery_paths)]))\n"
        "panel.close()",
    )
    assert _last_line(out) == ["a banana in the panel", "success", True, [True], True]


# A framework imported half-way through a notebook applies the patch while the engine's loop
# already runs: nest-asyncio then patches the class of that running loop too (it patches
# loop classes, not loop objects). A plain process shows it as well as a kernel, in a second.
LATE_APPLY = """
import asyncio, importlib, json, sys
from pathlib import Path
from nanobanana_jupyter import AsyncClient, PollPolicy, Session, Settings

library, url, key, data_dir, scale = sys.argv[1:]
settings = Settings.resolve(
    api_key=key, base_url=url, data_dir=Path(data_dir), environ={},
    colab=lambda name: None, allow_local_urls=True,
)
seen = []
with Session(settings=settings, poll_policy=PollPolicy().scaled(float(scale))) as session:
    seen.append(session.generate("before the patch").wait(20).status.value)
    asyncio.set_event_loop(asyncio.new_event_loop())  # a notebook's loop, in a plain process
    importlib.import_module(library).apply()
    seen.append(getattr(asyncio, '_nest_patched', False))
    seen.append(session.generate("after the patch").wait(20).status.value)
    batch = session.map(["one", "two", "three"])
    seen.append([t.wait(20).status.value for t in batch])

    async def main():
        task = session.generate("inside asyncio.run")
        await task
        async with AsyncClient(settings=settings) as client:
            snapshot = await client.query(task.task_id)
        return [task.status.value, snapshot.status.value]

    async def nested():
        return asyncio.run(main())  # what the patch is for: a run inside a running loop

    seen.append(asyncio.run(nested()))
print(json.dumps(seen))
"""


@pytest.mark.parametrize("library", LIBRARIES)
def test_applied_after_the_engine_started(library: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    with Sandbox(time_scale=SCALE, duration=2.0, max_side=64, api_key=SENTINEL_KEY) as sb:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                LATE_APPLY,
                library,
                sb.url,
                sb.api_key,
                str(tmp_path),
                str(SCALE),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert _last_line(done.stdout) == [
            "success",
            True,
            "success",
            ["success"] * 3,
            ["success", "success"],
        ], done.stderr[-2000:]
        assert sb.ledger.double_charges() == []
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
