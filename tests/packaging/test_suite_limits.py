"""The suite's own limits: a test that hangs, even in its teardown, ends with its stacks shown
and the rest of the run goes on (CI once sat at 99 % until its 90-minute limit, silent).

Runs pytest on a two-test file in a child process, in this project's configuration
(``-c pyproject.toml``) with a 3-second limit and two xdist workers, the way ``make test``
runs the suite.
"""

from __future__ import annotations

import os
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


@pytest.mark.slow
def test_a_hanging_test_is_shown_failed_once_and_the_run_ends(tmp_path: Path) -> None:
    """Two hung tests (one in its teardown, one swallowing the timeout's raise) each end
    their worker with the stacks shown; neither runs twice; every other test still runs."""
    (tmp_path / "test_hangs.py").write_text(HANGS)
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TESTS_HANG_GRACE_S": "2"}
    env.pop("TESTS_HUNG_DIR", None)  # this run's own notes, not the outer suite's
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
            "-o",
            "timeout=2",
            "-n",
            "2",
            "--dist",
            "loadfile",
            "-v",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=100,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    for hung in ("test_hangs_in_its_teardown", "test_in_a_loop_with_signals_swallowed"):
        assert f"test_hangs.py::{hung} still running" in out, out[-4000:]
        assert out.count(f"crashed while running 'test_hangs.py::{hung}'") == 1, out[-4000:]
    assert "threading.Event().wait()" in out  # the stuck line, in the stacks shown
    assert "PASSED test_hangs.py::test_after_it_in_the_same_file" in out, out[-4000:]
    assert "PASSED test_fine.py::test_fine" in out, out[-4000:]
    assert "maximum crashed workers" not in out
