"""What a session holds open, and how it is closed.

:class:`Resources` is kept apart from the session so that a finalizer can close it: nothing
here refers to the session (the callbacks it is given hold the session's parts weakly).
``Session.close()`` closes it; so does the finalizer of a session dropped without ``close()``
(:meth:`Resources.dropped`), and the engine when it stops at interpreter exit
(:meth:`Resources.aclose`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx

from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.client import AsyncClient
from nanobanana_jupyter._wire.errors import APIError
from nanobanana_jupyter._wire.settings import Settings

from .engine import Engine
from .poll_loop import PollLoop
from .poll_policy import Decision
from .sandboxed import LocalServer
from .scheduler import PollScheduler
from .webhook import WebhookReceiver

__all__ = ["CLOSING", "SUBMIT_GRACE_ON_CLOSE", "Resources"]

logger = logging.getLogger("nanobanana_jupyter")

# Seconds close() lets submits in flight finish before cancelling them.
SUBMIT_GRACE_ON_CLOSE = 3.0

# Closings of dropped sessions in progress on the engine (a task needs a strong reference).
CLOSING: set[asyncio.Task[None]] = set()


class Resources:
    """What a session holds open, kept apart from the session so that a finalizer can close
    it: nothing here refers to the session.

    ``close()`` closes it; so does the finalizer of a session dropped without ``close()``
    (:meth:`dropped`), and the engine when it stops at interpreter exit (:meth:`aclose`).
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        scheduler: PollScheduler,
        owner: str,
        *,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None,
        caps: tuple[float, int, int],
    ) -> None:
        self.engine = engine
        self.store = store
        self.scheduler = scheduler
        self.owner = owner
        self.settings = settings
        self.transport = transport
        self.caps = caps  # queries per second, queries in flight, submits in flight
        self.closed = False
        # Created on the engine loop on first use: loop-bound objects never cross loops.
        self.client: AsyncClient | None = None
        self.poll_loop: PollLoop | None = None
        self.maintenance: asyncio.Task[None] | None = None
        self.submit_slots: asyncio.Semaphore | None = None
        self.image_slots: asyncio.Semaphore | None = None  # result images fetched at once
        self.receiver: WebhookReceiver | None = None
        self.sandbox: LocalServer | None = None
        self.submitting: set[asyncio.Task[Any]] = set()
        # Submits whose request has left (their answer is worth a short wait at close).
        self.sending: set[asyncio.Task[Any]] = set()
        # Local ids whose request has not left yet: added by the thread starting them,
        # taken by their submit job just before it sends, or by close (not_sent, all in one
        # write through on_close_unsent). Whoever takes an id settles it.
        self._unsent: set[str] = set()
        self._unsent_taken_by_close = False
        self._unsent_lock = threading.Lock()
        self.on_close_unsent: Callable[[list[str]], None] | None = None
        # Reconciliations and balance looks in flight: cancelled before the client closes.
        self.background: set[asyncio.Task[Any]] = set()
        # Set once by the session: called through weak references (see support.py).
        self.on_retry: Callable[[APIError, float], None] | None = None
        self.on_decision: Callable[[str, Decision], Awaitable[None]] | None = None
        self.maintain: Callable[[], Coroutine[Any, Any, None]] | None = None

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this Session is closed")

    def add_unsent(self, local_ids: list[str]) -> None:
        """Requests about to be handed to their submit jobs (any thread)."""
        with self._unsent_lock:
            self._unsent.update(local_ids)

    def take_unsent(self, local_id: str, *, closing: bool = False) -> bool:
        """Take a request to send it or settle it: False when close has taken it already.

        ``closing``: asked by a job that starts after ``close()``; then also False while
        close is still to take it (between ``close()`` and its step on the engine), so
        that close settles it with the rest in one write.
        """
        with self._unsent_lock:
            if local_id not in self._unsent or (closing and not self._unsent_taken_by_close):
                return False
            self._unsent.discard(local_id)
            return True

    def connect(self) -> tuple[AsyncClient, PollLoop]:
        """The client and the poll loop, made on first use (engine thread), with the submit
        slots and the maintenance loop."""
        if self.client is None:
            self.client = AsyncClient(
                settings=self.settings,
                transport=self.transport,
                max_connections=max(8, self.caps[1] + self.caps[2] + 4),
                on_retry=self.on_retry,
            )
        if self.poll_loop is None:
            rate, in_flight, submits = self.caps
            assert self.on_decision is not None
            assert self.maintain is not None
            self.poll_loop = PollLoop(
                self.scheduler,
                self.client.query,
                self.on_decision,
                max_per_second=rate,
                max_in_flight=in_flight,
            )
            self.submit_slots = asyncio.Semaphore(submits)
            self.maintenance = asyncio.get_running_loop().create_task(self.maintain())
        return self.client, self.poll_loop

    def close(self) -> bool:
        """Close everything (``Session.close()``); False when only started (on the engine
        thread, from a done callback, where blocking would deadlock)."""
        self.closed = True
        self.engine.remove_closer(self.aclose)
        if self.engine.in_engine_thread():
            self.close_soon()
            return False
        if self.engine.running:
            try:
                self.engine.run(self.aclose(), timeout=5)
            except (concurrent.futures.TimeoutError, RuntimeError):
                logger.debug("session close did not finish in time")
        self.close_now()
        return True

    async def aclose(self) -> None:
        """Stop the background work and close connections (on the engine loop)."""
        if self.maintenance is not None:
            self.maintenance.cancel()
        # Requests still waiting for their turn never left: not_sent, in one write, however
        # many (one write each outlasted close's time limit for a large map()); their jobs
        # are cancelled and find them taken.
        with self._unsent_lock:
            unsent, self._unsent = sorted(self._unsent), set()
            self._unsent_taken_by_close = True
        if unsent and self.on_close_unsent is not None:
            try:
                self.on_close_unsent(unsent)
            except Exception:  # close goes on: the rows are settled at the next open
                logger.exception("could not settle the requests this session never sent")
        waiting = self.submitting - self.sending
        for task in waiting:
            task.cancel()
        if self.sending:
            # Let submits in flight get their answer (a task id is worth keeping), briefly;
            # then they are cancelled: submit_unknown, as their request had left.
            _, pending = await asyncio.wait(set(self.sending), timeout=SUBMIT_GRACE_ON_CLOSE)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self.submitting, return_exceptions=True)
        for job in list(self.background):
            job.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.poll_loop is not None:
            await self.poll_loop.aclose()
        for key in list(self.scheduler.keys()):
            self.scheduler.remove(key)
        # Every lease this session holds, including those of tasks whose images were still
        # downloading when the poll loop was cancelled: the next session takes them at once.
        try:
            self.store.release_all_leases(self.owner)
        except Exception:  # the store may already be closed at interpreter exit
            logger.debug("could not release this session's leases")
        if self.client is not None:
            await self.client.aclose()
        if self.receiver is not None:
            await self.receiver.aclose()

    def close_now(self) -> None:
        """Close what needs no engine: the store, the sandbox (after :meth:`aclose`)."""
        self.store.close()
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.stop()

    def close_soon(self) -> None:
        """Close everything from the engine thread, without blocking it."""

        async def close_all() -> None:
            try:
                await self.aclose()
            finally:
                self.store.close()  # quick: the connection only
                sandbox, self.sandbox = self.sandbox, None
                if sandbox is not None:  # joins the sandbox's thread: not on this one
                    await asyncio.get_running_loop().run_in_executor(None, sandbox.stop)

        job = asyncio.get_running_loop().create_task(close_all())
        CLOSING.add(job)
        job.add_done_callback(CLOSING.discard)

    @staticmethod
    def dropped(resources: Resources) -> None:
        """Finalizer of a session collected without ``close()``: close what it held.

        It may run in any thread, inside the garbage collector, so it never blocks: the work
        is handed to the engine, or done here when no engine runs.
        """
        try:
            resources.closed = True
            resources.engine.remove_closer(resources.aclose)
            if not resources.engine.call_soon_if_running(resources.close_soon):
                resources.close_now()
        except Exception:  # a finalizer must not raise; say what was left open
            logger.warning("could not close a dropped session", exc_info=True)
