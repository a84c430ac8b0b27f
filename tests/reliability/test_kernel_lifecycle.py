"""Lifecycle in a real kernel, rows L1-L4 (and P8's Ctrl-C), against a sandbox in this process.

L1-L3 and P8 drive an ipykernel through jupyter_client (the layer nbclient runs on), which
lets a test restart, interrupt or shut the kernel down mid-task; L4 runs a notebook with
nbclient.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan
from tests.conftest import SENTINEL_KEY
from tests.kernel.conftest import Execution, Kernel
from tests.reliability.conftest import wait_until

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def _env(sb: Sandbox, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOBANANA_", "DEFAPI_"))}
    env.update(
        NANOBANANA_BASE_URL=sb.url,
        NANOBANANA_ALLOW_LOCAL_URLS="1",
        NANOBANANA_API_KEY=sb.api_key,
        NANOBANANA_DATA_DIR=str(data_dir),
        **extra,
    )
    return env


def start_kernel(sb: Sandbox, data_dir: Path, stderr: IO[bytes] | None = None) -> Kernel:
    km = KernelManager(kernel_name="python3")
    kwargs: dict[str, Any] = {"env": _env(sb, data_dir), "cwd": str(data_dir.parent)}
    if stderr is not None:
        kwargs["stderr"] = stderr
    km.start_kernel(**kwargs)
    kernel = Kernel(km)
    kernel.execute("%load_ext nanobanana_jupyter")
    return kernel


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """Tasks take about 3 s of real time, so a kernel can be restarted while they run."""
    with Sandbox(time_scale=0.5, duration=6.0, max_side=64, api_key=SENTINEL_KEY) as sb:
        yield sb
        assert sb.ledger.double_charges() == []


def _text(ex: Execution) -> str:
    return "".join(m["content"].get("text", "") for m in ex.of_type("stream"))


SHORT_LEASE = (
    "from nanobanana_jupyter import Session, set_default_session\n"
    "set_default_session(Session(lease_ttl=3.0))"
)


def test_l1_restart_with_three_pending_tasks_resumes_without_resubmitting(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """L1: a killed, restarted kernel resumes 3 running tasks by id; nothing is submitted again."""
    kernel = start_kernel(sandbox, tmp_path / "data")
    try:
        # A short lease: the dead kernel's leases must expire before another may poll (D3).
        kernel.execute(SHORT_LEASE)
        kernel.execute("%%nanobanana -n 3 -o ts\nthree pending bananas")
        check = kernel.execute(
            "import time\n"
            "for _ in range(200):\n"
            "    if all(t.task_id for t in ts): break\n"
            "    time.sleep(0.05)\n"
            "print('ids', sum(bool(t.task_id) for t in ts))"
        )
        assert "ids 3" in _text(check)
        assert not sandbox.ledger.completed_at, "the tasks ended before the restart"
        kernel.km.restart_kernel(now=True)
        kernel.client.wait_for_ready(timeout=60)
        kernel.execute("%load_ext nanobanana_jupyter")
        kernel.execute(SHORT_LEASE)
        resumed = kernel.execute("%nanobanana resume")
        assert len(resumed.of_type("display_data")) == 3
        waited = kernel.execute(
            "from nanobanana_jupyter import get_default_session\n"
            "for t in get_default_session().tasks: t.wait(60)\n"
            "print('statuses', sorted(t.status.value for t in get_default_session().tasks))",
            timeout=90,
        )
        assert "statuses ['success', 'success', 'success']" in _text(waited)
    finally:
        kernel.close()
    assert sandbox.ledger.submits_received == 3 and len(sandbox.ledger.charges) == 3
    assert sandbox.ledger.duplicate_submits() == []


def test_l2_shutdown_during_requests_is_quick_and_quiet(sandbox: Sandbox, tmp_path: Path) -> None:
    """L2: shutdown mid-submit and mid-poll exits cleanly in < 3 s with nothing on stderr."""
    stderr = tmp_path / "kernel-stderr.txt"
    sandbox.plan(TaskPlan(stuck=True))
    with stderr.open("wb") as sink:
        kernel = start_kernel(sandbox, tmp_path / "data", stderr=sink)
        took, process = _shut_down_mid_requests(sandbox, kernel)
    errors = stderr.read_text(errors="replace")
    assert process.returncode == 0, f"the kernel was killed ({process.returncode}): {errors}"
    assert took < 3.0, f"shutdown took {took:.1f} s"
    for needle in ("Event loop is closed", "Traceback", "Task was destroyed", "Unclosed"):
        assert needle not in errors, errors


def _shut_down_mid_requests(sandbox: Sandbox, kernel: Kernel) -> tuple[float, Any]:
    """Start a polled task and a hanging submit, then shut the kernel down mid-request."""
    try:
        kernel.execute("%%nanobanana -o polled\nstuck and polled")
        wait_until(lambda: sum(sandbox.ledger.queries.values()) >= 1, 15, "the first poll")
        sandbox.faults.add("query", Fault.HANG_AFTER_ACCEPT, count=50)
        sandbox.faults.add("submit", Fault.HANG_AFTER_ACCEPT)
        kernel.execute("%%nanobanana -o hung\nthe submit hangs")
        wait_until(lambda: sandbox.ledger.submits_received == 2, 10, "the hanging submit")
        wait_until(
            lambda: any(r.fault == "HANG_AFTER_ACCEPT" and r.path.endswith("query")
                        for r in sandbox.ledger.requests),
            15,
            "a hanging poll",
        )  # fmt: skip
        provisioner = kernel.km.provisioner
        process = getattr(provisioner, "process", None)
        assert process is not None
        kernel.client.stop_channels()
        started = time.monotonic()
        kernel.km.shutdown_kernel(now=False)
        return time.monotonic() - started, process
    finally:
        if kernel.km.has_kernel:
            kernel.km.shutdown_kernel(now=True)


def test_l3_background_completion_lands_in_its_own_output_not_the_running_cell(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """L3: a task ending while another cell runs updates its own slot, not the running cell."""
    kernel = start_kernel(sandbox, tmp_path / "data")
    try:
        first = kernel.execute("%%nanobanana -o t\nfinishes in the background")
        (slot,) = first.of_type("display_data")
        display_id = slot["content"]["transient"]["display_id"]
        second = kernel.execute(
            "import time\nprint('B starts')\ntime.sleep(6)\nprint('B ends')", timeout=30
        )
    finally:
        kernel.close()
    own = [
        m
        for _, m in second.messages
        if m["parent_header"].get("msg_id") == second.msg_id
        and m["msg_type"] in ("stream", "display_data", "execute_result", "error")
    ]
    assert [m["msg_type"] for m in own] == ["stream"] * len(own)
    assert "".join(m["content"]["text"] for m in own) == "B starts\nB ends\n"
    updates = [
        m
        for _, m in second.messages + kernel.stray
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == display_id
    ]
    assert any("image/jpeg" in m["content"]["data"] for m in updates)
    stray_displays = [m for _, m in kernel.stray if m["msg_type"] in ("display_data", "stream")]
    assert stray_displays == []


def test_l4_sync_wait_and_await_both_work_inside_the_kernels_running_loop(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L4 (nbclient): wait(), result(), await and gather of tasks all work in the kernel loop."""
    for name, value in _env(sandbox, tmp_path / "data").items():
        monkeypatch.setenv(name, value)
    cells = [
        "%load_ext nanobanana_jupyter",
        "from nanobanana_jupyter import get_default_session\nsession = get_default_session()\n"
        "t = session.generate('sync wait in a running loop')\n"
        "a = session.generate('awaited at top level')\n"
        "g = [session.generate('g1'), session.generate('g2')]\n"
        "n = session.generate('nested')\n"
        "line = %nanobanana a line magic task",
        "t.wait(60)\nprint('sync', t.status.value, len(t.result()))",
        "done = await a\nprint('await', done.status.value)",
        "import asyncio\nboth = await asyncio.gather(*g)\n"
        "print('gather', [x.status.value for x in both])",
        "line.wait(60)\nprint('line', line.status.value)",
        "async def inner():\n    return (await n).status.value\n"
        "print('nested', await asyncio.wait_for(inner(), 60))",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, startup_timeout=60, kernel_name="python3")
    client.execute(cwd=str(tmp_path))
    saved = tmp_path / "l4.ipynb"
    nbformat.write(nb, saved)
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.output_type == "stream"
    )
    for expected in (
        "sync success 1",
        "await success",
        "gather ['success', 'success']",
        "line success",
        "nested success",
    ):
        assert expected in text, text
    assert "running event loop" not in saved.read_text()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_p8_ctrl_c_interrupts_a_blocking_wait_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    """P8: Ctrl-C lands in task.wait() within 1 s; the task goes on; cancel() then abandons it."""
    kernel = start_kernel(sandbox, tmp_path / "data")
    try:
        kernel.execute(
            "import threading\nfrom nanobanana_jupyter import get_default_session\n"
            "session = get_default_session()\n"
            "session.generate('warm up the engine').wait(60)\n"
            "baseline = threading.active_count()",
            timeout=90,
        )
        sandbox.plan(TaskPlan(duration=60.0))
        msg_id = kernel.client.execute("t = session.generate('long wait')\nt.wait()")
        ex = Execution(msg_id, time.monotonic())
        wait_until(lambda: sandbox.ledger.submits_received == 2, 10, "the second submit")
        time.sleep(0.5)
        interrupted = time.monotonic()
        kernel.km.interrupt_kernel()
        deadline = interrupted + 10
        while time.monotonic() < deadline and not any(
            m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
            for _, m in ex.messages
        ):
            kernel._drain(ex)
        idle = next(
            t
            for t, m in ex.messages
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
        )
        errors = ex.of_type("error")
        assert errors and errors[0]["content"]["ename"] == "KeyboardInterrupt"
        assert idle - interrupted < 1.0
        after = kernel.execute(
            "print('running', not t.done())\n"
            "print('cancelled', t.cancel(), t.status.value)\n"
            "import time; time.sleep(0.5)\n"
            "print('threads', threading.active_count() - baseline)\n"
            "print('polling', session.stats()['polling'])"
        )
        text = _text(after)
    finally:
        kernel.close()
    assert "running True" in text
    assert "cancelled True abandoned" in text
    assert "threads 0" in text and "polling 0" in text
