"""Comparison 2: 10,000 tasks through one session with its default caps.

Three processes: this one (the driver), the sandbox (:mod:`benchmarks._sandbox_server`) and
a client worker (this module with ``--worker``) that holds the one session. The worker is a
fresh interpreter so that its CPU time (``getrusage(RUSAGE_SELF)`` covers every thread, the
engine's included) and its peak memory (``ru_maxrss``) are the client's alone.

The sandbox has a fixed ``capacity`` of tasks running at once and runs a compressed clock;
the session's policy is scaled by the same factor, and so is its one time-based cap (the
default 20 requests per second becomes 20 per API second). The caps that count things (16
queries in flight, 4 submits in flight) stay as they are. Task durations follow the polling
workload's distribution. The ideal time to finish is the sandbox's own schedule for those
durations on ``capacity`` slots: what a client that learned of every result instantly would
see.

Figures: time to finish against the ideal, client CPU milliseconds per task, peak memory,
tasks lost (not ending in ``success``, or never submitted) and duplicate charges (the ledger's
``double_charges()`` and ``duplicate_submits()``, and charged tasks against distinct local
submissions).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ._common import (
    ROOT,
    Row,
    SandboxProcess,
    child_env,
    cpu_per_request,
    lognormal_durations,
    rounded,
    sandbox_makespan,
    session_default,
)

TASKS = 10_000
CAPACITY = 100
TIME_SCALE = 0.05
IMAGE_SIDE = 256
DEFAULT_RATE: float = session_default("max_requests_per_second")
"""The session's default ``max_requests_per_second`` (applied per API second here)."""
SUBMIT_RATE: float = session_default("max_submits_per_second")
"""The session's default ``max_submits_per_second`` (applied per API second here)."""


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` from ``/proc/self/status`` where it exists: ``ru_maxrss`` survives ``exec`` on
    Linux, so in a child started by a large parent it reports the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(config: dict[str, Any]) -> dict[str, Any]:
    """The client process: one session, ``n`` tasks through ``Session.map``, then figures."""
    from nanobanana_jupyter import PollPolicy, Session, Settings

    scale = float(config["scale"])
    data_dir = Path(config["data_dir"])
    settings = Settings.resolve(
        api_key=config["api_key"],
        base_url=config["url"],
        data_dir=data_dir,
        environ={},
        dotenv=data_dir / "no.env",
        colab=lambda name: None,
        allow_local_urls=True,  # the sandbox's images come from 127.0.0.1
    )
    session = Session(
        settings=settings,
        poll_policy=PollPolicy().scaled(scale),
        max_requests_per_second=DEFAULT_RATE / scale,
        max_submits_per_second=SUBMIT_RATE / scale,
    )
    rss_before = _peak_rss_mb()
    done_at: list[float] = []
    prompts = [f"bench-{i}" for i in range(int(config["n"]))]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    tasks = session.map(prompts)
    map_returned = time.monotonic() - started
    for task in tasks:
        task.add_done_callback(lambda t: done_at.append(time.monotonic()))
    deadline = started + float(config["deadline"])
    for task in tasks:
        try:
            task.wait(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
    finished = time.monotonic()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    statuses = Counter(task.status.value for task in tasks)
    stats = session.stats()
    session.close()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {
        "tasks": len(tasks),
        "statuses": dict(statuses),
        "submitted": sum(1 for t in tasks if t.task_id is not None),
        "local_ids": len({t.local_id for t in tasks}),
        "map_returned_s": map_returned,
        "last_done_s": (max(done_at) - started) if done_at else None,
        "waited_s": finished - started,
        "cpu_s": cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_import_mb": rss_before,
        "queries": stats["queries"],
    }


FLOOR_REQUESTS = 3000


def _floor(config: dict[str, Any]) -> dict[str, Any]:
    """CPU per query request, bare httpx and the library's client (a fresh interpreter)."""
    return cpu_per_request(config["url"], config["api_key"], int(config["n"]))


def _child(mode: str, config: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    """Run this module's ``mode`` (``--worker``/``--floor``) in a fresh interpreter."""
    config_path = root / f"{mode.strip('-')}.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(  # noqa: S603 - our own module, with our interpreter
        [sys.executable, "-m", "benchmarks.bench_scale", mode, str(config_path)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the scale {mode} process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(*, quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Run the scale benchmark; return its figures and summary rows."""
    n, capacity, scale = (30, 10, 0.01) if quick else (TASKS, CAPACITY, TIME_SCALE)
    durations = lognormal_durations(n, seed=16)
    ideal_api = sandbox_makespan(durations, capacity)
    root = Path(workdir or tempfile.mkdtemp(prefix="nb-bench-scale-"))
    try:
        with SandboxProcess(
            root / "sandbox",
            time_scale=scale,
            durations=durations,
            capacity=capacity,
            image_side=IMAGE_SIDE,
            url_ttl=1e9,
        ) as sandbox:
            deadline = ideal_api * scale * 4 + 60
            config: dict[str, Any] = {
                "url": sandbox.url,
                "api_key": sandbox.api_key,
                "data_dir": str(root / "data"),
                "n": n,
                "scale": scale,
                "deadline": deadline,
            }
            worker = _child("--worker", config, root, deadline + 120)
            ledger = sandbox.ledger()
            floor = _child(
                "--floor",
                {**config, "n": 200 if quick else FLOOR_REQUESTS},
                root,
                120,
            )
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return summarize(
        worker, ledger, floor, n=n, capacity=capacity, scale=scale, ideal_api=ideal_api
    )


def summarize(
    worker: dict[str, Any],
    ledger: dict[str, Any],
    floor: dict[str, Any],
    *,
    n: int,
    capacity: int,
    scale: float,
    ideal_api: float,
) -> dict[str, Any]:
    succeeded = worker["statuses"].get("success", 0)
    lost = n - succeeded
    never_submitted = n - worker["submitted"]
    duplicates = len(ledger["double_charges"]) + len(ledger["duplicate_submits"])
    extra_charges = max(0, ledger["charges"] - worker["local_ids"])
    finish_api = (worker["last_done_s"] or worker["waited_s"]) / scale
    cpu_ms = worker["cpu_s"] * 1000 / n
    figures = {
        "tasks": n,
        "capacity": capacity,
        "time_scale": scale,
        "ideal_api_s": rounded(ideal_api, 1),
        "finish_api_s": rounded(finish_api, 1),
        "finish_over_ideal": rounded(finish_api / ideal_api, 3),
        "map_returned_real_s": rounded(worker["map_returned_s"], 2),
        "cpu_s": rounded(worker["cpu_s"], 2),
        "cpu_ms_per_task": rounded(cpu_ms, 3),
        "peak_rss_mb": rounded(worker["peak_rss_mb"], 1),
        "rss_after_import_mb": rounded(worker["rss_after_import_mb"], 1),
        "statuses": worker["statuses"],
        "lost": lost,
        "never_submitted": never_submitted,
        "duplicates": duplicates,
        "charged_tasks": ledger["charges"],
        "extra_charges": extra_charges,
        "queries_per_task": rounded(ledger["requests"].get("query", 0) / n, 2),
        "requests": ledger["requests"],
    }
    requests = sum(ledger["requests"].values()) / n
    figures["requests_per_task"] = rounded(requests, 2)
    figures["httpx_ms_per_request"] = rounded(floor["httpx_ms_per_request"], 3)
    figures["client_ms_per_request"] = rounded(floor["client_ms_per_request"], 3)
    httpx_floor = floor["httpx_ms_per_request"] * requests
    figures["httpx_floor_ms_per_task"] = rounded(httpx_floor, 2)
    busy = worker["cpu_s"] / max(1e-9, worker["waited_s"])
    figures["client_cpu_busy"] = rounded(busy, 3)
    bound = "; the client was CPU-bound, so this measures its CPU" if busy > 0.8 else ""
    rows = [
        Row(
            "Scale",
            f"time to finish {n:,} tasks vs ideal for capacity {capacity} (API s)",
            f"{figures['finish_api_s']} ({figures['finish_over_ideal']}x ideal)",
            f"{figures['ideal_api_s']} (client CPU busy {100 * busy:.0f}% of the run{bound})",
        ),
        Row(
            "Scale",
            f"`session.map` of {n:,} prompts blocks the caller for",
            f"{figures['map_returned_real_s']} s (real)",
        ),
        Row("Scale", "tasks lost", f"{lost}", "", "0", lost == 0),
        Row(
            "Scale",
            "duplicate submits/charges",
            f"{duplicates} (charged {ledger['charges']} for {worker['local_ids']} submissions)",
            "",
            "0",
            duplicates == 0 and extra_charges == 0,
        ),
        Row(
            "Scale",
            "client CPU per task",
            f"{cpu_ms:.2f} ms ({figures['queries_per_task']} queries/task)",
            "",
            "<= 3 ms",
            cpu_ms <= 3.0,
        ),
        Row(
            "Scale",
            "CPU per query request, same sandbox: bare httpx / the library's client "
            "(floor per task: bare httpx x requests per task)",
            f"{figures['httpx_ms_per_request']} / {figures['client_ms_per_request']} ms",
            f"{httpx_floor:.2f} ms/task at {figures['requests_per_task']} requests/task",
        ),
        Row(
            "Scale",
            "client peak memory (RSS)",
            f"{figures['peak_rss_mb']} MB (after imports: {figures['rss_after_import_mb']} MB)",
            "",
            "<= 300 MB",
            figures["peak_rss_mb"] is not None and figures["peak_rss_mb"] <= 300,
        ),
    ]
    figures["rows"] = [dataclasses.asdict(r) for r in rows]
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--worker", "--floor"):
        job = _worker if sys.argv[1] == "--worker" else _floor
        print(json.dumps(job(json.loads(Path(sys.argv[2]).read_text()))), flush=True)
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
