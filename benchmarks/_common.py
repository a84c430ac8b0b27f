"""What every benchmark shares: workloads, statistics, the sandbox process and timing hooks.

Nothing here changes how the library behaves. The one hook into the client is
:class:`TimingTransport`, an httpx transport (the client's only test seam) that notes the
moment a query answer saying "terminal" reaches the client, for the session and the
baselines alike, so both are timed at the same place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import json
import math
import os
import platform
import queue
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUERY_PATH = "/api/task/query"
TERMINAL = frozenset({"success", "failed"})


# -- workloads ------------------------------------------------------------------------------


def session_default(name: str) -> Any:
    """The default of one of :class:`~nanobanana_jupyter.Session`'s caps, read from its
    signature so that the benchmarks always run what a user gets."""
    from nanobanana_jupyter import Session

    return inspect.signature(Session).parameters[name].default


FLOOR_CONCURRENCY = 16
"""Requests in flight at once while measuring CPU per request."""


def cpu_per_request(url: str, api_key: str, n: int) -> dict[str, float]:
    """This process's CPU per query request, in ms: bare httpx, and the library's client.

    Against a running sandbox, one known task id, :data:`FLOOR_CONCURRENCY` requests at a
    time over one connection pool: the least a client built on httpx spends per request on
    this machine (the scale benchmark's floor, and what the polling benchmark's clock scales
    are calibrated with).
    """
    from nanobanana_jupyter import AsyncClient

    async def timed(make_one: Any) -> float:
        left = n

        async def lane() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await make_one()

        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(lane() for _ in range(FLOOR_CONCURRENCY)))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        return cpu * 1000 / n

    async def main() -> dict[str, float]:
        async with AsyncClient(api_key, base_url=url) as client:
            task_id = await client.submit("bench-floor")
            await client.query(task_id)
            library = await timed(lambda: client.query(task_id))
        headers = {"Authorization": f"Bearer {api_key}"}
        query_url = url.rstrip("/") + "/api/task/query"
        async with httpx.AsyncClient(headers=headers) as http:

            async def bare() -> None:
                response = await http.get(query_url, params={"task_id": task_id})
                response.json()

            await bare()
            plain = await timed(bare)
        return {"httpx_ms_per_request": plain, "client_ms_per_request": library}

    return asyncio.run(main())


def lognormal_durations(
    n: int,
    *,
    seed: int,
    median: float = 15.0,
    p95: float = 45.0,
    floor: float = 5.0,
) -> list[float]:
    """``n`` task durations (API seconds): lognormal with this median and 95th percentile.

    Values under ``floor`` are drawn again (truncation, not clipping, so that no pile of
    tasks sits exactly at the floor). Deterministic for a seed.
    """
    rng = random.Random(seed)
    mu = math.log(median)
    sigma = math.log(p95 / median) / 1.645
    out: list[float] = []
    for _ in range(n):
        value = floor
        for _attempt in range(1000):  # P(value < floor) is about 5 %: this never runs out
            value = rng.lognormvariate(mu, sigma)
            if value >= floor:
                break
        out.append(max(value, floor))
    return out


def poisson_arrivals(n: int, window: float, *, seed: int) -> list[float]:
    """Arrival times of ``n`` tasks of a Poisson process over ``[0, window]`` (sorted).

    Given the count, the arrival times of a Poisson process are uniform order statistics.
    """
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, window) for _ in range(n)) if window > 0 else [0.0] * n


def sandbox_makespan(durations: Sequence[float], capacity: int | None) -> float:
    """When the last task ends if all are submitted at t=0 in this order (API seconds).

    The sandbox's own rule: a task spends 15 % of its duration pending and queued, then runs
    the other 85 % on one of ``capacity`` slots, first come first served. This is the ideal
    a client could reach: it knows every result the instant it exists.
    """
    import heapq

    if capacity is None:
        return max(durations, default=0.0)
    slots: list[float] = []
    end = 0.0
    for d in durations:
        eligible = 0.15 * d
        start = eligible if len(slots) < capacity else max(eligible, heapq.heappop(slots))
        finish = start + 0.85 * d
        heapq.heappush(slots, finish)
        end = max(end, finish)
    return end


# -- statistics -----------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def interpolate(x: float, points: Sequence[tuple[float, float]]) -> tuple[float, bool]:
    """``y`` at ``x`` on the polyline through ``points``, and whether ``x`` lies within their
    x range (outside it, the nearest segment is extended)."""
    pts = sorted(points)
    if len(pts) < 2:
        raise ValueError("need two points to interpolate")
    inside = pts[0][0] <= x <= pts[-1][0]
    segment = pts[-2:]
    for left, right in itertools.pairwise(pts):
        if x <= right[0]:
            segment = [left, right]
            break
    (x0, y0), (x1, y1) = segment
    if x1 == x0:
        return y0, inside
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0), inside


def rounded(value: float, digits: int = 3) -> float | None:
    """A float fit for JSON: rounded, and ``None`` instead of NaN or infinity."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


# -- subprocesses ---------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this repository importable, no user settings.

    ``NANOBANANA_*``/``DEFAPI_*`` variables of the person running the benchmark would point a
    child at a real key or directory; they are dropped and only ``extra`` is set.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOBANANA_", "DEFAPI_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class SandboxProcess:
    """The sandbox in a child process (see :mod:`benchmarks._sandbox_server`).

    Use as a context manager; ``url``/``api_key`` are known inside it, and :meth:`ledger`
    returns the ledger's summary at that moment.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        time_scale: float,
        durations: Sequence[float] | None = None,
        duration: float | None = None,
        capacity: int | None = None,
        image_side: int | None = None,
        max_side: int = 1024,
        url_ttl: float = 1e6,
        accept_any_key: bool = False,
    ) -> None:
        self._dir = workdir
        self._config: dict[str, Any] = {
            "time_scale": time_scale,
            "capacity": capacity,
            "image_side": image_side,
            "max_side": max_side,
            "url_ttl": url_ttl,
            "duration": duration,
            "accept_any_key": accept_any_key,
        }
        self._durations = list(durations) if durations is not None else None
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self.url = ""
        self.api_key = ""
        self.pid = 0

    def __enter__(self) -> SandboxProcess:
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._durations is not None:
            table = self._dir / "durations.json"
            table.write_text(json.dumps(self._durations))
            self._config["durations"] = str(table)
        config = self._dir / "sandbox.json"
        config.write_text(json.dumps(self._config))
        self._proc = subprocess.Popen(  # noqa: S603 - our own module, with our interpreter
            [sys.executable, "-m", "benchmarks._sandbox_server", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=str(ROOT),
        )
        self.pid = self._proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True, name="sandbox-stdout")
        self._reader.start()
        try:
            for _ in range(10):
                line = self._expect(timeout=30)
                if line.startswith("url="):
                    self.url = line[4:]
                elif line.startswith("api_key="):
                    self.api_key = line[8:]
                elif line == "ready":
                    break
            if not (self.url and self.api_key):
                raise RuntimeError("the sandbox process did not announce itself")
        except BaseException:
            self._stop()
            raise
        return self

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.strip())
        self._lines.put("")  # end of output: the process is gone

    def _expect(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("the sandbox process stopped answering") from None
        if line == "" and self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"the sandbox process exited ({self._proc.returncode})")
        return line

    def _send(self, command: str) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()

    def ledger(self) -> dict[str, Any]:
        """The ledger's summary now (tasks, queries per task, completion times, charges)."""
        path = self._dir / f"ledger-{time.monotonic_ns()}.json"
        self._send(f"ledger {path}")
        for _ in range(100):
            if self._expect(timeout=60) == "ledger-ok":
                data: dict[str, Any] = json.loads(path.read_text())
                path.unlink()
                return data
        raise RuntimeError("the sandbox process did not write its ledger")

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._send("stop")
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)  # the pipe reaches its end once the process is gone
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()


# -- timing the client ----------------------------------------------------------------------


class TimingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that notes when the client first hears a task is terminal.

    It wraps the real transport (with the connection limits the library would use) and
    reads each query answer once more: ``terminal_at[task_id]`` is ``time.monotonic()``
    when the first answer with status ``success`` or ``failed`` arrived, and ``query_times``
    holds when every query answer arrived (to see a session's peak rate). The sandbox's
    ``completed_at`` is on the same monotonic clock (one machine), so the difference is the
    detection delay.
    """

    def __init__(self, max_connections: int = 64) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=4.0,
        )
        self._inner = httpx.AsyncHTTPTransport(limits=limits)
        self.terminal_at: dict[str, float] = {}
        self.query_times: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method != "GET" or request.url.path != QUERY_PATH:
            return response
        self.query_times.append(time.monotonic())
        assert isinstance(response.stream, httpx.AsyncByteStream)
        try:
            body = b"".join([chunk async for chunk in response.stream])
        finally:
            await response.stream.aclose()
        stamp = time.monotonic()
        task_id = request.url.params.get("task_id")
        if task_id and task_id not in self.terminal_at and _says_terminal(body):
            self.terminal_at[task_id] = stamp
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _says_terminal(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    inner = data.get("data") if isinstance(data, dict) else None
    return isinstance(inner, dict) and inner.get("status") in TERMINAL


# -- the machine ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and the versions of the packages that matter."""
    cpu = platform.processor() or platform.machine()
    ram_gb: float | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    packages = {}
    for name in (
        "nanobanana-jupyter",
        "httpx",
        "aiohttp",
        "pillow",
        "ipython",
        "ipykernel",
        "jupyter_client",
        "nbclient",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": packages,
    }


# -- results --------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the summary table: a measure, its figure, what it is compared with, and
    the goal's verdict (``None`` when the row is for information only)."""

    comparison: str
    measure: str
    project: str
    baseline: str = ""
    goal: str = ""
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return ""
        return "PASS" if self.passed else "MISS"
