"""A small asyncio TCP fault proxy for tests: toxiproxy's toxics, in process, on 127.0.0.1.

It sits between a client and a server on loopback and makes the bytes suffer::

    with FaultProxy(("127.0.0.1", sandbox.port)) as proxy:
        proxy.set(Plan(down=Toxics(latency=5.0)))      # every answer arrives 5 s late
        proxy.set(Plan(match=b"GET /api/task/query", down=Toxics(blackhole=True), limit=2))
        ...                                            # point the client at proxy.url

Toxics, per direction (``up``: client to server, ``down``: server to client):

* ``latency`` (± ``jitter``): every chunk waits that long before it is forwarded;
* ``slice_size``/``slice_delay``: chunks are cut into tiny writes, with a pause between them;
* ``bandwidth``: bytes per second;
* ``reset_after``: after that many bytes, both connections are reset (TCP RST, no FIN);
* ``close_after``: after that many bytes, both connections are closed cleanly (early EOF);
* ``blackhole``: everything is read and dropped; nothing is forwarded, nothing closes.

A :class:`Plan` applies to whole connections, or, with ``match``, only to the HTTP exchanges
whose request starts with those bytes (so a test can fault polls but not submits on one
keep-alive connection). ``limit`` bounds how many connections or exchanges get the toxics;
after that, traffic is clean. Plans are chosen per connection at accept time (``plan`` may
be a function of the connection's index) or switched at runtime with :meth:`FaultProxy.set`.

Everything is bounded: the number of connections, every delay (``max_delay``), and
:meth:`FaultProxy.stop`, which aborts every connection and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["CLEAN", "ConnectionStats", "FaultProxy", "Plan", "Toxics"]

_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
_READ_SIZE = 65536


@dataclasses.dataclass(frozen=True)
class Toxics:
    """What one direction of a connection suffers. The default is a clean pipe."""

    latency: float = 0.0
    jitter: float = 0.0
    slice_size: int = 0
    slice_delay: float = 0.0
    bandwidth: float = 0.0
    reset_after: int | None = None
    close_after: int | None = None
    blackhole: bool = False

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "slice_delay", "bandwidth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.slice_size < 0:
            raise ValueError("slice_size must be >= 0")
        for name in ("reset_after", "close_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def clean(self) -> bool:
        return self == _CLEAN_TOXICS


_CLEAN_TOXICS = Toxics()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Toxics for both directions, for whole connections or for matching exchanges."""

    up: Toxics = _CLEAN_TOXICS
    down: Toxics = _CLEAN_TOXICS
    match: bytes | None = None
    """Only exchanges whose request starts with these bytes suffer (e.g. ``b"GET /api/"``)."""
    limit: int | None = None
    """At most this many connections (or matching exchanges) suffer; then traffic is clean."""


CLEAN = Plan()
PlanSource = Plan | Callable[[int], Plan]


@dataclasses.dataclass
class ConnectionStats:
    """What happened to one proxied connection."""

    index: int
    opened: float
    up_bytes: int = 0
    down_bytes: int = 0
    dropped_bytes: int = 0
    faulted_exchanges: int = 0
    outcome: str = "open"
    """``open``, ``closed``, ``reset``, ``closed_early``, ``refused`` or ``upstream_failed``."""
    closed: float | None = None


class _Budget:
    """How many more connections/exchanges a plan may fault (shared, loop thread only)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.left = plan.limit

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class _Connection:
    def __init__(
        self,
        proxy: FaultProxy,
        stats: ConnectionStats,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        budget: _Budget,
    ) -> None:
        self.proxy = proxy
        self.stats = stats
        self.client = client
        self.server = server
        self.budget = budget
        # Whole-connection plans decide once; matching plans decide per request.
        self.active: Plan | None = None
        if budget.plan.match is None and budget.plan != CLEAN and budget.take():
            self.active = budget.plan
        self.sent = {"up": 0, "down": 0}
        self.done = asyncio.Event()
        self.ending: str | None = None

    def toxics(self, direction: str) -> Toxics:
        plan = self.active
        if plan is None:
            return _CLEAN_TOXICS
        return plan.up if direction == "up" else plan.down

    def on_request_chunk(self, chunk: bytes) -> None:
        plan = self.budget.plan
        if plan.match is None or not chunk.startswith(_METHODS):
            return
        # A new request on this connection: decide whether this exchange suffers.
        self.sent = {"up": 0, "down": 0}
        if chunk.startswith(plan.match) and self.budget.take():
            self.active = plan
            self.stats.faulted_exchanges += 1
        else:
            self.active = None

    async def pump(self, direction: str) -> None:
        reader = self.client[0] if direction == "up" else self.server[0]
        writer = self.server[1] if direction == "up" else self.client[1]
        while True:
            chunk = await reader.read(_READ_SIZE)
            if not chunk:
                self.finish("closed")
                return
            if direction == "up":
                self.on_request_chunk(chunk)
            toxics = self.toxics(direction)
            if toxics.blackhole:
                self.stats.dropped_bytes += len(chunk)
                continue
            ending: str | None = None
            for limit, outcome in ((toxics.reset_after, "reset"), (toxics.close_after, "early")):
                if limit is not None and self.sent[direction] + len(chunk) > limit:
                    chunk = chunk[: max(0, limit - self.sent[direction])]
                    ending = outcome
                    break
            await self.proxy._pause(toxics.latency, toxics.jitter)
            await self.forward(writer, chunk, toxics, direction)
            if ending == "reset":
                self.finish("reset")
                return
            if ending == "early":
                self.finish("closed_early")
                return

    async def forward(
        self, writer: asyncio.StreamWriter, chunk: bytes, toxics: Toxics, direction: str
    ) -> None:
        size = toxics.slice_size or len(chunk) or 1
        if toxics.bandwidth and not toxics.slice_size:
            # Paced in small pieces (one per ~20 ms), as a slow link delivers them.
            size = max(1, int(toxics.bandwidth * 0.02))
        for start in range(0, len(chunk), size):
            piece = chunk[start : start + size]
            if toxics.bandwidth:
                await self.proxy._pause(len(piece) / toxics.bandwidth, 0.0)
            writer.write(piece)
            await writer.drain()
            self.sent[direction] += len(piece)
            if direction == "up":
                self.stats.up_bytes += len(piece)
            else:
                self.stats.down_bytes += len(piece)
            if toxics.slice_delay and start + size < len(chunk):
                await self.proxy._pause(toxics.slice_delay, 0.0)

    def finish(self, outcome: str) -> None:
        if self.ending is None:
            self.ending = outcome
        self.done.set()

    def close(self) -> None:
        outcome = self.ending or "closed"
        writers = (self.client[1], self.server[1])
        if outcome == "reset":
            for writer in writers:
                _reset(writer)
        else:
            for writer in writers:
                writer.close()
        self.stats.outcome = outcome
        self.stats.closed = time.monotonic()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST: SO_LINGER 0, then abort."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 (port 0) with scripted toxics; runs its own loop thread.

    Args:
        upstream: ``(host, port)`` of the real server (loopback only).
        plan: a :class:`Plan` for every connection, or a function from the connection's
            index (0, 1, ...) to its plan.
        seed: seeds the jitter.
        max_connections: connections beyond this many open at once are refused (reset).
        max_delay: no single pause lasts longer than this (seconds).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        plan: PlanSource = CLEAN,
        seed: int = 0,
        max_connections: int = 256,
        max_delay: float = 30.0,
    ) -> None:
        host, _ = upstream
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy only forwards to loopback")
        self.upstream = upstream
        self.max_connections = max_connections
        self.max_delay = max_delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._source: PlanSource = plan
        self._budget: _Budget | None = None if callable(plan) else _Budget(plan)
        self._stats: list[ConnectionStats] = []
        self._open: set[_Connection] = set()
        self._live = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # -- control (any thread) ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, plan: PlanSource) -> None:
        """Switch the plan at runtime, for new connections and for the open ones.

        A whole-connection plan applies at once to open connections (within its limit); a
        matching plan applies from their next request. A function of the connection index
        applies to new connections only.
        """

        def switch() -> None:
            self._source = plan
            if callable(plan):
                self._budget = None
                return
            budget = self._budget = _Budget(plan)
            for conn in list(self._open):
                conn.budget = budget
                conn.sent = {"up": 0, "down": 0}  # byte limits count from the switch
                if plan.match is None and plan != CLEAN and budget.take():
                    conn.active = plan
                else:
                    conn.active = None

        self._call(switch)

    def close_all(self) -> None:
        """Close every open connection cleanly (FIN), as a server dropping idle ones would."""

        def close() -> None:
            for conn in list(self._open):
                conn.finish("closed")

        self._call(close)

    @property
    def stats(self) -> list[ConnectionStats]:
        """Every connection so far, in accept order (copies)."""
        with self._lock:
            return [dataclasses.replace(s) for s in self._stats]

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._stats)

    @property
    def active(self) -> int:
        """Connections open right now."""
        with self._lock:
            return sum(1 for s in self._stats if s.outcome == "open")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._stopping = asyncio.Event()
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=256)
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start within 10 s")
        if failure:
            self._thread.join(5)
            raise failure[0]
        return self

    def stop(self) -> None:
        """Abort every connection, stop the loop and join the thread (bounded)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if thread.is_alive():  # pragma: no cover - a bug in the proxy
            raise RuntimeError("the fault proxy thread did not stop within 10 s")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- loop thread ----------------------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not running")
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the proxy loop did not answer within 10 s")

    async def _pause(self, seconds: float, jitter: float) -> None:
        if jitter:
            seconds += self._rng.uniform(-jitter, jitter)
        if seconds > 0:
            await asyncio.sleep(min(seconds, self.max_delay))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels, after resetting the connection: nothing left to report.
            pass
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            index = len(self._stats)
            stats = ConnectionStats(index=index, opened=time.monotonic())
            self._stats.append(stats)
            too_many = self._live >= self.max_connections
            if not too_many:
                self._live += 1
        if too_many:
            stats.outcome, stats.closed = "refused", time.monotonic()
            _reset(writer)
            return
        try:
            await self._proxy(stats, index, reader, writer)
        finally:
            with self._lock:
                self._live -= 1

    async def _proxy(
        self,
        stats: ConnectionStats,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
        except (OSError, asyncio.TimeoutError):
            stats.outcome, stats.closed = "upstream_failed", time.monotonic()
            writer.close()
            return
        source = self._source
        budget = _Budget(source(index)) if callable(source) else self._budget
        assert budget is not None
        conn = _Connection(self, stats, (reader, writer), upstream, budget)
        self._open.add(conn)
        pumps = [asyncio.ensure_future(conn.pump(d)) for d in ("up", "down")]
        waiter = asyncio.ensure_future(conn.done.wait())
        try:
            await asyncio.wait([*pumps, waiter], return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                if pump.done() and not pump.cancelled() and pump.exception() is not None:
                    conn.finish("reset")
        finally:
            for future in (*pumps, waiter):
                future.cancel()
            await asyncio.gather(*pumps, waiter, return_exceptions=True)
            self._open.discard(conn)
            with self._lock:
                conn.close()
            for w in (writer, upstream[1]):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.wait_closed(), 1)

    async def _shutdown(self) -> None:
        server = self._server
        if server is not None:
            server.close()
        for conn in list(self._open):
            conn.finish("reset")
        tasks = list(self._tasks)
        if tasks:
            # Connections end on their own once reset; cancel whatever is still stuck.
            _, stuck = await asyncio.wait(tasks, timeout=2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
