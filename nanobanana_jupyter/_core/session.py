"""The :class:`Session`: generate, poll, store and show tasks, from scripts and notebooks.

A session owns one history store and image store (in its data directory), one HTTP client
and one poll scheduler, all driven on the engine thread. Its public calls return at once:
the work happens in the background and each call hands back a :class:`Task`.

A task's life (design.md section 4): the intent is written to the store *before* the submit
is sent; the task id is written in one update when it returns; an ambiguous submit becomes
``submit_unknown`` and is never re-sent; every image is fetched into the image store as soon
as the task succeeds (result URLs expire). A lease in the store keeps two kernels from
polling the same task.

A session's lifetime: ``close()`` (or ``with``) stops its polling; a session dropped without
``close()`` is collected like any object and closed by its finalizer, because the engine and
the session's background loops hold it only weakly. Work already handed to the engine (a
submit waiting for its turn or in flight) holds it until its outcome is written to the
store, so a submit is never lost; what is still being polled when it goes stays in the store,
unfinished and resumable (``session.resume()``, or re-running the same request, picks it up),
with its leases released for the next session at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.owners import new_lease_owner
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.client import AsyncClient
from nanobanana_jupyter._wire.errors import (
    APIError,
    NanoBananaError,
    RateLimitError,
    SubmitOutcomeUnknownError,
    ValidationError,
)
from nanobanana_jupyter._wire.models import GenerationRequest, TaskStatus
from nanobanana_jupyter._wire.settings import SecretKey, Settings, default_data_dir

from .engine import Engine, get_engine
from .events import TaskEvent
from .poll_loop import PollLoop, RateLimiter
from .poll_policy import Action, Decision, PollPolicy
from .references import to_references
from .sandboxed import LocalServer, start_sandbox
from .scheduler import PollScheduler
from .task import Task
from .webhook import WebhookReceiver

__all__ = ["MAX_SAMPLES", "Session", "get_default_session", "set_default_session"]

logger = logging.getLogger("nanobanana_jupyter")

# How many samples one generate(n=...) may start: every view's -n.
MAX_SAMPLES = 16

# Seconds close() lets submits in flight finish before cancelling them.
SUBMIT_GRACE_ON_CLOSE = 3.0

# Result images a session fetches and decodes at once. Each streams to disk in chunks, but
# checking one decodes it fully (up to 64 MP, about 200 MB of pixels): a small number keeps
# a task with 30 large results to a few hundred MB at worst, and still overlaps the network.
IMAGE_FETCHES = 3
# Seconds between store re-reads of rows this session follows but another writer moves on
# (a reused request another session or kernel is sending or polling): its handle ends within
# about this long of the writer's. A read of one row each time, and only while there are any.
WATCH_INTERVAL = 0.5

# With callbacks, polling is only the safety net for a callback that never comes.
# With callbacks on, polls are only a backup for a callback that never comes: the first at
# 90 s (past most tasks' whole life, so a working callback costs no poll), then every
# 45-60 s. A lost callback is noticed within about 90 s (benchmarks: webhook requests/task).
WEBHOOK_BACKUP_POLICY = PollPolicy(
    initial_delay=90.0, age_fraction=0.5, min_interval=10.0, max_interval=60.0, min_samples=10**9
)

SUBMIT_UNKNOWN_HELP = (
    "the submit may have reached the server, so the task may exist and may have been "
    "charged; it was not sent again. Check your defapi.org task list; to send it anyway, "
    "call generate(..., force=True)"
)


def _message(error: BaseException) -> str:
    return error.message if isinstance(error, NanoBananaError) else str(error)


def _weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, called through a weak reference: it does not keep its object alive.

    For callbacks the engine holds (client retries, webhook hints): a dropped session stays
    collectable; once it is gone the call does nothing.
    """
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)

    return call


def _weak_async_method(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """:func:`_weak_method` for a coroutine method (the poll loop's decisions)."""
    ref = weakref.WeakMethod(method)

    async def call(*args: Any) -> None:
        bound = ref()
        if bound is not None:
            await bound(*args)

    return call


def _report_failure(future: concurrent.futures.Future[Any]) -> None:
    """Log what escaped a background job: nothing on the submit path may vanish unseen."""
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        logger.error("a background job of the session failed", exc_info=error)


# Closings of dropped sessions in progress on the engine (a task needs a strong reference).
_CLOSING: set[asyncio.Task[None]] = set()


class _Resources:
    """What a session holds open, kept apart from the session so that a finalizer can close
    it: nothing here refers to the session.

    ``close()`` closes it; so does the finalizer of a session dropped without ``close()``
    (:meth:`dropped`), and the engine when it stops at interpreter exit (:meth:`aclose`).
    """

    def __init__(self, engine: Engine, store: Store, scheduler: PollScheduler, owner: str) -> None:
        self.engine = engine
        self.store = store
        self.scheduler = scheduler
        self.owner = owner
        # Created on the engine loop on first use: loop-bound objects never cross loops.
        self.client: AsyncClient | None = None
        self.poll_loop: PollLoop | None = None
        self.maintenance: asyncio.Task[None] | None = None
        self.receiver: WebhookReceiver | None = None
        self.sandbox: LocalServer | None = None
        self.submitting: set[asyncio.Task[Any]] = set()
        self.background: set[asyncio.Task[None]] = set()  # reconciliations in flight

    async def aclose(self) -> None:
        """Stop the background work and close connections (on the engine loop)."""
        if self.maintenance is not None:
            self.maintenance.cancel()
        if self.submitting:
            # Let submits in flight get their answer (a task id is worth keeping), briefly;
            # the rest are cancelled: not_sent if they were still waiting for their turn,
            # submit_unknown if their request had left.
            _, pending = await asyncio.wait(set(self.submitting), timeout=SUBMIT_GRACE_ON_CLOSE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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
        _CLOSING.add(job)
        job.add_done_callback(_CLOSING.discard)

    @staticmethod
    def dropped(resources: _Resources) -> None:
        """Finalizer of a session collected without ``close()``: close what it held.

        It may run in any thread, inside the garbage collector, so it never blocks: the work
        is handed to the engine, or done here when no engine runs.
        """
        try:
            resources.engine.remove_closer(resources.aclose)
            if not resources.engine.call_soon_if_running(resources.close_soon):
                resources.close_now()
        except Exception:  # a finalizer must not raise; say what was left open
            logger.warning("could not close a dropped session", exc_info=True)


async def _maintain(session_ref: weakref.ref[Session], lease_every: float) -> None:
    """A session's maintenance loop: lease renewal and takeovers every ``lease_every``
    seconds, and every :data:`WATCH_INTERVAL` a re-read of the rows it follows.

    Holds the session only weakly between rounds: a dropped session is collected (and its
    finalizer cancels this loop); if it is already gone, the loop ends by itself.
    """
    loop = asyncio.get_running_loop()
    next_lease = loop.time() + lease_every
    while True:
        session = session_ref()
        if session is None or session._closed:
            return
        wake = session._watch_wake
        timeout = max(0.0, next_lease - loop.time())
        if session._watched:
            timeout = min(timeout, WATCH_INTERVAL)
        del session
        wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)
        session = session_ref()
        if session is None:
            return
        try:
            if loop.time() >= next_lease:
                next_lease = loop.time() + lease_every
                session._maintain_leases()
            else:
                session._follow_watched()
        except Exception:  # the next round tries again
            logger.exception("lease maintenance failed")
        finally:
            del session


def _describe_reference(ref: str) -> str:
    """What the store keeps of a reference: URLs as given, inline images by their hash."""
    if ref.startswith("data:"):
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
    return ref


class Session:
    """Generate images and keep their history. Calls return at once; work runs behind.

    Close a session with ``close()`` or ``with``. One dropped without closing (a notebook
    cell ``s = Session()`` run again) is freed like any object and closed then: submits it
    had started are finished and recorded first; tasks it was still polling stay in the
    history, unfinished, for ``resume()`` (or the same request run again) to pick up.

    Args:
        api_key: the key; default from ``NANOBANANA_API_KEY``/``DEFAPI_API_KEY``, ``.env``
            or Colab secrets.
        base_url: the API origin; default ``https://api.defapi.org``.
        data_dir: where the history (SQLite) and images are kept; default per user.
        model: the model used when ``generate`` names none.
        settings: resolved settings, instead of the arguments above.
        poll_policy: the polling schedule (see :class:`PollPolicy`).
        max_requests_per_second: cap on the session's queries.
        max_in_flight: cap on the session's queries in flight.
        max_concurrent_submits: cap on submits in flight.
        max_submits_per_second: cap on the rate of submits (each one is a paid generation):
            up to this many go at once, then they are spaced at this rate. It keeps a
            ``map()`` of hundreds of prompts polite to the API and light on the kernel.
        transport: an httpx async transport (tests and benchmarks).
        webhook: receive task callbacks on 127.0.0.1 and query a task as soon as its
            callback arrives; polling then only backs callbacks up. The service must be able
            to reach the receiver (a tunnel: give its public URL as ``webhook_url``), or,
            for the sandbox, loopback.
        webhook_url: the public URL a tunnel exposes for the receiver.
    """

    def __init__(
        self,
        api_key: str | SecretKey | None = None,
        base_url: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        settings: Settings | None = None,
        poll_policy: PollPolicy | None = None,
        max_requests_per_second: float = 20.0,
        max_in_flight: int = 16,
        max_concurrent_submits: int = 4,
        max_submits_per_second: float = 10.0,
        lease_ttl: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        engine: Engine | None = None,
        webhook: bool = False,
        webhook_url: str | None = None,
    ) -> None:
        if settings is None:
            settings = Settings.resolve(
                api_key=api_key, base_url=base_url, data_dir=data_dir, model=model
            )
        self.settings = settings
        self.data_dir = Path(settings.data_dir or default_data_dir()).expanduser()
        self._store = Store(self.data_dir / "history.sqlite3")
        self._images = ImageStore(self.data_dir / "images")
        self._engine = engine or get_engine()
        self._transport = transport
        self._owner = new_lease_owner()
        self._lease_ttl = lease_ttl
        for name, value in (
            ("max_requests_per_second", max_requests_per_second),
            ("max_submits_per_second", max_submits_per_second),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of requests, not {value!r}")
        self._caps = (max_requests_per_second, max_in_flight, max_concurrent_submits)
        self._submit_limiter = RateLimiter(
            max_submits_per_second, burst=max(1.0, max_submits_per_second)
        )
        if poll_policy is None and webhook:
            poll_policy = WEBHOOK_BACKUP_POLICY
        self._scheduler = PollScheduler(poll_policy)
        self._handles: dict[str, Task] = {}
        self._handles_lock = threading.RLock()
        self._listeners: list[Callable[[TaskEvent], object]] = []
        self._flush_hooks: list[Callable[[], object]] = []  # views' flush (see _after_wait)
        # Rows another writer moves on that this session follows by reading the store (a
        # reused request not sent yet, a task another kernel polls); set to re-read them now.
        self._watched: set[str] = set()
        self._watch_wake = asyncio.Event()
        self._history = History(self._store)
        self._closed = False
        self._res = _Resources(self._engine, self._store, self._scheduler, self._owner)
        self._submit_slots: asyncio.Semaphore | None = None
        self._submitting = self._res.submitting
        self._early_hints: dict[str, str | None] = {}
        self._background = self._res.background
        self._image_slots: asyncio.Semaphore | None = None  # result images fetched at once
        if webhook or webhook_url:
            self._res.receiver = WebhookReceiver(
                _weak_method(self._on_hint), public_url=webhook_url
            )
            self._engine.run(self._res.receiver.start(), timeout=10)
        # Neither the engine nor the finalizer refers to the session (only to its resources):
        # a session nobody refers to is collected, and the finalizer closes what it held.
        self._engine.add_closer(self._res.aclose)
        self._finalizer = weakref.finalize(self, _Resources.dropped, self._res)
        self._finalizer.atexit = False  # at exit the engine's closers run instead
        if self._store.recovered:
            logger.warning(
                "%d task(s) were being submitted when a previous session stopped; they are "
                "marked submit_unknown (maybe charged, never re-sent)",
                self._store.recovered,
            )

    # Held by the resources (closed without the session); read here.

    @property
    def _client(self) -> AsyncClient | None:
        return self._res.client

    @property
    def _poll_loop(self) -> PollLoop | None:
        return self._res.poll_loop

    @property
    def _maintenance(self) -> asyncio.Task[None] | None:
        return self._res.maintenance

    @property
    def _receiver(self) -> WebhookReceiver | None:
        return self._res.receiver

    @property
    def _sandbox(self) -> LocalServer | None:
        return self._res.sandbox

    # -- public API ---------------------------------------------------------------

    @property
    def history(self) -> History:
        """Every task in this data directory, oldest first (see :class:`History`)."""
        return self._history

    @property
    def tasks(self) -> list[Task]:
        """The task handles this session has handed out, oldest first."""
        with self._handles_lock:
            return list(self._handles.values())

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        images: object = (),
        aspect_ratio: str | None = None,
        image_size: str | None = None,
        callback_url: str | None = None,
        force: bool = False,
        variant: int = 0,
        n: int | None = None,
    ) -> Any:
        """Start a generation and return its task at once; the work runs in the background.

        With ``n``, start ``n`` samples of the same request (variants 0 to ``n - 1``) and
        return their tasks as a list; re-running the same call reuses them one by one.

        An identical earlier request (same model, prompt, reference image bytes and
        options) that succeeded, or is still running, is reused instead of paid again,
        unless ``force=True``; so is one that timed out or is unavailable, which is then
        polled again (at no cost), since the server may still finish or hold it.

        Args:
            images: up to 4 references: URLs, data URIs, file paths, PIL images, bytes or
                earlier tasks.
            variant: tells apart deliberate repeats of one request (several samples of a
                prompt); repeats with the same variant are reused on a re-run.
            n: how many samples, 1 to 16 (:data:`MAX_SAMPLES`): every view's ``-n``.

        Raises:
            ValidationError: the request is wrong; nothing was sent or written.
            MissingAPIKeyError: no key is configured; says where to put one.
        """
        if n is not None and not (isinstance(n, int) and 1 <= n <= MAX_SAMPLES):
            raise ValidationError(f"n must be a whole number from 1 to {MAX_SAMPLES}, not {n!r}")
        request = self._build_request(prompt, model, images, aspect_ratio, image_size, callback_url)
        if n is None:
            return self._start(request, force=force, variant=variant)
        return [self._start(request, force=force, variant=variant + i) for i in range(n)]

    def map(
        self,
        prompts: Iterable[str],
        *,
        concurrency: int = 4,
        force: bool = False,
        **options: Any,
    ) -> list[Task]:
        """Start one task per prompt (same options), at most ``concurrency`` submits at once.

        Every prompt is validated before anything is sent, so one bad prompt costs nothing.

        Raises:
            ValidationError: ``prompts`` is one string (or bytes), not a list of prompts.
        """
        if isinstance(prompts, (str, bytes, bytearray)):
            raise ValidationError(
                f"map() takes a list of prompts, not a {type(prompts).__name__} (it would "
                "start one task per character): pass a list, map([prompt]), or call "
                "generate(prompt) for a single prompt"
            )
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        unknown = set(options) - {"model", "images", "aspect_ratio", "image_size", "callback_url"}
        if unknown:
            raise TypeError(f"unknown option(s) for map(): {', '.join(sorted(unknown))}")
        requests = [
            self._build_request(
                prompt,
                options.get("model"),
                options.get("images", ()),
                options.get("aspect_ratio"),
                options.get("image_size"),
                options.get("callback_url"),
            )
            for prompt in prompts
        ]
        slots = asyncio.Semaphore(concurrency)
        return [self._start(request, force=force, slots=slots) for request in requests]

    def resume(self) -> list[Task]:
        """Pick up every unfinished task of the store (after a restart, a timeout, a crash).

        Unfinished: still running, timed out (including polling stopped by 404s for a while)
        or unavailable (success without its image here). Nothing is submitted again.

        Tasks another live kernel is polling are watched, not polled, and taken over if that
        kernel goes away. Returns their handles at once.
        """
        self._check_open()
        self.settings.require_key()
        with self._handles_lock:
            handles = [self._register(record) for record in self._store.unfinished()]
        if handles:
            # Wait for the engine to take them over, so the handles returned are current
            # (a resumed timed-out task is running again, not still "timed out").
            self._engine.run(self._resume([h.local_id for h in handles]), timeout=60)
        return handles

    @property
    def is_sandbox(self) -> bool:
        """True when this session talks to a sandbox it started (``Session.sandbox()``)."""
        return self._sandbox is not None

    def _resume_one(self, task: Task) -> bool:
        """Poll one ended-but-resumable task again (timed out, abandoned, unavailable)."""
        self._check_open()
        record = task.record
        if record.task_id is None or not (record.status.is_resumable or record.status.is_active):
            return False
        self.settings.require_key()
        if self._engine.in_engine_thread():
            asyncio.get_running_loop().create_task(self._resume([task.local_id]))
        else:
            self._engine.run(self._resume([task.local_id]), timeout=60)
        return True

    def get(self, task_id: str) -> Task:
        """The task with this server id or local id (from this store)."""
        record = self._store.get_by_task_id(task_id) or self._store.get(task_id)
        if record is None:
            raise KeyError(f"no task {task_id!r} in {self.data_dir}")
        return self._handle_for(record)

    def last(self, *, succeeded: bool = True) -> Task | None:
        """The last task this session handed out; before any, the newest in the store.

        Preferring this session's own tasks keeps a re-run notebook stable: its cells reuse
        their earlier results, so "the last one" is the same task as on the first run.

        Args:
            succeeded: only tasks that succeeded (the default), or any task, including one
                still running.
        """
        with self._handles_lock:
            own = list(self._handles.values())
        for task in reversed(own):
            if not succeeded or task.status is TaskStatus.SUCCESS:
                return task
        history = self._history.filter(status=TaskStatus.SUCCESS) if succeeded else self._history
        latest = history.latest(1)
        return self._handle_for(latest[0]) if latest else None

    def wait_all(self, timeout: float | None = None) -> list[Task]:
        """Block until every task this session handed out has ended.

        Raises:
            TimeoutError: ``timeout`` seconds passed first; the tasks go on.
            RuntimeError: the session was closed (before or during the wait) with a task
                unfinished; it stays in the store, and ``resume()`` of a new session picks
                it up.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in self.tasks:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            task.wait(remaining)
        return self.tasks

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics and benchmarks: queries sent, tasks being polled."""
        loop = self._poll_loop
        return {
            "queries": loop.requests if loop is not None else 0,
            "queries_by_task": dict(loop.requests_by_task) if loop is not None else {},
            "polling": len(self._scheduler),
            "watching": len(self._watched),
            "request_rate": loop.limiter.rate if loop is not None else None,
        }

    def subscribe(self, listener: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``listener(event)`` on every change of any task (:class:`TaskEvent`: the
        handle and the immutable record of that change), from a background thread.

        Returns a function that unsubscribes. Views use this to update their output slots.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def task_for(self, local_id: str) -> Task | None:
        """The handle this session has handed out for ``local_id``, or ``None``."""
        with self._handles_lock:
            return self._handles.get(local_id)

    def run_in_background(self, work: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the session's engine thread (views: slow work off the kernel).

        Raises:
            RuntimeError: the engine is stopping (interpreter exit); the coroutine is closed.
        """
        try:
            return self._engine.submit(work)
        except RuntimeError:
            work.close()
            raise

    def call_in_background(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` soon on the engine thread (e.g. ``task.cancel`` from a widget
        callback, which must not wait for the engine)."""
        self._engine.call_soon(fn)

    def resolve_reference(self, ref: str, *, wait: float = 600.0) -> object:
        """What a typed reference names: ``@last`` (this session's last successful task; a
        last task still running is waited for, up to ``wait`` seconds), ``@<id>`` (a task
        of the history by server or local id), anything else as given (a URL or a path).

        Raises:
            ValidationError: no such task, or none succeeded yet; says which.
        """
        if ref == "@last":
            last = self.last(succeeded=False)
            if last is not None and not last.done():
                # The reference must exist before the next submit: wait for the previous one.
                try:
                    last.wait(wait)
                except TimeoutError:
                    raise ValidationError(f"@last: {last.id} is still running") from None
            if last is None or last.status is not TaskStatus.SUCCESS:
                last = self.last()
            if last is None:
                raise ValidationError("@last: no successful task yet")
            return last
        if ref.startswith("@"):
            try:
                return self.get(ref[1:])
            except KeyError:
                raise ValidationError(f"{ref}: no such task in the history") from None
        return ref

    def add_wait_hook(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Call ``hook()`` after every blocking wait, on the waiting thread (views bring
        their outputs to the final state from the thread running the cell: headless runners
        keep only updates sent from there). Returns a function that removes it."""
        self._flush_hooks.append(hook)

        def remove() -> None:
            if hook in self._flush_hooks:
                self._flush_hooks.remove(hook)

        return remove

    def _after_wait(self) -> None:
        """A blocking wait has ended: views bring their outputs to the current state from
        this thread, the one running the cell. Updates sent from the engine thread carry
        another cell's parent header, and headless runners (nbclient, papermill) drop them."""
        if self._engine.in_engine_thread():
            return
        for hook in list(self._flush_hooks):
            try:
                hook()
            except Exception:  # a view's failure must not break a wait
                logger.exception("a view could not flush its outputs")

    def close(self) -> None:
        """Stop polling (unfinished tasks stay resumable), close connections and the store.

        A wait on an unfinished task of this session (in any thread) then ends at once with
        a ``RuntimeError`` saying how to resume it.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        resources = self._res
        self._engine.remove_closer(resources.aclose)
        try:
            if self._engine.in_engine_thread():
                resources.close_soon()  # from a done callback: blocking here would deadlock
                return
            if self._engine.running:
                try:
                    self._engine.run(resources.aclose(), timeout=5)
                except (concurrent.futures.TimeoutError, RuntimeError):
                    logger.debug("session close did not finish in time")
            resources.close_now()
        finally:
            # Nothing moves the unfinished tasks on any more: wake whoever waits on them.
            for handle in self.tasks:
                handle._session_closed()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        key = "none" if self.settings.api_key is None else self.settings.api_key.fingerprint
        return f"<Session {self.settings.base_url} key={key} data_dir={str(self.data_dir)!r}>"

    @classmethod
    def sandbox(
        cls,
        *,
        time_scale: float = 0.2,
        data_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Session:
        """A session talking to a local sandbox server started for it (no key, no network).

        The sandbox draws images offline; its history is kept apart from real tasks
        (in ``<data dir>/sandbox``, where the data dir is ``NANOBANANA_DATA_DIR`` or the
        per-user default, unless ``data_dir`` is given). Closing the session
        stops the server.
        """
        server = start_sandbox(time_scale)
        try:
            if data_dir is None:
                base = Settings.resolve(colab=lambda name: None).data_dir or default_data_dir()
                data_dir = Path(base) / "sandbox"
            directory = data_dir
            kwargs.setdefault("poll_policy", PollPolicy().scaled(time_scale))
            # The sandbox serves its images from 127.0.0.1: the one place local result URLs
            # are allowed without being asked for (a loopback base URL alone does not).
            settings = Settings.resolve(
                api_key=server.api_key,
                base_url=server.url,
                data_dir=directory,
                model=kwargs.pop("model", None),
                allow_local_urls=True,
            )
            session = cls(settings=settings, **kwargs)
        except BaseException:
            server.stop()
            raise
        session._res.sandbox = server  # stopped when the session closes
        return session

    # -- starting tasks ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Session is closed")

    def _build_request(
        self,
        prompt: str,
        model: str | None,
        images: object,
        aspect_ratio: str | None,
        image_size: str | None,
        callback_url: str | None,
    ) -> GenerationRequest:
        self._check_open()
        request = GenerationRequest(
            prompt=prompt,
            model=model or self.settings.model,
            images=to_references(images),
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            callback_url=callback_url,
        ).validated()
        self.settings.require_key()
        return request

    def _start(
        self,
        request: GenerationRequest,
        *,
        force: bool,
        slots: asyncio.Semaphore | None = None,
        variant: int = 0,
    ) -> Task:
        fingerprint = request.fingerprint(variant)
        local_id = uuid.uuid4().hex
        if self._receiver is not None and request.callback_url is None:
            request = dataclasses.replace(request, callback_url=self._receiver.url_for(local_id))
        with self._handles_lock:
            if not force:
                existing = self._store.find_reusable(fingerprint)
                if existing is not None:
                    logger.info(
                        "reusing task %s for an identical request (force=True sends it again)",
                        existing.task_id or existing.local_id,
                    )
                    handle = self._handle_for(existing)
                    handle._mark_reused()
                    if existing.status.is_resumable and not self._closed:
                        # Timed out or unavailable: look again (free) instead of paying again;
                        # running from here on, so a wait() on the handle waits for that look.
                        self._set(
                            existing.local_id,
                            status=TaskStatus.PENDING,
                            error=None,
                            finished_at=None,
                        )
                        self._resume_in_background([existing.local_id])
                    return handle
            now = time.time()
            record = TaskRecord(
                local_id=local_id,
                status=TaskStatus.WAITING_TO_SEND,
                prompt=request.prompt,
                model=request.model,
                fingerprint=fingerprint,
                created_at=now,
                updated_at=now,
                aspect_ratio=request.aspect_ratio,
                image_size=request.image_size,
                callback_url=None if self._receiver is not None else request.callback_url,
                references=tuple(_describe_reference(r) for r in request.images),
            )
            # The intent is durable before anything is sent.
            self._store.insert(record)
            handle = self._register(record)
        self._engine.submit(self._submit(record.local_id, request, slots)).add_done_callback(
            _report_failure
        )
        self._notify(handle)
        return handle

    def _register(self, record: TaskRecord) -> Task:
        with self._handles_lock:
            handle = self._handles.get(record.local_id)
            if handle is None:
                handle = Task(self, record)
                self._handles[record.local_id] = handle
            return handle

    def _handle_for(self, record: TaskRecord) -> Task:
        """A handle for a stored record, followed to its end: an active one not polled
        anywhere gets polled; one another writer has not sent yet is watched in the store."""
        with self._handles_lock:
            known = record.local_id in self._handles
            handle = self._register(record)
        if not known and not self._closed:
            if record.status.is_active:
                self._resume_in_background([record.local_id])
            elif record.status.is_local:
                # Another session or kernel is sending it (a paced map(), a slow submit):
                # only its writer may send it, so follow the row until it ends.
                self._engine.call_soon(self._watch, record.local_id)
        return handle

    def _resume_in_background(self, local_ids: list[str]) -> None:
        """Resume polling on the engine; if that fails, no handle is left waiting for ever."""

        def done(future: concurrent.futures.Future[Any]) -> None:
            _report_failure(future)
            if future.cancelled() or future.exception() is None:
                return
            for local_id in local_ids:
                handle = self._handles.get(local_id)
                if handle is not None and not handle.done() and local_id not in self._scheduler:
                    self._end_in_memory(
                        local_id,
                        status=TaskStatus.TIMED_OUT,
                        error=f"polling could not be resumed ({future.exception()}); "
                        "task.resume() tries again",
                        finished_at=time.time(),
                    )

        self._engine.submit(self._resume(local_ids)).add_done_callback(done)

    def _watch(self, local_id: str) -> None:
        """Follow a row another writer moves on, re-reading it often (engine thread)."""
        self._ensure_engine_objects()
        if local_id not in self._watched:
            self._watched.add(local_id)
            self._watch_wake.set()

    # -- engine side ----------------------------------------------------------------

    def _ensure_engine_objects(self) -> tuple[AsyncClient, PollLoop]:
        res = self._res
        if res.client is None:
            res.client = AsyncClient(
                settings=self.settings,
                transport=self._transport,
                max_connections=max(8, self._caps[1] + self._caps[2] + 4),
                on_retry=_weak_method(self._on_client_retry),
            )
        if res.poll_loop is None:
            rate, in_flight, submits = self._caps
            res.poll_loop = PollLoop(
                self._scheduler,
                res.client.query,
                _weak_async_method(self._on_decision),
                max_per_second=rate,
                max_in_flight=in_flight,
            )
            self._submit_slots = asyncio.Semaphore(submits)
            self._res.maintenance = asyncio.get_running_loop().create_task(
                _maintain(weakref.ref(self), self._lease_ttl / 3)
            )
        return res.client, res.poll_loop

    def _on_client_retry(self, error: APIError, delay: float) -> None:
        if not isinstance(error, RateLimitError):
            return
        # The server says this session is too fast: slow its queries and its submits.
        self._submit_limiter.on_rate_limited(time.monotonic(), error.retry_after)
        if self._poll_loop is not None:
            self._poll_loop.on_rate_limited(error.retry_after)

    def _set(self, local_id: str, **changes: Any) -> TaskRecord:
        """Write a change to the store (never downgrading) and tell the handle and views."""
        handle = self._handles.get(local_id)
        current = handle.record if handle is not None else self._store.get(local_id)
        if current is None:
            raise KeyError(local_id)
        stored = self._store.update(current.replace(updated_at=time.time(), **changes))
        if handle is not None:
            handle._update(stored)
            self._notify(handle)
        return stored

    def _notify(self, handle: Task) -> None:
        event = TaskEvent(handle, handle.record)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a view's failure must not stop the engine
                logger.exception("a session listener failed")

    async def _submit(
        self, local_id: str, request: GenerationRequest, slots: asyncio.Semaphore | None
    ) -> None:
        client, _ = self._ensure_engine_objects()
        assert self._submit_slots is not None
        current = asyncio.current_task()
        if current is not None:
            self._submitting.add(current)
            current.add_done_callback(self._submitting.discard)
        sent = False
        try:
            # A map() call's own bound (if any), then the session's, then its rate cap.
            async with slots or contextlib.nullcontext(), self._submit_slots:
                await self._submit_limiter.acquire()
                # Durable before the request leaves: a crash from here on is submit_unknown,
                # before it, not_sent (Store.recover_interrupted).
                if self._set(local_id, status=TaskStatus.SUBMITTING).status is not (
                    TaskStatus.SUBMITTING
                ):
                    return  # another process settled it as not sent: it stays unsent
                sent = True
                task_id = await client.submit(request, idempotency_key=local_id)
        except asyncio.CancelledError:
            if not sent:  # closed while it waited for its turn: nothing left this machine
                self._settle(
                    local_id,
                    status=TaskStatus.NOT_SENT,
                    error="the session closed before this request was sent (nothing was "
                    "charged): generate it again",
                    finished_at=time.time(),
                )
                raise
            # The session closed with this submit in flight: its outcome is unknown.
            self._settle(
                local_id,
                status=TaskStatus.SUBMIT_UNKNOWN,
                error=f"the session closed while the submit was in flight: {SUBMIT_UNKNOWN_HELP}",
                finished_at=time.time(),
            )
            raise
        except SubmitOutcomeUnknownError as exc:
            why = _message(exc.cause) if exc.cause else exc.message
            if exc.task_id is not None:
                # The answer named a task that may be paid for: say so at once, wherever the
                # row ends up (never the key: log lines are redacted).
                logger.warning(
                    "task %s: the submit's answer named task id %s: %s", local_id, exc.task_id, why
                )
                why = f"{why} (the answer named task id {exc.task_id})"
            unknown: dict[str, Any] = {
                "status": TaskStatus.SUBMIT_UNKNOWN,
                "error": f"{why}: {SUBMIT_UNKNOWN_HELP}",
                "finished_at": time.time(),
            }
            try:
                # The answer named the task: keep its id with the row.
                self._set(local_id, task_id=exc.task_id, **unknown)
            except ValueError:  # another row holds that id: it stays in the error text only
                self._settle(local_id, **unknown)
            except (sqlite3.Error, OSError, RuntimeError):
                self._settle(local_id, task_id=exc.task_id, **unknown)
            # A callback that came while the submit hung names the task: use it (W8).
            hint = self._early_hints.pop(local_id, None)
            if hint is not None:
                self._on_hint(local_id, hint)
            return
        except NanoBananaError as exc:
            self._settle(
                local_id, status=TaskStatus.NOT_SENT, error=exc.message, finished_at=time.time()
            )
            return
        except Exception as exc:  # our own bug (or the store's): be safe, never re-send
            logger.exception("unexpected error while submitting")
            if sent:
                status, error = TaskStatus.SUBMIT_UNKNOWN, SUBMIT_UNKNOWN_HELP
            else:
                status, error = TaskStatus.NOT_SENT, "it was not sent, nothing was charged"
            self._settle(
                local_id,
                status=status,
                error=f"unexpected {type(exc).__name__}: {error}",
                finished_at=time.time(),
            )
            return
        self._submit_limiter.on_success()
        accepted = {"task_id": task_id, "status": TaskStatus.PENDING, "submitted_at": time.time()}
        try:
            record = self._set(local_id, **accepted)
        except (sqlite3.Error, OSError, ValueError) as exc:
            saved = self._submitted_unsaved(local_id, accepted, exc)
            if saved is None:
                return
            record = saved
        if record.status.is_active:
            poll_now = local_id in self._early_hints
            self._early_hints.pop(local_id, None)
            try:
                self._track(record, poll_now=poll_now)
            except (sqlite3.Error, OSError) as exc:
                # Stored with its id: lease maintenance takes it up on its next round.
                logger.warning(
                    "task %s (%s): could not start polling yet: %s", local_id, task_id, exc
                )
                self._watch(local_id)

    def _settle(self, local_id: str, **changes: Any) -> None:
        """Write how a submit ended; if the store refuses, still end the handle, and log it."""
        try:
            self._set(local_id, **changes)
        except (sqlite3.Error, OSError, ValueError, RuntimeError) as exc:  # Runtime: closed
            logger.warning(
                "task %s: could not save that it ended %s: %s",
                local_id,
                changes["status"].value,
                exc,
            )
            self._end_in_memory(local_id, **changes)

    def _end_in_memory(self, local_id: str, **changes: Any) -> None:
        handle = self._handles.get(local_id)
        if handle is not None:
            handle._update(handle.record.replace(updated_at=time.time(), **changes))
            self._notify(handle)

    def _submitted_unsaved(
        self, local_id: str, accepted: dict[str, Any], exc: BaseException
    ) -> TaskRecord | None:
        """The API accepted the request as a task, but the store did not take its id.

        Either another row holds that id already (the store's UNIQUE index: a de-duplicating
        proxy or gateway answered with an earlier task), or the write failed (disk full,
        database locked). The task was paid for and is never sent again. The id goes into a
        log line at once (never the key). A failed write is tried once more; if it is saved
        then, the stored record is returned and the task is polled as usual. Otherwise the
        handle ends ``submit_unknown`` with the id on it and in its error, written to the row
        as far as the store allows, so the user can find the task.
        """
        task_id: str = accepted["task_id"]
        logger.warning(
            "task %s: submitted as task id %s, but not saved: %s", local_id, task_id, exc
        )
        holder = None
        with contextlib.suppress(sqlite3.Error, OSError):
            holder = self._store.get_by_task_id(task_id)
        duplicate = holder is not None and holder.local_id != local_id
        if duplicate:
            assert holder is not None
            why = (
                f"the API answered with task id {task_id}, which task {holder.local_id} of "
                "this history already holds (a proxy or gateway that de-duplicates requests "
                f"may have answered with an earlier task); look at task {task_id} there or "
                "in your defapi.org task list. This request was not sent again"
            )
        else:
            why = (
                f"the API accepted the request as task {task_id}, but the history could not "
                f"record it ({exc}); it was not sent again. Free some space or close what "
                f"locks the store; the task is in your defapi.org task list as {task_id}"
            )
        if not duplicate:
            try:
                return self._set(local_id, **accepted)
            except (sqlite3.Error, OSError, ValueError) as again:
                logger.warning("task %s (%s): saving failed again: %s", local_id, task_id, again)
        changes: dict[str, Any] = {
            "status": TaskStatus.SUBMIT_UNKNOWN,
            "error": why,
            "submitted_at": time.time(),
            "finished_at": time.time(),
        }
        # The id in its column where the store can keep it (never two rows with one id),
        # else at least in the error text.
        for extra in ({} if duplicate else {"task_id": task_id}, {}):
            try:
                self._set(local_id, **changes, **extra)
                break
            except (sqlite3.Error, OSError, ValueError) as again:
                logger.warning(
                    "task %s (%s): could not save submit_unknown: %s", local_id, task_id, again
                )
        # The handle shows the id in any case.
        self._end_in_memory(local_id, task_id=task_id, **changes)
        return None

    def _track(
        self, record: TaskRecord, *, poll_now: bool = False, fresh_deadline: bool = False
    ) -> None:
        """Start polling a submitted task, if this session can hold its lease."""
        assert record.task_id is not None
        _, poll_loop = self._ensure_engine_objects()
        if not self._store.acquire_lease(record.local_id, self._owner, self._lease_ttl):
            self._watch(record.local_id)
            return
        self._watched.discard(record.local_id)
        now = time.monotonic()
        age = max(0.0, time.time() - (record.submitted_at or record.created_at))
        started = now - age
        deadline = (now if fresh_deadline else started) + self.settings.deadline
        self._scheduler.add(
            record.local_id,
            record.task_id,
            record.model,
            now=now,
            started=started,
            deadline=max(deadline, now),
            poll_now=poll_now,
        )
        poll_loop.wake()

    def _refresh(self, record: TaskRecord) -> None:
        """Show a handle what the store now says (another kernel may have moved it on)."""
        handle = self._handles.get(record.local_id)
        if handle is not None and handle.record != record:
            handle._update(record)
            self._notify(handle)

    async def _resume(self, local_ids: Sequence[str]) -> None:
        self._ensure_engine_objects()
        for local_id in local_ids:
            if local_id in self._scheduler:
                continue
            record = self._store.get(local_id)
            if record is None:
                continue
            self._refresh(record)
            if record.task_id is None:
                continue
            if record.status.is_terminal:
                if not record.status.is_resumable:
                    continue
                record = self._set(
                    local_id, status=TaskStatus.PENDING, error=None, finished_at=None
                )
            self._track(record, poll_now=True, fresh_deadline=True)

    async def _on_decision(self, local_id: str, decision: Decision) -> None:
        if decision.action is Action.CONTINUE:
            await self._record_decision(local_id, decision)
            return
        try:
            await self._record_decision(local_id, decision)
        except (sqlite3.Error, OSError) as exc:
            self._end_unsaved(local_id, exc)
        finally:
            # The task left the scheduler: whatever happened, its lease goes with it.
            with contextlib.suppress(sqlite3.Error, OSError):
                self._store.release_lease(local_id, self._owner)
            if self._receiver is not None:
                self._receiver.finished(local_id)

    def _end_unsaved(self, local_id: str, exc: BaseException) -> None:
        """The final answer could not be saved (disk full, store broken): say so, keep it resumable.

        The store still holds the task as unfinished, so ``resume()`` (here or after a
        restart) polls it again and saves the result then; nothing is charged again.
        """
        logger.warning("task %s: could not save its result: %s", local_id, exc)
        handle = self._handles.get(local_id)
        if handle is None:
            return
        handle._update(
            handle.record.replace(
                status=TaskStatus.UNAVAILABLE,
                error=(
                    f"the task finished but its result could not be saved ({exc}); free some "
                    "space, then task.resume() or session.resume() fetches it again at no cost"
                ),
                finished_at=time.time(),
            )
        )
        self._notify(handle)

    async def _record_decision(self, local_id: str, decision: Decision) -> None:
        snapshot = decision.snapshot
        now = time.time()
        action = decision.action
        if action is Action.CONTINUE:
            handle = self._handles.get(local_id)
            if snapshot is not None and handle is not None:
                rec = handle.record
                if snapshot.status is not rec.status or snapshot.consumed != rec.consumed:
                    self._set(
                        local_id,
                        status=snapshot.status,
                        consumed=snapshot.consumed,
                        polls=decision.polls,
                    )
            return
        if action is Action.FINISHED and snapshot is not None:
            if snapshot.status is TaskStatus.SUCCESS:
                await self._collect(local_id, snapshot, decision.polls)
            else:
                self._set(
                    local_id,
                    status=TaskStatus.FAILED,
                    error=snapshot.reason or "the server reports the task failed (no reason given)",
                    consumed=snapshot.consumed,
                    polls=decision.polls,
                    finished_at=now,
                )
        elif action is Action.NO_RESULT and snapshot is not None:
            # The server said success, but no answer carried an image or text: not final
            # (the result may still be written), so resumable, with what came back.
            self._set(
                local_id,
                status=TaskStatus.UNAVAILABLE,
                error=(
                    "the server reported success but its answer carried no image or text "
                    f"({decision.error}); nothing more was charged: task.resume() (or "
                    "session.resume()) looks again at no cost; generate(..., force=True) pays "
                    f"for a new one. The server's result was: {snapshot.raw_result}"
                ),
                consumed=snapshot.consumed,
                polls=decision.polls,
                finished_at=now,
            )
        elif action is Action.TIMED_OUT:
            why = f" ({decision.error})" if decision.error else ""
            self._set(
                local_id,
                status=TaskStatus.TIMED_OUT,
                error=(
                    f"not finished after {self.settings.deadline:g} s{why}; the server may "
                    "still finish it: session.resume() (or %nanobanana resume) picks it up"
                ),
                polls=decision.polls,
                finished_at=now,
            )
        elif action is Action.NOT_FOUND:
            # A 404 is no final answer: the server may still know, finish and charge the
            # task. Polling stops, the task stays resumable; "failed" is only ever what the
            # server says.
            self._set(
                local_id,
                status=TaskStatus.TIMED_OUT,
                error=(
                    f"polling stopped: {decision.error}. The task may have expired, or the "
                    "server may still finish (and charge) it; it was not marked failed. "
                    "task.resume() (or session.resume()) looks again at no cost"
                ),
                polls=decision.polls,
                finished_at=now,
            )
        elif action is Action.AUTH_FAILED:
            self._stop_all_polling(
                f"polling stopped: {decision.error}. Fix the key, then session.resume()",
                first=local_id,
            )

    def _on_hint(self, local_id: str, task_id: str | None) -> None:
        """A callback arrived: confirm by querying now (engine loop). The body is not trusted."""
        if local_id in self._scheduler:
            entry_task = self._handles[local_id].task_id if local_id in self._handles else None
            if task_id is not None and entry_task is not None and task_id != entry_task:
                logger.warning("ignoring a callback whose task_id does not match its URL")
                return
            if self._scheduler.poke(local_id, time.monotonic()) and self._poll_loop:
                self._poll_loop.wake()
            return
        record = self._store.get(local_id)
        if record is None:
            return
        if record.status is TaskStatus.SUBMITTING:
            self._early_hints[local_id] = task_id
        elif record.status is TaskStatus.SUBMIT_UNKNOWN and task_id is not None:
            # The submit's answer was lost, but the callback names the task: reconcile once
            # the API confirms it (the body alone is not trusted).
            reconcile = asyncio.get_running_loop().create_task(self._reconcile(local_id, task_id))
            self._background.add(reconcile)
            reconcile.add_done_callback(self._background.discard)

    async def _reconcile(self, local_id: str, task_id: str) -> None:
        """Bind a lost submission to the task its callback named, if the API knows that task.

        Nothing is bound when another row of this store already holds the task (a replayed or
        forged callback), or when this account's API does not know it (404 or any error).
        """
        client, _ = self._ensure_engine_objects()
        if not self._holds_only(local_id, task_id):
            logger.warning("ignoring a callback naming a task another submission holds")
            return
        try:
            await client.query(task_id)
        except (APIError, ValueError) as exc:
            logger.warning("ignoring a callback naming a task the API does not confirm: %s", exc)
            return
        # Checked again after the await: the submit, a resume or another callback may have
        # settled either row meanwhile.
        record = self._store.get(local_id)
        if record is None or record.status is not TaskStatus.SUBMIT_UNKNOWN:
            return
        if not self._holds_only(local_id, task_id):
            return
        self._register(record)
        recovered = self._set(local_id, task_id=task_id, status=TaskStatus.PENDING, error=None)
        if recovered.status.is_active:
            self._track(recovered, poll_now=True, fresh_deadline=True)

    def _holds_only(self, local_id: str, task_id: str) -> bool:
        """True when no row but ``local_id``'s holds ``task_id`` (a refusal may have named it)."""
        holder = self._store.get_by_task_id(task_id)
        return holder is None or holder.local_id == local_id

    def _stop_all_polling(self, message: str, *, first: str) -> None:
        """The key was refused: stop every poll (each would fail the same way)."""
        keys = [first, *[k for k in list(self._scheduler.keys()) if k != first]]
        for key in keys:
            self._scheduler.remove(key)
            self._set(key, status=TaskStatus.TIMED_OUT, error=message, finished_at=time.time())
            self._store.release_lease(key, self._owner)

    async def _collect(self, local_id: str, snapshot: Any, polls: int) -> None:
        """Fetch every image of a successful task into the image store, at once.

        Each image streams into a temporary file of the store (hashed and size-checked as it
        arrives) and is checked and renamed into place from there, so no image sits in memory
        whole; at most ``IMAGE_FETCHES`` of the session's images are fetched and decoded at
        a time, which bounds the memory a task with many large results can take.
        """
        client, _ = self._ensure_engine_objects()
        loop = asyncio.get_running_loop()
        if self._image_slots is None:
            self._image_slots = asyncio.Semaphore(IMAGE_FETCHES)
        slots = self._image_slots

        async def fetch(ref: str) -> ImageRecord:
            url = None if ref.startswith("data:") else ref
            async with slots:
                with self._images.incoming() as incoming:
                    await client.download_to(ref, incoming)
                    return await loop.run_in_executor(
                        None, functools.partial(self._images.put_incoming, incoming, url=url)
                    )

        refs = list(dict.fromkeys(snapshot.images))  # duplicates fetched once
        results = await asyncio.gather(*(fetch(r) for r in refs), return_exceptions=True)
        images = tuple(r for r in results if isinstance(r, ImageRecord))
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, (NanoBananaError, ValueError, OSError)):
                logger.error("task %s: fetching an image failed", local_id, exc_info=failure)
        status = TaskStatus.SUCCESS
        error = None
        if failures:
            status = TaskStatus.UNAVAILABLE
            message = _message(failures[0])
            error = f"{len(failures)} of {len(refs)} image(s) could not be fetched: {message}"
        elif not images and not snapshot.texts:
            # The scheduler only finishes a success that carries something; be safe anyway:
            # a success with nothing in hand is never final.
            status = TaskStatus.UNAVAILABLE
            error = "the server reported success but returned no images; task.resume() looks again"
        self._set(
            local_id,
            status=status,
            images=images,
            result_urls=tuple(r for r in refs if not r.startswith("data:")),
            texts=snapshot.texts,
            consumed=snapshot.consumed,
            error=error,
            polls=polls,
            finished_at=time.time(),
        )

    def _maintain_leases(self) -> None:
        """Renew leases of polled tasks; follow tasks another kernel holds; take them over
        when their holder goes (a round of :func:`_maintain`, every third of the lease)."""
        polled = self._scheduler.keys()
        if polled:
            held = self._store.renew_leases(self._owner, polled, self._lease_ttl)
            for lost in set(polled) - held:
                self._scheduler.remove(lost)
                self._watched.add(lost)
        unsent = []
        for local_id in list(self._watched):
            record = self._follow(local_id)
            if record is None:
                continue
            if record.task_id is not None:
                self._track(record, poll_now=True)
            elif record.status.is_local:
                unsent.append(local_id)
        # A row another writer had not sent: if that writer stopped (a killed kernel), the
        # store settles the row (not_sent, or submit_unknown if it was sending), as it does
        # when it opens, and the next round shows that.
        if unsent and self._store.recover_interrupted(unsent):
            self._follow_watched()

    def _follow_watched(self) -> None:
        """Show every followed handle what the store says now (every :data:`WATCH_INTERVAL`)."""
        for local_id in list(self._watched):
            self._follow(local_id)

    def _follow(self, local_id: str) -> TaskRecord | None:
        """Re-read one followed row into its handle; stop following it once it has ended."""
        record = self._store.get(local_id)
        if record is not None:
            self._refresh(record)
        if record is None or record.status.is_terminal:
            self._watched.discard(local_id)
            return None
        return record

    def _abandon(self, task: Task) -> bool:
        if task.done() or task.status.is_local:
            return False

        async def abandon() -> bool:
            self._scheduler.remove(task.local_id)
            self._watched.discard(task.local_id)
            self._set(
                task.local_id,
                status=TaskStatus.ABANDONED,
                error=(
                    "cancelled locally; the API has no cancel, so the server may still "
                    "finish and charge it; task.resume() picks it up again"
                ),
                finished_at=time.time(),
            )
            self._store.release_lease(task.local_id, self._owner)
            return True

        if self._engine.in_engine_thread():
            asyncio.get_running_loop().create_task(abandon())
            return True
        return self._engine.run(abandon(), timeout=10)


_default: Session | None = None
_default_lock = threading.Lock()


def get_default_session() -> Session:
    """The session the magic and the panel use, built on first use (never at import)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Session()
        return _default


def set_default_session(session: Session | None) -> Session | None:
    """Replace the default session (e.g. with ``Session.sandbox()``); returns the old one."""
    global _default
    with _default_lock:
        old, _default = _default, session
        return old
