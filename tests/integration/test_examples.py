"""The plain-script example runs as documented (no Jupyter, no key: the sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_script_generates_waits_and_lists_history_as_a_dataframe(tmp_path: Path) -> None:
    """examples/script_quickstart.py generates, waits, saves images and prints the DataFrame."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "script_quickstart.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "done: success" in out
    image_lines = [line for line in out.splitlines() if line.startswith("image: ")]
    assert image_lines
    path = Path(image_lines[0].split()[1])
    assert path.is_file() and path.stat().st_size > 0
    assert out.count("success") >= 5  # the DataFrame lists the 4 tasks, plus the first line
    assert "total cost: 2 credits" in out
