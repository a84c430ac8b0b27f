"""The `nanobanana` terminal command, end to end against the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_jupyter._cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NANOBANANA_DATA_DIR": str(data_dir)},
        check=False,
    )


def test_generate_prints_saved_paths_then_history_lists_them(tmp_path: Path) -> None:
    """generate shows progress on stderr, prints image paths on stdout; history lists the task."""
    out_dir = tmp_path / "pictures"
    result = run(
        [
            "--sandbox",
            "generate",
            "a banana lighthouse",
            "-a",
            "1:1",
            "-n",
            "2",
            "--out",
            str(out_dir),
        ],
        tmp_path / "data",
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2 and all(p.parent == out_dir and p.stat().st_size > 0 for p in paths)
    assert "2/2" in result.stderr and "credits" in result.stderr
    history = run(["--sandbox", "history"], tmp_path / "data")
    assert history.returncode == 0, history.stderr
    assert history.stdout.count("a banana lighthouse") == 2
    assert "2 tasks, 1 credits" in history.stderr


def test_bad_input_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """An invalid request fails with one readable line, no traceback."""
    result = run(["--sandbox", "generate", "   "], tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("nanobanana: the prompt is empty")
    assert "Traceback" not in result.stderr


def test_no_key_says_where_to_put_one(tmp_path: Path) -> None:
    """Without a key (and without --sandbox) the command explains the options."""
    result = run(["generate", "a cat"], tmp_path / "data")
    assert result.returncode == 2
    assert "NANOBANANA_API_KEY" in result.stderr and "Traceback" not in result.stderr
