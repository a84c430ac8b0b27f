"""Comparison 5: what loading the package costs, and what one preview costs.

* ``python -c "import nanobanana_jupyter"`` against ``python -c "pass"``: fresh interpreters,
  alternated, the median of each (the difference is what a script or a kernel pays);
  ``-X importtime`` names the heaviest imports.
* ``%load_ext nanobanana_jupyter`` in a fresh kernel against a bare cell (``pass``) in the same
  kernel: the round trip of the first load, minus the median bare round trip; one sample per
  fresh kernel, the median over kernels.
* one preview of a 1024x1024 photo-like PNG with
  :func:`nanobanana_jupyter._store.decoding.make_preview`
  at the image store's thumbnail settings (long side 512, JPEG quality 85): the median.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Row, child_env, median, rounded
from ._images import photo_like_png
from ._kernel import running_kernel

GOAL_IMPORT_S = 0.100


def _interpreter_time(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], env=env, check=True, timeout=60, capture_output=True
    )
    return time.perf_counter() - started


def interpreter(runs: int) -> dict[str, Any]:
    env = child_env()
    bare: list[float] = []
    loaded: list[float] = []
    _interpreter_time("import nanobanana_jupyter", env)  # warm the file cache and .pyc files
    for _ in range(runs):
        bare.append(_interpreter_time("pass", env))
        loaded.append(_interpreter_time("import nanobanana_jupyter", env))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import nanobanana_jupyter"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return {
        "bare_ms": rounded(median(bare) * 1000, 1),
        "import_ms": rounded(median(loaded) * 1000, 1),
        "added_ms": rounded((median(loaded) - median(bare)) * 1000, 1),
        "heaviest": _heaviest(proc.stderr),
    }


def _heaviest(importtime: str, top: int = 5) -> list[dict[str, Any]]:
    """The top-level packages (and our own modules) with the largest cumulative import time."""
    rows: list[dict[str, Any]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue  # the header line
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        name = name.strip()
        if depth == 1 or name.startswith("nanobanana_jupyter"):
            rows.append({"module": name, "cumulative_ms": round(cumulative / 1000, 1)})
    rows.sort(key=lambda r: float(r["cumulative_ms"]), reverse=True)
    return rows[:top]


def kernel_load(kernels: int, root: Path) -> dict[str, Any]:
    added: list[float] = []
    bare_all: list[float] = []
    for i in range(kernels):
        with running_kernel(root / f"kernel-{i}") as kernel:
            for _ in range(3):
                kernel.round_trip("pass")
            bare = median([kernel.round_trip("pass") for _ in range(5)])
            load = kernel.round_trip("%load_ext nanobanana_jupyter")
        bare_all.append(bare)
        added.append(load - bare)
    return {
        "kernels": kernels,
        "bare_cell_ms": rounded(median(bare_all) * 1000, 1),
        "load_ext_added_ms": rounded(median(added) * 1000, 1),
    }


def preview(runs: int) -> dict[str, Any]:
    from nanobanana_jupyter._store.decoding import make_preview

    png = photo_like_png(1024, seed=3)
    make_preview(png, side=512, quality=85)  # first call pays for Pillow's plugin imports
    times = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        data, _ = make_preview(png, side=512, quality=85)
        times.append(time.perf_counter() - started)
        size = len(data)
    return {"preview_ms": rounded(median(times) * 1000, 1), "preview_bytes": size}


def run(*, quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    runs, kernels, previews = (2, 1, 2) if quick else (15, 3, 10)
    root = Path(workdir or tempfile.mkdtemp(prefix="nb-bench-import-"))
    try:
        figures: dict[str, Any] = {
            "interpreter": interpreter(runs),
            "kernel": kernel_load(kernels, root),
            "preview": preview(previews),
        }
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    interp, kern, prev = figures["interpreter"], figures["kernel"], figures["preview"]
    heavy = ", ".join(f"{h['module']} {h['cumulative_ms']} ms" for h in interp["heaviest"][:3])
    rows = [
        Row(
            "Import",
            "`import nanobanana_jupyter` adds to a bare interpreter",
            f"{interp['added_ms']} ms",
            f"bare {interp['bare_ms']} ms; heaviest: {heavy}",
            "<= 100 ms",
            interp["added_ms"] is not None and interp["added_ms"] <= GOAL_IMPORT_S * 1000,
        ),
        Row(
            "Import",
            "`%load_ext nanobanana_jupyter` adds to a bare kernel cell",
            f"{kern['load_ext_added_ms']} ms",
            f"bare cell {kern['bare_cell_ms']} ms",
        ),
        Row(
            "Import",
            "one preview of a 1024x1024 photo-like image (512 px JPEG)",
            f"{prev['preview_ms']} ms ({prev['preview_bytes'] / 1024:.0f} KB)",
        ),
    ]
    figures["rows"] = [dataclasses.asdict(r) for r in rows]
    return figures
