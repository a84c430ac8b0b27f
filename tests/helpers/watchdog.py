"""The suite's second limit, behind pytest-timeout's (loaded with ``-p`` from pyproject).

pytest-timeout's "signal" method raises once in a test that runs past its limit, and the
test's teardown then runs as usual: the failure has its traceback and every fixture is
stopped. That raise can be lost (an event loop's callback guard catches it, and the test goes
on waiting) and a teardown can hang on its own (a kernel, a server or a browser that does
not stop). CI once sat at 99 % until its 90-minute limit, silently. So, ``GRACE_S`` after a
test's limit, when it is still running, this plugin:

1. writes the stacks of every thread of the worker to the terminal (the capture suspended);
2. notes the test as hung, in a directory every worker of the run shares;
3. stops the worker's child processes (servers, kernels, browsers) and ends the worker.

pytest-xdist reports the worker's crash as the test's failure and hands the rest of the file
to a new worker, the hung test included: that worker finds the note and fails the test at
once instead of running it again, so the run goes on and ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Generator
from pathlib import Path

import pytest

GRACE_S = float(os.environ.get("TESTS_HANG_GRACE_S", "60"))
HUNG_DIR_ENV = "TESTS_HUNG_DIR"

_hung_dir: Path | None = None
_made_here = False


def pytest_configure(config: pytest.Config) -> None:
    global _hung_dir, _made_here
    if HUNG_DIR_ENV not in os.environ:  # the controller (or a run without workers)
        os.environ[HUNG_DIR_ENV] = tempfile.mkdtemp(prefix="tests-hung-")
        _made_here = True
    _hung_dir = Path(os.environ[HUNG_DIR_ENV])


def pytest_unconfigure(config: pytest.Config) -> None:
    if _made_here and _hung_dir is not None:
        shutil.rmtree(_hung_dir, ignore_errors=True)
        os.environ.pop(HUNG_DIR_ENV, None)


def _limit(item: pytest.Item) -> float:
    """The test's pytest-timeout limit in seconds (0: none)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout", 0)
    else:
        value = item.config.getini("timeout")
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _hung_before(nodeid: str) -> bool:
    if _hung_dir is None or not _hung_dir.is_dir():
        return False
    for note in _hung_dir.iterdir():
        try:
            if note.read_text() == nodeid:
                return True
        except OSError:
            continue
    return False


def _stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"\n--- thread {names.get(ident, '?')} ({ident}) ---\n")
        parts.append("".join(traceback.format_stack(frame)))
    return "".join(parts)


def _give_up(item: pytest.Item, limit: float) -> None:
    """The test is still running ``GRACE_S`` past its limit: show, note, end this worker."""
    try:
        capman = item.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.suspend_global_capture(in_=True)
        if _hung_dir is not None:
            (_hung_dir / f"{os.getpid()}").write_text(item.nodeid)
        banner = (
            "+" * 20 + f" {item.nodeid} still running {limit + GRACE_S:.0f} s after it started "
        )
        os.write(2, f"\n{banner}{'+' * 20}\n{_stacks()}\n{'+' * 20} ending this worker\n".encode())
        _stop_children()
    finally:
        os._exit(1)


def _stop_children() -> None:
    try:
        import psutil
    except ImportError:
        return
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """A test that hung in an earlier worker fails at once, without running again."""
    if not _hung_before(item.nodeid):
        return None
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    report = pytest.TestReport(
        item.nodeid,
        item.location,
        {},
        "failed",
        f"{item.nodeid} hung in an earlier worker (its threads' stacks are in the output "
        "above): not run again",
        "call",
    )
    ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.hookimpl(wrapper=True, specname="pytest_runtest_protocol")
def pytest_runtest_protocol_watched(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Give up on the test (and its worker) ``GRACE_S`` past its limit."""
    limit = _limit(item)
    timer = None
    if limit > 0:
        timer = threading.Timer(limit + GRACE_S, _give_up, args=(item, limit))
        timer.daemon = True
        timer.name = f"tests-watchdog {item.nodeid}"
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()
