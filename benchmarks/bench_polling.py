"""Comparison 1: the session's poll scheduler against fixed-interval pollers and webhooks.

One workload for every poller: ``n`` tasks whose durations are lognormal (median 15 s, 95th
percentile 45 s, nothing under 5 s, in API seconds), submitted at Poisson arrival times over
a window. Each poller gets a fresh sandbox (in its own process) and a fresh data directory.

The baselines are what peer clients do (research/peers.md section 4.1): one loop per task
that sleeps a fixed interval, queries, and stops at a terminal answer, then downloads the
image and writes it to a file. They use the library's own :class:`AsyncClient`, over the same
kind of connection pool as the session, so one request costs the same on both sides.

Clock. The sandbox runs on a compressed clock (``time_scale`` real seconds per API second)
and every poller's intervals and caps are scaled by the same factor, so that all figures are
in API seconds. Requests, however, take real time: a poller asking 1,000 times per API second
cannot be compressed on two cores. So each poller runs at its own scale, chosen so that its
expected peak request rate is a target number of real requests per second; delays are
then reported in API seconds (and relative to each task's duration), which makes them
comparable across runs. The webhook path is real time (a callback is one loopback POST,
whatever the clock), so its delay is also given in real milliseconds.

The target rate is calibrated on the machine that runs the benchmark: the CPU one query
request costs here (:func:`~benchmarks._common.cpu_per_request`), and a target that keeps the
client near :data:`CLIENT_SHARE` of one core (at most :data:`TARGET_RATE`). A fixed target
would let a slower machine's client fall behind its own schedule, and the benchmark would
then measure the machine, not the poller. On a machine so slow that the runs would take
longer than :data:`POLLING_BUDGET`, the target is raised until they fit, and the results say
so.

One session variant uses the same code with one thing changed, and is reported beside the
goals, not in them: the same tasks arriving in a 20 s burst (hundreds in flight at once:
the session's rate caps then decide). What the policy does with its cap lifted comes from the
fake-clock model (:mod:`benchmarks.polling_model`), which runs in seconds, not minutes.

Measures per poller: queries per task (the sandbox ledger), the detection delay (the client
receives a terminal answer, seen by :class:`~benchmarks._common.TimingTransport`, minus the
sandbox's ``completed_at``), that delay relative to the task's duration, and the delay until
the image is on disk (a done callback for the session; the end of the file write for the
baselines).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanobanana_jupyter import APIError, AsyncClient, PollPolicy, Session, Settings, TaskSnapshot
from nanobanana_jupyter._core.session import WEBHOOK_BACKUP_POLICY

from . import polling_model
from ._common import (
    Row,
    SandboxProcess,
    TimingTransport,
    cpu_per_request,
    interpolate,
    lognormal_durations,
    poisson_arrivals,
    quantile,
    rounded,
    session_default,
)

FIXED_INTERVALS = (0.5, 1.0, 2.0, 5.0)
"""Fixed poll intervals of peer clients (replicate 0.5 s, openai 1 s, common 2 s and 5 s)."""
TARGET_RATE = 450.0
"""The most real requests per second a run aims at, at its peak."""
CLIENT_SHARE = 0.45
"""Share of one core the client's requests may take at a run's peak, when calibrated: at
1 ms per request (the machine of the first committed results) this gives 450 requests/s,
where the figures were steady; far above it, latency grows and would be measured."""
CALIBRATION_REQUESTS = 1000
POLLING_BUDGET = 420.0
"""Real seconds the polling runs may take together, so that ``make bench`` stays well inside
15 minutes: on a machine slow enough that the calibrated target would take longer, the
target is raised until the runs fit (the client then runs hotter than CLIENT_SHARE, and
results.md says so)."""
MIN_SCALE, MAX_SCALE = 0.05, 1.0
"""Slower clocks than 1/20 would magnify the real cost of each request (and any noise
from other processes) into large API-time delays."""
SESSION_RATE: float = session_default("max_requests_per_second")
"""The session's default ``max_requests_per_second``, applied in API seconds."""
SUBMIT_RATE: float = session_default("max_submits_per_second")
"""The session's default ``max_submits_per_second``, applied in API seconds."""
SESSION_CONNECTIONS = 24
"""The connection pool the session's client would open (its default caps: 16 + 4 + 4)."""


@dataclasses.dataclass(frozen=True)
class Workload:
    """The tasks: durations and arrival times, in API seconds; prompt ``bench-<i>``."""

    durations: list[float]
    arrivals: list[float]
    window: float
    seed: int

    @property
    def n(self) -> int:
        return len(self.durations)

    def peak_in_flight(self) -> int:
        """The largest number of tasks running at once (arrival to completion)."""
        events = sorted(
            [(a, 1) for a in self.arrivals]
            + [(a + d, -1) for a, d in zip(self.arrivals, self.durations, strict=True)]
        )
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        return peak

    def span(self) -> float:
        """API seconds from the first arrival to the last completion."""
        return max(a + d for a, d in zip(self.arrivals, self.durations, strict=True))


def make_workload(n: int, window: float, seed: int) -> Workload:
    return Workload(
        durations=lognormal_durations(n, seed=seed),
        arrivals=poisson_arrivals(n, window, seed=seed + 1),
        window=window,
        seed=seed,
    )


@dataclasses.dataclass
class Run:
    """What one poller did: per-task timings on the monotonic clock, and the ledger."""

    name: str
    kind: str  # "fixed", "session", "webhook", or "diagnostic"/"burst" (session variants)
    scale: float
    interval: float | None
    task_ids: dict[int, str]
    terminal_at: dict[str, float]
    on_disk_at: dict[int, float]
    query_times: list[float]
    ledger: dict[str, Any]
    wall: float


def calibrated_target(client_ms_per_request: float) -> float:
    """Real requests per second that keep the client near :data:`CLIENT_SHARE` of a core."""
    return min(TARGET_RATE, CLIENT_SHARE * 1000 / max(client_ms_per_request, 1e-3))


def planned_seconds(
    workload: Workload, burst: Workload, intervals: Sequence[float], target: float
) -> float:
    """Real seconds the polling runs will take at ``target`` (sandbox start-ups aside)."""
    session = session_scale(workload, SESSION_RATE, MIN_SCALE, target)
    fixed = sum(fixed_scale(workload, interval, MIN_SCALE, target) for interval in intervals)
    return (fixed + session + MIN_SCALE) * workload.span() + session * burst.span()


def within_budget(
    workload: Workload,
    burst: Workload,
    intervals: Sequence[float],
    target: float,
    budget: float = POLLING_BUDGET,
) -> float:
    """The lowest target, from ``target`` up, whose runs fit in ``budget`` real seconds."""
    while planned_seconds(workload, burst, intervals, target) > budget and target < 1e5:
        target *= 1.05
    return target


def fixed_scale(workload: Workload, interval: float, floor: float, target: float) -> float:
    """A fixed poller's clock scale: at its peak, every task in flight polls each interval."""
    return choose_scale(workload.peak_in_flight() / interval, floor, target)


def session_scale(workload: Workload, rate: float, floor: float, target: float) -> float:
    """The session's clock scale: its peak demand is its cap, or one query per task."""
    return choose_scale(min(rate, workload.peak_in_flight() * 1.0), floor, target)


def choose_scale(
    demand_per_api_second: float, floor: float = MIN_SCALE, target: float = TARGET_RATE
) -> float:
    """The clock scale that puts a peak demand at about ``target`` real requests/s.

    A floor under :data:`MIN_SCALE` (quick mode) means "as fast as possible": the floor.
    """
    if floor < MIN_SCALE:
        return floor
    return min(MAX_SCALE, max(floor, demand_per_api_second / target))


def _settings(url: str, key: str, data_dir: Path) -> Settings:
    # Nothing from the environment or a .env file of whoever runs the benchmark.
    return Settings.resolve(
        api_key=key,
        base_url=url,
        data_dir=data_dir,
        environ={},
        dotenv=data_dir / "no.env",
        colab=lambda name: None,
        allow_local_urls=True,  # the sandbox's images come from 127.0.0.1
    )


def _deadline(workload: Workload, scale: float) -> float:
    """Real seconds a run may take before unfinished tasks count as lost."""
    return workload.span() * scale * 2 + 30.0


# -- baselines ------------------------------------------------------------------------------


async def _fixed_poller(
    workload: Workload, interval: float, scale: float, url: str, key: str, out: Path
) -> tuple[dict[int, str], dict[int, float], TimingTransport]:
    """One loop per task: submit at its arrival, sleep, query, repeat; then download."""
    transport = TimingTransport(max_connections=SESSION_CONNECTIONS)
    task_ids: dict[int, str] = {}
    on_disk: dict[int, float] = {}
    failures: list[APIError] = []
    sleep = interval * scale
    max_polls = math.ceil(_deadline(workload, scale) / sleep)
    out.mkdir(parents=True, exist_ok=True)
    async with AsyncClient(settings=_settings(url, key, out), transport=transport) as client:
        start = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + workload.arrivals[i] * scale - time.monotonic()))
            task_id = await client.submit(f"bench-{i}")
            task_ids[i] = task_id
            snapshot: TaskSnapshot | None = None
            for _ in range(max_polls):
                await asyncio.sleep(sleep)
                try:
                    snapshot = await client.query(task_id)
                except APIError as exc:  # a peer's loop would log it and try at the next tick
                    failures.append(exc)
                    continue
                if snapshot.status.value in ("success", "failed"):
                    break
            if snapshot is None or not snapshot.images:
                return
            data, _ = await client.download(snapshot.images[0])
            (out / f"{i}.png").write_bytes(data)
            on_disk[i] = time.monotonic()

        results = await asyncio.gather(*(one(i) for i in range(workload.n)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    return task_ids, on_disk, transport


def run_fixed(
    workload: Workload,
    interval: float,
    workdir: Path,
    *,
    min_scale: float = MIN_SCALE,
    target: float = TARGET_RATE,
) -> Run:
    scale = fixed_scale(workload, interval, min_scale, target)
    with SandboxProcess(
        workdir / "sandbox", time_scale=scale, durations=workload.durations, image_side=256
    ) as sandbox:
        started = time.monotonic()
        task_ids, on_disk, transport = asyncio.run(
            _fixed_poller(workload, interval, scale, sandbox.url, sandbox.api_key, workdir / "out")
        )
        wall = time.monotonic() - started
        ledger = sandbox.ledger()
    return Run(
        name=f"fixed {interval:g} s",
        kind="fixed",
        scale=scale,
        interval=interval,
        task_ids=task_ids,
        terminal_at=transport.terminal_at,
        on_disk_at=on_disk,
        query_times=transport.query_times,
        ledger=ledger,
        wall=wall,
    )


# -- the session ----------------------------------------------------------------------------


def run_session(
    workload: Workload,
    workdir: Path,
    *,
    webhook: bool = False,
    min_scale: float = MIN_SCALE,
    rate: float = SESSION_RATE,
    target: float = TARGET_RATE,
) -> Run:
    """The library as a user gets it, its policy and rate cap scaled to the API clock.

    ``rate`` is the session's cap in queries per API second; the default is the library's
    default.
    """
    # Webhook callbacks are real time and its requests few: it runs on the floor scale.
    scale = min_scale if webhook else session_scale(workload, rate, min_scale, target)
    base_policy = WEBHOOK_BACKUP_POLICY if webhook else PollPolicy()
    transport = TimingTransport(max_connections=SESSION_CONNECTIONS)
    on_disk_mono: dict[str, float] = {}
    with SandboxProcess(
        workdir / "sandbox", time_scale=scale, durations=workload.durations, image_side=256
    ) as sandbox:
        session = Session(
            settings=_settings(sandbox.url, sandbox.api_key, workdir / "data"),
            poll_policy=base_policy.scaled(scale),
            max_requests_per_second=rate / scale,
            max_submits_per_second=SUBMIT_RATE / scale,
            transport=transport,
            webhook=webhook,
        )
        try:
            started = time.monotonic()
            tasks = []
            for i, arrival in enumerate(workload.arrivals):
                time.sleep(max(0.0, started + arrival * scale - time.monotonic()))
                task = session.generate(f"bench-{i}")
                task.add_done_callback(
                    lambda t: on_disk_mono.__setitem__(t.local_id, time.monotonic())
                )
                tasks.append(task)
            end = started + _deadline(workload, scale)
            for task in tasks:
                try:
                    task.wait(max(0.0, end - time.monotonic()))
                except TimeoutError:
                    break
            wall = time.monotonic() - started
            ledger = sandbox.ledger()
            task_ids = {i: t.task_id for i, t in enumerate(tasks) if t.task_id is not None}
            on_disk = {
                i: on_disk_mono[t.local_id]
                for i, t in enumerate(tasks)
                if t.local_id in on_disk_mono and t.status.value == "success"
            }
        finally:
            session.close()
    return Run(
        name="session + webhook" if webhook else "session (adaptive)",
        kind="webhook" if webhook else "session",
        scale=scale,
        interval=None,
        task_ids=task_ids,
        terminal_at=transport.terminal_at,
        on_disk_at=on_disk,
        query_times=transport.query_times,
        ledger=ledger,
        wall=wall,
    )


# -- measures -------------------------------------------------------------------------------


def measure(run: Run, workload: Workload) -> dict[str, Any]:
    """Per-poller figures: requests, detection delays (API s and relative), time to disk."""
    completed: dict[str, float] = run.ledger["completed_at"]
    detect: list[float] = []
    detect_real: list[float] = []
    relative: list[float] = []
    disk: list[float] = []
    store_real: list[float] = []
    lost = 0
    for i in range(workload.n):
        task_id = run.task_ids.get(i)
        done = completed.get(task_id) if task_id else None
        known = run.terminal_at.get(task_id) if task_id else None
        if done is None or known is None:
            lost += 1
            continue
        delay = max(0.0, known - done)
        detect_real.append(delay)
        detect.append(delay / run.scale)
        relative.append(delay / run.scale / workload.durations[i])
        if i in run.on_disk_at:
            disk.append(max(0.0, run.on_disk_at[i] - done) / run.scale)
            store_real.append(max(0.0, run.on_disk_at[i] - known))
    queries = sum(run.ledger["queries"].values())
    submits = run.ledger["requests"].get("submit", 0)
    n = max(1, len(run.task_ids))
    return {
        "poller": run.name,
        "kind": run.kind,
        "interval_s": run.interval,
        "time_scale": round(run.scale, 4),
        "tasks": workload.n,
        "finished": workload.n - lost,
        "lost": lost,
        "queries_per_task": rounded(queries / n),
        "requests_per_task": rounded((queries + submits) / n),
        "detect_p50_s": rounded(quantile(detect, 0.5)),
        "detect_p95_s": rounded(quantile(detect, 0.95)),
        "detect_p95_real_ms": rounded(quantile(detect_real, 0.95) * 1000, 1),
        "detect_p50_real_ms": rounded(quantile(detect_real, 0.5) * 1000, 1),
        "relative_p50": rounded(quantile(relative, 0.5), 4),
        "relative_p95": rounded(quantile(relative, 0.95), 4),
        "share_under_10pct": rounded(
            sum(1 for r in relative if r < 0.10) / max(1, len(relative)), 4
        ),
        "disk_p50_s": rounded(quantile(disk, 0.5)),
        "disk_p95_s": rounded(quantile(disk, 0.95)),
        "store_p50_real_ms": rounded(quantile(store_real, 0.5) * 1000, 1),
        "store_p95_real_ms": rounded(quantile(store_real, 0.95) * 1000, 1),
        "peak_query_rate_api": rounded(_peak_rate(run.query_times, run.scale), 1),
        "callbacks_ok": run.ledger.get("callbacks_ok", 0),
        "wall_s": round(run.wall, 1),
    }


def _peak_rate(times: list[float], scale: float, window_api: float = 5.0) -> float:
    """The highest query rate over any ``window_api`` API seconds, in queries per API second."""
    if not times:
        return 0.0
    ordered = sorted(times)
    window = window_api * scale
    best = lo = 0
    for hi, stamp in enumerate(ordered):
        while ordered[lo] < stamp - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window_api


# -- the comparison -------------------------------------------------------------------------


def calibrate(workdir: Path, *, quick: bool = False) -> dict[str, float]:
    """Measure this machine's CPU per query request and the target rate it allows."""
    if quick:  # every quick run is on the floor scale: no target needed
        return {"client_ms_per_request": 0.0, "target_rate": TARGET_RATE}
    with SandboxProcess(workdir, time_scale=1.0, duration=600.0, image_side=64) as sandbox:
        cost = cpu_per_request(sandbox.url, sandbox.api_key, CALIBRATION_REQUESTS)
    ms = cost["client_ms_per_request"]
    return {"client_ms_per_request": round(ms, 3), "target_rate": round(calibrated_target(ms), 1)}


def run(*, quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Run every poller on one workload; return figures, summary rows and a detail table."""
    if quick:  # structure only: a few tasks, every run on the floor scale, no burst run
        workload = make_workload(6, 3.0, seed=6)
        intervals: tuple[float, ...] = (1.0, 5.0)
        floor = 0.01
    else:
        workload = make_workload(500, 300.0, seed=6)
        intervals = FIXED_INTERVALS
        floor = MIN_SCALE
    root = Path(workdir or tempfile.mkdtemp(prefix="nb-bench-polling-"))
    try:
        calibration = calibrate(root / "calibration", quick=quick)
        burst = make_workload(workload.n, 20.0, seed=6)
        target = calibration["target_rate"]
        if not quick:
            target = within_budget(workload, burst, intervals, target)
            calibration["budget_s"] = POLLING_BUDGET
            calibration["run_target_rate"] = round(target, 1)
            calibration["planned_s"] = round(planned_seconds(workload, burst, intervals, target), 1)
        runs = [
            run_fixed(
                workload, interval, root / f"fixed-{interval:g}", min_scale=floor, target=target
            )
            for interval in intervals
        ]
        runs.append(run_session(workload, root / "session", min_scale=floor, target=target))
        runs.append(run_session(workload, root / "webhook", webhook=True, min_scale=floor))
        if not quick:
            burst_run = run_session(burst, root / "session-burst", min_scale=floor, target=target)
            burst_run.name = f"session, burst ({burst.window:g} s window)"
            burst_run.kind = "burst"
            runs.append(burst_run)
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    figures = [measure(r, burst if r.kind == "burst" else workload) for r in runs]
    sweep = {"delays": (1.0,), "weights": (0.0, 20.0)} if quick else {}
    model = polling_model.analyse(workload.durations, workload.arrivals, **sweep)
    # Issue 18: one session.map of 1,000 tasks behind the poll cap, on the fake clock.
    many = 60 if quick else polling_model.IN_FLIGHT_TASKS
    capped = {"delays": (1.0,), "weights": (20.0,)} if quick else {}
    in_flight = polling_model.in_flight(lognormal_durations(many, seed=6), **capped)
    table_rows = (
        summary_rows(figures) + polling_model.rows(model) + polling_model.in_flight_rows(in_flight)
    )
    return {
        "calibration": calibration,
        "workload": describe_workload(workload),
        "burst_workload": describe_workload(burst),
        "pollers": figures,
        "model": model,
        "in_flight": in_flight,
        "rows": [dataclasses.asdict(r) for r in table_rows],
    }


def describe_workload(workload: Workload) -> dict[str, Any]:
    d = workload.durations
    return {
        "tasks": workload.n,
        "arrivals": f"Poisson over {workload.window:g} API s",
        "seed": workload.seed,
        "duration_p50_s": rounded(quantile(d, 0.5), 1),
        "duration_p95_s": rounded(quantile(d, 0.95), 1),
        "duration_min_s": rounded(min(d), 1),
        "duration_max_s": rounded(max(d), 1),
        "peak_in_flight": workload.peak_in_flight(),
    }


def summary_rows(figures: list[dict[str, Any]]) -> list[Row]:
    """The goals of issue 6 for polling, each with its figure and verdict."""
    fixed = [f for f in figures if f["kind"] == "fixed"]
    session = next(f for f in figures if f["kind"] == "session")
    webhook = next(f for f in figures if f["kind"] == "webhook")
    rows: list[Row] = []
    points = [
        (f["detect_p95_s"], f["queries_per_task"])
        for f in fixed
        if f["detect_p95_s"] is not None and f["queries_per_task"] is not None
    ]
    if len(points) >= 2 and session["detect_p95_s"] is not None:
        equivalent, inside = interpolate(session["detect_p95_s"], points)
        ratio = equivalent / session["queries_per_task"] if session["queries_per_task"] else 0.0
        note = "" if inside else " (extrapolated)"
        queries, p95 = session["queries_per_task"], session["detect_p95_s"]
        rows.append(
            Row(
                "Polling",
                "queries/task vs fixed poller with the same p95 detection delay",
                f"{queries:.2f} (p95 delay {p95:.2f} API s)",
                f"{equivalent:.2f}{note}",
                ">= 1.5x fewer",
                ratio >= 1.5,
            )
        )
        rows[-1].project += f"; {ratio:.2f}x fewer"
    rows.append(
        Row(
            "Polling",
            "tasks detected within 10% of their own duration",
            f"{100 * (session['share_under_10pct'] or 0):.1f}%",
            ", ".join(f"{f['poller']}: {100 * (f['share_under_10pct'] or 0):.0f}%" for f in fixed),
            ">= 95%",
            (session["share_under_10pct"] or 0) >= 0.95,
        )
    )
    rows.append(
        Row(
            "Polling",
            "p50 / p95 delay until the image is on disk (API s)",
            f"{session['disk_p50_s']} / {session['disk_p95_s']}",
            ", ".join(f"{f['poller']}: {f['disk_p50_s']} / {f['disk_p95_s']}" for f in fixed),
        )
    )
    for variant in (f for f in figures if f["kind"] == "burst"):
        rows.append(
            Row(
                "Polling",
                f"{variant['poller']}: queries/task, p95 delay (API s), within 10%",
                f"{variant['queries_per_task']}, {variant['detect_p95_s']}, "
                f"{100 * (variant['share_under_10pct'] or 0):.1f}%",
                f"default session: {session['queries_per_task']}, {session['detect_p95_s']}, "
                f"{100 * (session['share_under_10pct'] or 0):.1f}%",
            )
        )
    rows.append(
        Row(
            "Polling (webhook)",
            "requests per task (submit + queries)",
            f"{webhook['requests_per_task']}",
            "",
            "<= 2.2",
            webhook["requests_per_task"] is not None and webhook["requests_per_task"] <= 2.2,
        )
    )
    rows.append(
        Row(
            "Polling (webhook)",
            "p95 detection delay (real ms; callbacks run in real time)",
            f"{webhook['detect_p95_real_ms']} ms",
            "",
            "< 150 ms",
            webhook["detect_p95_real_ms"] is not None and webhook["detect_p95_real_ms"] < 150,
        )
    )
    return rows


def detail_table(result: dict[str, Any]) -> str:
    """A markdown table with every poller's figures (for results.md)."""
    head = (
        "| poller | clock scale | queries/task | requests/task | detect p50 / p95 (API s) "
        "| relative p50 / p95 | < 10% of duration | on disk p50 / p95 (API s) "
        "| peak queries per API s | lost |"
    )
    lines = [head, "|" + "---|" * 10]
    for f in result["pollers"]:
        lines.append(
            f"| {f['poller']} | {f['time_scale']} | {f['queries_per_task']} "
            f"| {f['requests_per_task']} | {f['detect_p50_s']} / {f['detect_p95_s']} "
            f"| {_pct(f['relative_p50'])} / {_pct(f['relative_p95'])} "
            f"| {_pct(f['share_under_10pct'])} | {f['disk_p50_s']} / {f['disk_p95_s']} "
            f"| {f['peak_query_rate_api']} | {f['lost']} |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
