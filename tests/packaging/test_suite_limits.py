"""The suite's own limits: a test that hangs, even in its teardown, ends with its stacks shown
and the rest of the run goes on (CI once sat at 99 % until its 90-minute limit, silent).

Runs pytest on small files in a child process, in this project's configuration
(``-c pyproject.toml``) with a short limit and grace, with two xdist workers (the way
``make test`` runs the suite) and without.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HANGS = textwrap.dedent(
    """
    import threading

    import pytest


    @pytest.fixture
    def stuck():
        yield
        try:
            threading.Event().wait()  # a teardown that never returns: a kernel that will not stop
        finally:
            threading.Event().wait()  # ...and that waits again when the timeout raises


    def test_hangs_in_its_teardown(stuck):
        pass


    def test_after_it_in_the_same_file():
        pass


    def test_in_a_loop_with_signals_swallowed():
        while True:
            try:
                threading.Event().wait(0.05)
            except BaseException:  # an event loop's callback guard eats what is raised
                pass
    """
)


def run_pytest(tmp_path: Path, *args: str, grace: float = 2) -> tuple[int, str]:
    """pytest in a child process, in this project's configuration; its code and output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TESTS_HANG_GRACE_S": str(grace)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-v",
            *args,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=100,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_hanging_test_is_shown_failed_once_and_the_run_ends(tmp_path: Path) -> None:
    """Two hung tests (one in its teardown, one swallowing the timeout's raise) each end
    their worker with the stacks shown; each fails once and runs once; every other test
    still runs."""
    (tmp_path / "test_hangs.py").write_text(HANGS)
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n")
    code, out = run_pytest(tmp_path, "-o", "timeout=2", "-n", "2", "--dist", "loadfile")
    assert code == 1, out[-4000:]
    for hung in ("test_hangs_in_its_teardown", "test_in_a_loop_with_signals_swallowed"):
        # Hung once (its stacks shown once: it did not run again), failed as a crash.
        assert out.count(f"test_hangs.py::{hung} still running") == 1, out[-4000:]
        assert f"crashed while running 'test_hangs.py::{hung}'" in out, out[-4000:]
    assert "threading.Event().wait()" in out  # the stuck line, in the stacks shown
    assert "PASSED test_hangs.py::test_after_it_in_the_same_file" in out, out[-4000:]
    assert "PASSED test_fine.py::test_fine" in out, out[-4000:]
    assert "maximum crashed workers" not in out
    # The teardown's test passed its call (a report) and crashed (a failure). Once, in a
    # fresh-clone CI run under load, xdist reported a second crash "while running" the
    # teardown's test although its stacks were shown once (it hung once, and did not run
    # again): a third failure. Where in xdist's crash handling that comes from is not
    # pinned down; what this promises is that each hung test hangs once and the run ends.
    found = re.search(r"=+ ([23]) failed, 3 passed in ", out)
    assert found, out[-4000:]


@pytest.mark.slow
def test_without_workers_a_hang_ends_the_run_saying_so(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGS)
    code, out = run_pytest(tmp_path, "-o", "timeout=2", "-p", "no:xdist")
    assert code == 2, out[-4000:]
    assert "test_hangs.py::test_hangs_in_its_teardown still running" in out
    assert "ending the run (exit code 2)" in out


@pytest.mark.slow
def test_the_limit_is_the_one_pytest_timeout_uses(tmp_path: Path) -> None:
    """``--timeout`` on the command line beats the ini file's, for the watchdog too."""
    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_takes_three_seconds():\n    time.sleep(3)\n"
    )
    code, out = run_pytest(tmp_path, "-o", "timeout=1", "--timeout=20", "-p", "no:xdist", grace=0.5)
    assert code == 0, out[-4000:]
    assert "still running" not in out


def test_a_passed_over_test_leaves_the_next_ones_setup_sound(tmp_path: Path) -> None:
    """A worker passing over a noted test tears down what the test before it set up (a
    module fixture of its directory): the next test, elsewhere, sets up cleanly."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "1").write_text("d1/test_one.py::test_b")
    (tmp_path / "conftest.py").write_text(
        "import pathlib\n"
        "import tests.helpers.watchdog as watchdog\n\n"
        "def pytest_sessionstart(session):\n"
        "    watchdog._worker = True  # as in an xdist worker given the run's notes\n"
        f"    watchdog._notes = pathlib.Path({str(notes)!r})\n"
    )
    for name in ("d1", "d2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "d1" / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture(scope='package', autouse=True)\n"
        "def shared():\n    yield\n"
    )
    (tmp_path / "d1" / "test_one.py").write_text(
        "def test_a():\n    pass\n\ndef test_b():\n    pass\n"
    )
    (tmp_path / "d2" / "test_two.py").write_text("def test_c():\n    pass\n")
    code, out = run_pytest(tmp_path, "-p", "no:xdist")
    assert code == 0, out[-4000:]
    assert "d2/test_two.py::test_c PASSED" in out, out[-4000:]
    assert re.search(r"=+ 2 passed in ", out), out[-4000:]  # test_b passed over, no error
