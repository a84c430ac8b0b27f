"""The ``Sandbox`` object: the server's own event loop in a daemon thread, and ``serve``.

The sandbox runs on a private loop so that tests, notebooks and benchmarks can use it from
synchronous code (and from a client that has its own loop) without sharing a loop with it.
Sockets are bound in ``start()`` on the caller's thread, so a port clash raises right there and
``port`` is known as soon as ``start()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType, TracebackType
from typing import Any

from aiohttp import web

from ._app import KeyCheck, Service
from ._callbacks import CallbackSender
from ._faults import FaultScript
from ._images import LocalResolver, Renderer
from ._ledger import Ledger
from ._state import RESULT_MODES, Clock, Duration, ResultMode, TaskPlan, TaskStore

# Hung requests are released before the runners stop; this only bounds stragglers.
_SHUTDOWN_TIMEOUT = 0.2
_START_TIMEOUT = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            # Lets the CLI restart on a fixed port while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping a wildcard to loopback, not binding it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]" if ":" in host else host


class Sandbox:
    """A local server that speaks the defapi.org Nano Banana API and draws images offline.

    Use it as a context manager (``with Sandbox(time_scale=0.01) as sb: ...``) or with
    ``start()``/``stop()``. Point a client at ``sb.url`` with ``sb.api_key``. Result images
    are served by a second listener, ``sb.cdn_url``, so they come from another origin, as on
    the real service.

    Arguments:
        host, port: where the API listens (port 0: the OS picks one).
        time_scale: real seconds per API second (0.01 turns a 10 s task into 100 ms).
        result_mode: ``"url"`` (CDN links), ``"data_uri"`` or ``"mixed"``.
        url_ttl: API seconds after a task ends during which its result URLs work; then 410.
        duration: API seconds a task takes, or a function of the prompt; default 4–12 s,
            fixed per prompt.
        capacity: at most this many tasks ``in_progress`` at once; the rest wait in
            ``submitted``. ``None``: unlimited.
        credits: what each task costs (``consumed``).
        balance: the account's starting credits (``GET /api/user``); each charge lowers
            it. Submits are not refused when it runs out (the service's answer to that is
            not documented).
        max_side: cap on the long side of drawn images (the 2K/4K tiers are capped by it).
        image_side: if set, every image's long side, whatever the size tier (benchmarks).
        api_key: the accepted key; default a fresh random ``dk-`` key.
        accept_any_key: accept any ``Bearer dk-...`` token (for demos and the CLI).
        clock: monotonic clock in seconds (tests inject a fake one).
        plan: the default ``TaskPlan`` for tasks with no queued plan.
        cdn_port: port of the CDN listener (0: the OS picks one).
        keepalive_timeout: seconds an idle keep-alive connection stays open.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        time_scale: float = 1.0,
        result_mode: ResultMode = "url",
        url_ttl: float = 3600.0,
        duration: Duration | None = None,
        capacity: int | None = None,
        credits: float = 0.5,
        balance: float = 100.0,
        max_side: int = 1024,
        image_side: int | None = None,
        api_key: str | None = None,
        accept_any_key: bool = False,
        clock: Clock | None = None,
        plan: TaskPlan | None = None,
        cdn_port: int = 0,
        keepalive_timeout: float = 75.0,
    ) -> None:
        if result_mode not in RESULT_MODES:
            raise ValueError(f"result_mode must be one of {RESULT_MODES}")
        if max_side < 16 or (image_side is not None and image_side < 16):
            raise ValueError("max_side and image_side must be at least 16 pixels")
        if not (math.isfinite(keepalive_timeout) and keepalive_timeout > 0):
            raise ValueError("keepalive_timeout must be a finite number > 0")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must not be empty")
        self._host = host
        self._requested_ports = (port, cdn_port)
        self._max_side = max_side
        self._image_side = image_side
        self._keepalive_timeout = keepalive_timeout
        self._api_key = api_key or f"dk-{secrets.token_hex(16)}"
        self._keys = KeyCheck(self._api_key, accept_any_key)
        self._ledger = Ledger()
        self._faults = FaultScript()
        self._store = TaskStore(
            ledger=self._ledger,
            clock=clock,
            time_scale=time_scale,
            capacity=capacity,
            duration=duration,
            credits=credits,
            balance=balance,
            result_mode=result_mode,
            url_ttl=url_ttl,
            default_plan=plan,
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: list[socket.socket] = []
        self._ports: tuple[int, int] | None = None
        self._stopped = False
        self._startup_error: BaseException | None = None

    # -- public surface --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the API, without a trailing slash (``http://127.0.0.1:PORT``)."""
        return f"http://{_url_host(self._host)}:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the image host that result URLs point at."""
        return f"http://{_url_host(self._host)}:{self._bound()[1]}"

    @property
    def port(self) -> int:
        """The API's port (known once ``start()`` has returned)."""
        return self._bound()[0]

    @property
    def api_key(self) -> str:
        """A key the sandbox accepts."""
        return self._api_key

    @property
    def ledger(self) -> Ledger:
        """What the sandbox received and charged (thread-safe, readable at any time)."""
        return self._ledger

    @property
    def balance(self) -> float:
        """The account's credits now: the starting ``balance`` less every charge so far.
        Assign to it to set the account's credits (e.g. a low balance in a test)."""
        return self._store.balance

    @balance.setter
    def balance(self, value: float) -> None:
        self._store.set_balance(value)

    @property
    def faults(self) -> FaultScript:
        """The fault script: ``sb.faults.add("submit", Fault.RATE_LIMIT)``."""
        return self._faults

    def plan(self, plan: TaskPlan, count: int = 1) -> None:
        """Make the next ``count`` submitted tasks behave as ``plan`` says (FIFO)."""
        self._store.plan(plan, count)

    def start(self) -> Sandbox:
        """Bind, start the server thread, and return once both listeners accept connections."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped Sandbox cannot be restarted; create a new one")
            if self._thread is not None:
                raise RuntimeError("the Sandbox is already running")
            try:
                self._sockets = [_bind(self._host, p) for p in self._requested_ports]
            except BaseException:
                self._close_sockets()
                raise
            api_port = self._sockets[0].getsockname()[1]
            self._ports = (api_port, self._sockets[1].getsockname()[1])
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._main,
                args=(loop, ready),
                name=f"nanobanana-sandbox-{api_port}",
                daemon=True,
            )
            self._loop, self._thread = loop, thread
            thread.start()
        if not ready.wait(_START_TIMEOUT):
            self.stop()
            raise RuntimeError("the sandbox did not start in time")
        if self._startup_error is not None:
            thread.join()
            self._close_sockets()
            with self._lock:
                self._stopped = True
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving and release the thread and sockets; idempotent.

        Hung requests are dropped, pending callbacks cancelled; returns within a fraction of a
        second.
        """
        with self._lock:
            thread, loop = self._thread, self._loop
            if self._stopped or thread is None or loop is None:
                self._stopped = True
                return
            self._stopped = True
        if thread is threading.current_thread():
            raise RuntimeError("stop() cannot be called from the sandbox's own thread")
        with contextlib.suppress(RuntimeError):  # The loop already closed (startup failed).
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._close_sockets()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        # Never shows the key: reprs end up in logs and notebooks.
        state = "stopped" if self._stopped else ("running" if self._thread else "new")
        where = f" {self.url}" if self._ports and not self._stopped else ""
        return f"<Sandbox {state}{where}>"

    # -- internals -------------------------------------------------------------------------

    def _bound(self) -> tuple[int, int]:
        if self._ports is None:
            raise RuntimeError("the Sandbox has not been started")
        return self._ports

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def _main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        runners: list[web.AppRunner] = []
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nanobanana-sandbox-draw")
        service: Service | None = None
        try:
            try:
                service = loop.run_until_complete(self._startup(runners, executor))
            except BaseException as exc:
                self._startup_error = exc
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown(service, runners))
            executor.shutdown(wait=True, cancel_futures=True)
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Joins the loop's default executor (DNS lookups of callback hosts run there).
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _startup(self, runners: list[web.AppRunner], executor: ThreadPoolExecutor) -> Service:
        def renderer(resolve: LocalResolver) -> Renderer:
            return Renderer(
                executor=executor,
                max_side=self._max_side,
                image_side=self._image_side,
                resolve_local=resolve,
            )

        service = Service(
            store=self._store,
            ledger=self._ledger,
            faults=self._faults,
            renderer_factory=renderer,
            callbacks=CallbackSender(self._ledger, self._store.now),
            keys=self._keys,
        )
        service.set_cdn_base(self.cdn_url)
        for app, sock in zip(service.make_apps(), self._sockets, strict=True):
            runner = web.AppRunner(
                app,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=_SHUTDOWN_TIMEOUT,
                keepalive_timeout=self._keepalive_timeout,
            )
            await runner.setup()
            runners.append(runner)
            await web.SockSite(runner, sock, backlog=1024).start()
        return service

    @staticmethod
    async def _shutdown(service: Service | None, runners: list[web.AppRunner]) -> None:
        if service is not None:
            await service.close()
        for runner in runners:
            await runner.cleanup()
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


def serve(
    sandbox: Sandbox | None = None, *, on_ready: Callable[[Sandbox], None] | None = None
) -> None:
    """Run ``sandbox`` (default: ``Sandbox()``) until SIGINT or SIGTERM, then stop it cleanly.

    ``on_ready`` is called with the running sandbox (the CLI prints its URL and key there).
    Signal handlers are installed only when called from the main thread.
    """
    sandbox = sandbox or Sandbox()
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only sets a flag: a handler must not block or take locks the main thread may hold.
        stop_requested.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT.value, signal.SIGTERM.value):
            previous[signum] = signal.signal(signum, request_stop)
    try:
        with sandbox:
            if on_ready is not None:
                on_ready(sandbox)
            while not stop_requested.is_set():
                time.sleep(0.1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
