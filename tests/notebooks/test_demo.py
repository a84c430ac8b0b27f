"""`make demo`'s script end to end: it executes the quickstart against its own sandbox,
writes the notebook and its HTML copy, and its output is only its own summary (the kernel it
starts is reached over local sockets, so ipykernel has no "TCP without encryption" warning
to print in the middle of it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_and_prints_only_its_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_demo.py"), "--out", str(out),
         "--time-scale", "0.05"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert (out / "quickstart.ipynb").is_file()
    assert "<img" in (out / "quickstart.html").read_text(encoding="utf-8")
    assert "TCP without encryption" not in output
    assert "WARNING" not in output, output
    lines = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert lines[0] == "sandbox"
    assert done.stdout.splitlines()[1].startswith("executed in ")
    assert {"notebook", "html", "images", "first"} <= set(lines)
