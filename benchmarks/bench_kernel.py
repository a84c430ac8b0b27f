"""Comparison 3: does a kernel stay responsive with 1,000 tasks in flight?

A real ipykernel whose default session points at a sandbox (in its own process) through the
environment, as a user's would (``NANOBANANA_BASE_URL``, ``NANOBANANA_API_KEY``,
``NANOBANANA_DATA_DIR``). The session is the default one, on the real clock with its default
policy and caps: this measures what a user's kernel goes through, not a compressed run.

1. Idle: the package is imported and the default session exists (its engine thread is up),
   nothing is in flight; the round trip of the trivial cell ``1`` is measured ``runs`` times.
2. Loaded: one cell starts ``n`` tasks with ``session.map`` (tasks last far longer than the
   measurement, so all stay in flight); then the same ``runs`` round trips, starting right
   after that cell returned, while the engine submits and polls in the background.
   Submits go out at the session's default submit cap (10 per second after a burst of 10),
   so during the runs the engine is sending submits and polling the tasks already sent;
   ``submitted_after_runs`` and ``queries_during_runs`` say how much of each it did.

Runs are spaced by a short pause so that they span a few seconds of that work.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Row, SandboxProcess, quantile, rounded
from ._kernel import running_kernel

TASKS = 1000
RUNS = 100
GAP = 0.02
"""Seconds between two measured cells (so 100 runs span a few seconds)."""


def run(*, quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    n, runs = (20, 5) if quick else (TASKS, RUNS)
    root = Path(workdir or tempfile.mkdtemp(prefix="nb-bench-kernel-"))
    try:
        with SandboxProcess(root / "sandbox", time_scale=1.0, duration=600.0, image_side=64) as sb:
            env = {
                "NANOBANANA_BASE_URL": sb.url,
                "NANOBANANA_ALLOW_LOCAL_URLS": "1",
                "NANOBANANA_API_KEY": sb.api_key,
                "NANOBANANA_DATA_DIR": str(root / "data"),
            }
            with running_kernel(root / "cwd", **env) as kernel:
                kernel.round_trip(
                    "import nanobanana_jupyter as nb\nsession = nb.get_default_session()"
                )
                for _ in range(10):  # warm-up: first cells pay for caches and lazy imports
                    kernel.round_trip("1")
                idle = _measure(kernel, runs)
                map_cell = kernel.round_trip(
                    f"tasks = session.map([f'kernel-{{i}}' for i in range({n})])", timeout=120
                )
                loaded = _measure(kernel, runs)
                submitted = int(kernel.value("sum(t.task_id is not None for t in tasks)"))
                finished = int(kernel.value("sum(t.done() for t in tasks)"))
            ledger = sb.ledger()
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    idle_p50, idle_p95 = quantile(idle, 0.5), quantile(idle, 0.95)
    load_p50, load_p95 = quantile(loaded, 0.5), quantile(loaded, 0.95)
    limit = 1.5 * idle_p95 + 0.010
    figures: dict[str, Any] = {
        "tasks": n,
        "runs": runs,
        "idle_p50_ms": rounded(idle_p50 * 1000, 2),
        "idle_p95_ms": rounded(idle_p95 * 1000, 2),
        "loaded_p50_ms": rounded(load_p50 * 1000, 2),
        "loaded_p95_ms": rounded(load_p95 * 1000, 2),
        "loaded_max_ms": rounded(max(loaded) * 1000, 2),
        "limit_ms": rounded(limit * 1000, 2),
        "map_cell_ms": rounded(map_cell * 1000, 1),
        "submitted_after_runs": submitted,
        "finished_after_runs": finished,
        "queries_during_runs": ledger["requests"].get("query", 0),
    }
    rows = [
        Row(
            "Kernel",
            f"trivial cell round trip p50 / p95, {n:,} tasks in flight vs idle",
            f"{figures['loaded_p50_ms']} / {figures['loaded_p95_ms']} ms",
            f"{figures['idle_p50_ms']} / {figures['idle_p95_ms']} ms idle",
            f"p95 <= 1.5x idle + 10 ms ({figures['limit_ms']} ms)",
            load_p95 <= limit,
        ),
        Row(
            "Kernel",
            f"cell that starts {n:,} tasks (session.map) returns in",
            f"{figures['map_cell_ms']} ms",
        ),
    ]
    figures["rows"] = [dataclasses.asdict(r) for r in rows]
    return figures


def _measure(kernel: Any, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        times.append(kernel.round_trip("1"))
        time.sleep(GAP)
    return times
