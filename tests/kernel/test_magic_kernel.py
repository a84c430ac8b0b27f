"""The magic in a real kernel: returns at once, updates in place while other cells run."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from tests.conftest import SENTINEL_KEY
from tests.kernel.conftest import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def _display_id(msg: dict) -> str:  # type: ignore[type-arg]
    return str(msg["content"]["transient"]["display_id"])


def test_magic_returns_at_once_and_updates_while_another_cell_blocks(kernel: Kernel) -> None:
    """The cell ends in under a second; its display is updated to the image while a later
    cell is still inside time.sleep."""
    ex = kernel.execute("%%nanobanana --aspect-ratio 1:1 -o cat\nA cat in a banana costume")
    assert ex.replied is not None and ex.replied - ex.sent < 1.0
    (shown,) = ex.of_type("display_data")
    display_id = _display_id(shown)
    assert "image/jpeg" not in shown["content"]["data"]  # not done yet: a live card

    sleeper = kernel.execute("import time; time.sleep(6)", timeout=30)
    busy_from = next(
        t
        for t, m in sleeper.messages
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "busy"
    )
    busy_until = next(
        t
        for t, m in sleeper.messages
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
    )
    updates = [
        (t, m)
        for t, m in sleeper.messages + kernel.stray
        if m["msg_type"] == "update_display_data" and _display_id(m) == display_id
    ]
    during = [(t, m) for t, m in updates if busy_from <= t <= busy_until]
    assert during, "no update reached the first cell while the second cell was sleeping"
    assert any("image/jpeg" in m["content"]["data"] for _, m in during)
    final = next(m for _, m in reversed(updates) if "image/jpeg" in m["content"]["data"])
    assert final["content"]["metadata"]["nanobanana"]["status"] == "success"
    assert final["content"]["metadata"]["nanobanana"]["paths"]


def test_wait_blocks_until_the_image_is_there(kernel: Kernel) -> None:
    """With --wait the cell ends only after the task, and its output already has the image."""
    ex = kernel.execute("%%nanobanana --wait\nA slow banana", timeout=60)
    assert ex.replied is not None and ex.replied - ex.sent > 2.0
    bundles = [m["content"]["data"] for m in ex.of_type("display_data", "update_display_data")]
    assert "image/jpeg" in bundles[-1]
    check = kernel.execute("print(_nanobanana.status)")
    assert "success" in "".join(m["content"].get("text", "") for m in check.of_type("stream"))


# Each user mistake and a fragment of the one line it prints (tests/colab runs them too).
USER_ERRORS = [
    ("%nanobanana --bogus x", "unknown option --bogus; nothing was sent"),
    ("%nanobanana --sise 2K a cat", "unknown option --sise; did you mean --size?"),
    ("%%nanobanana -r undefined_name\na cat", "no variable or file named 'undefined_name'"),
    ("%%nanobanana --aspect-ratio 7:1\na cat", "aspect ratio"),
    ("%%nanobanana\n   ", "prompt is empty"),
    ("%nanobanana --api-key dk-0123456789 a cat", "never goes on the magic's line"),
    ("%%nanobanana --ref /no/such.png\na cat", "does not exist"),
    ("%%nanobanana --expand\na {nope}", "not defined"),
    ("%nanobanana status nothing-like-this", "no such task"),
]


@pytest.mark.parametrize(("cell", "fragment"), USER_ERRORS)
def test_user_errors_are_one_line(kernel: Kernel, cell: str, fragment: str) -> None:
    """Each user mistake prints one readable line, and no traceback."""
    check_user_error_is_one_line(kernel, cell, fragment)


def check_user_error_is_one_line(kernel: Kernel, cell: str, fragment: str) -> None:
    ex = kernel.execute(cell)
    assert not ex.of_type("error")
    text = "".join(m["content"]["text"] for m in ex.of_type("stream"))
    assert fragment in text, [m for _, m in ex.messages]
    assert len(text.strip().splitlines()) == 1, text
    assert "Traceback" not in text


def test_missing_key_says_where_to_put_it(slow_sandbox: Sandbox, tmp_path: Path) -> None:
    """Without any key the magic says where to put one (and names the sandbox), in one line."""
    from tests.kernel.conftest import start_kernel

    k = start_kernel(slow_sandbox, tmp_path / "data", NANOBANANA_API_KEY="")
    try:
        k.execute("%load_ext nanobanana_jupyter")
        ex = k.execute("%%nanobanana\na cat")
        text = "".join(m["content"]["text"] for m in ex.of_type("stream"))
        assert "NANOBANANA_API_KEY" in text and "%nanobanana sandbox" in text
        assert not ex.of_type("error")
    finally:
        k.close()


def _run_notebook(
    cells: list[str], sb: Sandbox, tmp_path: Path, kernel_name: str = "python3"
) -> nbformat.NotebookNode:
    import os

    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    env = {
        "NANOBANANA_BASE_URL": sb.url,
        "NANOBANANA_ALLOW_LOCAL_URLS": "1",
        "NANOBANANA_API_KEY": sb.api_key,
        "NANOBANANA_DATA_DIR": str(tmp_path / "data"),
        "NANOBANANA_WAIT": "1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = NotebookClient(
            nb, timeout=120, startup_timeout=60, kernel_name=kernel_name, allow_errors=True
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    return nbformat.read(path, as_version=4)


def test_saved_notebook_has_the_image_and_never_the_key(
    slow_sandbox: Sandbox, tmp_path: Path
) -> None:
    """K1/J4: nbclient's saved notebook holds the image; the sentinel key appears nowhere,
    even after a failing cell under %xmode Verbose with DEBUG logging of httpx."""
    check_saved_notebook_has_the_image_and_never_the_key(slow_sandbox, tmp_path)


def check_saved_notebook_has_the_image_and_never_the_key(
    sb: Sandbox, tmp_path: Path, kernel_name: str = "python3"
) -> None:
    """The body of the test above, on any kernelspec (tests/colab runs Colab's pins)."""
    nb = _run_notebook(
        [
            "import logging, sys\nlogging.basicConfig(level=logging.DEBUG, stream=sys.stderr)",
            "%load_ext nanobanana_jupyter",
            "%%nanobanana -o cat\nA cat made of bananas",
            "%xmode Verbose",
            "from nanobanana_jupyter import get_default_session\n"
            "def fails(session, key, settings):\n"
            "    raise RuntimeError('boom')\n"
            "session = get_default_session()\n"
            "fails(session, session.settings.api_key, session.settings)",
            "cat",
            "%nanobanana config",
        ],
        sb,
        tmp_path,
        kernel_name,
    )
    saved = (tmp_path / "saved.ipynb").read_text()
    assert SENTINEL_KEY not in saved
    assert SENTINEL_KEY[3:] not in saved
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any(o.output_type == "error" and o.ename == "RuntimeError" for o in outputs)
    assert "SecretKey(fingerprint=" in saved  # the verbose traceback showed the key's mask
    images = [o for o in outputs if "image/jpeg" in o.get("data", {})]
    assert len(images) >= 2  # the magic's output and `cat` itself
    assert not [o for o in outputs if "application/javascript" in o.get("data", {})]
    meta = images[0]["metadata"]["nanobanana"]
    assert meta["status"] == "success" and meta["prompt"] == "A cat made of bananas"
    # Nothing else on disk holds the key either (K3).
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert SENTINEL_KEY.encode() not in path.read_bytes(), path


def test_rerun_of_a_cell_reuses_the_result(slow_sandbox: Sandbox, tmp_path: Path) -> None:
    """Restart & Run All: the same cell in a new kernel reuses the stored result, no new charge."""
    cells = ["%load_ext nanobanana_jupyter", "%%nanobanana -n 2\nTwo bananas"]
    _run_notebook(cells, slow_sandbox, tmp_path)
    assert len(slow_sandbox.ledger.charges) == 2
    started = time.monotonic()
    nb = _run_notebook(cells, slow_sandbox, tmp_path)
    assert len(slow_sandbox.ledger.charges) == 2
    assert time.monotonic() - started < 30
    outputs = [o for o in nb.cells[1].outputs if "image/jpeg" in o.get("data", {})]
    assert len(outputs) == 2


# -- H7: headless runs save every finished image -------------------------------------------

HEADLESS_RUNS = 10
# 1 API second = 50 ms here: tasks take 0.2-1.5 s, and a new task is invisible (404) for
# its first 0.4 s, as on the real service.
HEADLESS_SCALE = 0.05
HEADLESS_CELLS = [
    "%load_ext nanobanana_jupyter",
    # The sandbox's clock runs fast; the default session polls on the same clock.
    "from nanobanana_jupyter import PollPolicy, Session, set_default_session\n"
    f"set_default_session(Session(poll_policy=PollPolicy().scaled({HEADLESS_SCALE})))",
    "%%nanobanana --wait -o a\nA lighthouse of bananas {run}",
    "%%nanobanana --wait -n 2\nTwo bananas on a plate {run}",
    "%%nanobanana -o c\nA banana boat, no wait {run}",
    "%nanobanana wait",
    "d = %nanobanana a banana kite on the line {run}",
    "d.wait();",
    "%%nanobanana -o e\nA banana tree at night {run}",
    "import nanobanana_jupyter\nnanobanana_jupyter.get_default_session().wait_all();",
]
MAGIC_CELLS = (2, 3, 4, 6, 8)  # the cells whose saved output must hold images
IMAGES_PER_CELL = {2: 1, 3: 2, 4: 1, 6: 1, 8: 1}


@pytest.fixture
def realistic_sandbox() -> Iterator[Sandbox]:
    """Jittered durations, a 404 for each new task's first 0.4 s, occasional 500s and 429s."""
    rng = random.Random(14)
    with Sandbox(
        time_scale=HEADLESS_SCALE,
        duration=lambda prompt: rng.uniform(4.0, 30.0),
        plan=TaskPlan(invisible_for=0.4 / HEADLESS_SCALE),
        max_side=128,
        api_key=SENTINEL_KEY,
    ) as sb:
        sb.faults.add_random("query", Fault.SERVER_ERROR_HTML, 0.05, seed=14)
        sb.faults.add_random("query", Fault.RATE_LIMIT, 0.05, retry_after="0.2")
        sb.faults.add_random("submit", Fault.RATE_LIMIT, 0.05, retry_after="0.2")
        yield sb


def _missing_images(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with the saved magic cells of one run (empty when all is well)."""
    problems = []
    for index in MAGIC_CELLS:
        cell = nb.cells[index]
        cards = [o for o in cell.outputs if "nanobanana" in o.get("metadata", {})]
        statuses = [o["metadata"]["nanobanana"].get("status") for o in cards]
        images = [o for o in cards if "image/jpeg" in o.get("data", {})]
        if len(images) != IMAGES_PER_CELL[index] or statuses != ["success"] * len(cards):
            problems.append(f"cell {index} ({cell.source.splitlines()[0]!r}): {statuses}")
    return problems


def test_h7_headless_runs_save_every_finished_image(
    realistic_sandbox: Sandbox, tmp_path: Path
) -> None:
    """H7: nbclient, run after run, saves each magic cell with its image: after --wait,
    %nanobanana wait, task.wait() and session.wait_all(), every card is final."""
    import os

    failures: dict[int, list[str]] = {}
    started = time.monotonic()
    for run in range(HEADLESS_RUNS):
        cells = [c.replace("{run}", f"(run {run})") for c in HEADLESS_CELLS]
        nb = new_notebook(cells=[new_code_cell(c) for c in cells])
        env = {
            "NANOBANANA_BASE_URL": realistic_sandbox.url,
            "NANOBANANA_API_KEY": realistic_sandbox.api_key,
            "NANOBANANA_DATA_DIR": str(tmp_path / f"data-{run}"),
            # The sandbox serves its images from 127.0.0.1 (H9: only when asked for).
            "NANOBANANA_ALLOW_LOCAL_URLS": "1",
        }
        old = {k: os.environ.get(k) for k in [*env, "NANOBANANA_WAIT"]}
        os.environ.update(env)
        os.environ.pop("NANOBANANA_WAIT", None)
        try:
            NotebookClient(
                nb, timeout=60, startup_timeout=60, kernel_name="python3", allow_errors=False
            ).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        path = tmp_path / f"run-{run}.ipynb"
        nbformat.write(nb, path)
        problems = _missing_images(nbformat.read(path, as_version=4))
        if problems:
            failures[run] = problems
    elapsed = time.monotonic() - started
    assert not failures, (
        f"{len(failures)} of {HEADLESS_RUNS} runs saved unfinished cards ({elapsed:.0f} s): "
        f"{failures}"
    )
