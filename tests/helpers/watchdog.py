"""The suite's second limit, behind pytest-timeout's (loaded with ``-p`` from pyproject).

pytest-timeout's "signal" method raises once in a test that runs past its limit, and the
test's teardown then runs as usual: the failure has its traceback and every fixture is
stopped. That raise can be lost (an event loop's callback guard catches it, and the test goes
on waiting) and a teardown can hang on its own (a kernel, a server or a browser that does
not stop). CI once sat at 99 % until its 90-minute limit, silently. So, ``GRACE_S`` after a
test's limit (the one pytest-timeout settled on: its marker, ``--timeout``, the ini file),
when the test is still running, this plugin:

1. writes the stacks of every thread of the process to the terminal (capture suspended);
2. stops the process's child processes (servers, kernels, browsers);
3. in a pytest-xdist worker, notes the test as hung (in a directory the controller gave
   every worker) and ends the worker: xdist reports the crash as the test's failure and
   hands the rest of the file to a new worker, which finds the note and passes over the
   test instead of running it again, so the run goes on and ends;
4. in a run without workers, ends the run, saying so, with exit code 2 (interrupted).

It is set through pytest-timeout's hook (so it has the same limit); a debugger entered
during a test (``--pdb``, ``breakpoint()``) turns it off, and when it fires it does nothing
where pytest-timeout sees a debugger (an IDE's, which enters no pdb).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

GRACE_S = float(os.environ.get("TESTS_HANG_GRACE_S", "60"))
NOTES = "tests_hung_dir"  # the key of the workers' workerinput

_notes: Path | None = None  # where the run notes its hung tests (xdist only)
_made_notes = False
_worker = False
_timer: threading.Timer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _notes, _worker
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        _worker = True
        where = workerinput.get(NOTES)
        _notes = Path(where) if where else None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller, for each worker it starts: where hung tests are noted."""
    global _notes, _made_notes
    if _notes is None:
        _notes = Path(tempfile.mkdtemp(prefix="tests-hung-"))
        _made_notes = True
    node.workerinput[NOTES] = str(_notes)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _made_notes and _notes is not None:
        shutil.rmtree(_notes, ignore_errors=True)


# -- the timer, set and cancelled with pytest-timeout's ------------------------------------


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm ``GRACE_S`` past the limit pytest-timeout arms (returning None, it arms its own)."""
    global _timer
    _cancel()
    limit = float(getattr(settings, "timeout", 0) or 0)
    if limit <= 0:
        return
    _timer = threading.Timer(limit + GRACE_S, _give_up, args=(item, limit, settings))
    _timer.daemon = True
    _timer.name = f"tests-watchdog {item.nodeid}"
    _timer.start()


# Not with pytest-timeout's cancel: it cancels at the first failure of a test (its
# pytest_exception_interact), and the teardown that hangs after a timeout's raise is the
# case this is for. The timer ends with the test's whole protocol, or in a debugger.
@pytest.hookimpl(wrapper=True, specname="pytest_runtest_protocol")
def pytest_runtest_protocol_watched(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    try:
        return (yield)
    finally:
        _cancel()


def pytest_enter_pdb(config: pytest.Config, pdb: Any) -> None:
    _cancel()


def _cancel() -> None:
    """Disarm and wait for the timer's thread to end (a test counting threads must not see
    the one of the test before it)."""
    global _timer
    timer, _timer = _timer, None
    if timer is not None:
        timer.cancel()
        if timer is not threading.current_thread():
            timer.join()


# -- a test still running -------------------------------------------------------------------


def _stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"\n--- thread {names.get(ident, '?')} ({ident}) ---\n")
        parts.append("".join(traceback.format_stack(frame)))
    return "".join(parts)


def _give_up(item: pytest.Item, limit: float, settings: Any) -> None:
    """The test is still running ``GRACE_S`` past its limit: show, note, end the process.
    Not under a debugger (an IDE's too, which enters no pdb), as pytest-timeout does not."""
    try:
        import pytest_timeout

        if not getattr(settings, "disable_debugger_detection", False) and (
            pytest_timeout.is_debugging()
        ):
            return
    except ImportError:
        pass
    code = 1
    try:
        capman = item.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.suspend_global_capture(in_=True)
        if _worker and _notes is not None:
            (_notes / f"{os.getpid()}").write_text(item.nodeid)
            ending = "ending this worker (the run goes on without this test)"
        else:
            ending = "ending the run (exit code 2): run the suite with xdist workers to go on"
            code = 2
        banner = f"{item.nodeid} still running {limit + GRACE_S:.0f} s after it started"
        rule = "+" * 20
        text = f"\n{rule} {banner} {rule}\n{_stacks()}\n{rule} {ending}\n"
        os.write(2, text.encode())
        _stop_children()
    finally:
        os._exit(code)


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


def _hung_before(nodeid: str) -> bool:
    if _notes is None or not _notes.is_dir():
        return False
    for note in _notes.iterdir():
        try:
            if note.read_text() == nodeid:
                return True
        except OSError:
            continue
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """A test that hung in an earlier worker is passed over: its failure is the crash that
    xdist reported then."""
    if _worker and _hung_before(item.nodeid):
        # What the test before it set up and the next one does not share is torn down
        # here, as the skipped protocol's own teardown would have.
        item.session._setupstate.teardown_exact(nextitem)
        return True
    return None
