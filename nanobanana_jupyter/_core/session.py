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
import logging
import os
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.owners import new_lease_owner
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import GenerationRequest, TaskStatus, check_prompt
from nanobanana_jupyter._wire.settings import HISTORY_FILE, SecretKey, Settings, default_data_dir

from .balance import BalanceCache
from .budget import BudgetStatus, as_budget
from .engine import Engine, get_engine
from .events import TaskEvent
from .grid import Grid, plan_grid
from .lookup import find_task, resolve_reference
from .parts import Parts
from .poll_policy import PollPolicy
from .references import to_references
from .resources import Resources
from .sandboxed import sandbox_settings, start_sandbox
from .scheduler import PollScheduler
from .spending import SessionCredits, summarize
from .task import Task
from .task_list import TaskList

__all__ = ["MAX_SAMPLES", "WEBHOOK_BACKUP_POLICY", "Session", "check_samples"]

logger = logging.getLogger("nanobanana_jupyter")

# How many samples one generate(n=...) may start: every view's -n.
MAX_SAMPLES = 16

# With callbacks on, polls are only a backup for a callback that never comes: the first at
# 90 s (past most tasks' whole life, so a working callback costs no poll), then every
# 45-60 s. A lost callback is noticed within about 90 s (benchmarks: webhook requests/task).
WEBHOOK_BACKUP_POLICY = PollPolicy(
    initial_delay=90.0, age_fraction=0.5, min_interval=10.0, max_interval=60.0, min_samples=10**9
)


def check_samples(n: object) -> None:
    """Refuse a number of samples outside 1..:data:`MAX_SAMPLES` (every view's ``-n``).

    Raises:
        ValidationError: says the bounds.
    """
    if isinstance(n, bool) or not (isinstance(n, int) and 1 <= n <= MAX_SAMPLES):
        raise ValidationError(f"n must be a whole number from 1 to {MAX_SAMPLES}, not {n!r}")


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
        budget: credits this session may spend at most, counting what is in flight (see
            :attr:`budget`); default none.
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
        budget: Decimal | float | str | None = None,
    ) -> None:
        limit = as_budget(budget)  # a bad budget is refused before anything starts
        if settings is None:
            settings = Settings.resolve(
                api_key=api_key, base_url=base_url, data_dir=data_dir, model=model
            )
        self.settings = settings
        self.data_dir = Path(settings.data_dir or default_data_dir()).expanduser()
        self._store = Store(self.data_dir / HISTORY_FILE)
        self._images = ImageStore(self.data_dir / "images")
        self._engine = engine or get_engine()
        for name, value in (
            ("max_requests_per_second", max_requests_per_second),
            ("max_submits_per_second", max_submits_per_second),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of requests, not {value!r}")
        if poll_policy is None and webhook:
            poll_policy = WEBHOOK_BACKUP_POLICY
        self._scheduler = PollScheduler(poll_policy)
        self._history = History(self._store)
        self._flush_hooks: list[Callable[[], object]] = []  # views' flush (see after_wait)
        self._res = res = Resources(
            self._engine,
            self._store,
            self._scheduler,
            new_lease_owner(),
            settings=settings,
            transport=transport,
            caps=(max_requests_per_second, max_in_flight, max_concurrent_submits),
        )
        # The parts, each owning one job (see parts.py).
        self._parts = parts = Parts(
            self,
            res,
            self._images,
            lease_ttl=lease_ttl,
            max_submits_per_second=max_submits_per_second,
            webhook=webhook,
            webhook_url=webhook_url,
        )
        self._events, self._registry, self._tracker = parts.events, parts.registry, parts.tracker
        self._submitter = parts.submitter
        self._submitter.budget.limit = limit
        self._balance = BalanceCache(self._fetch_balance, self.run_in_background)
        # Neither the engine nor the finalizer refers to the session (only to its resources):
        # a session nobody refers to is collected, and the finalizer closes what it held.
        self._engine.add_closer(res.aclose)
        self._finalizer = weakref.finalize(self, Resources.dropped, res)
        self._finalizer.atexit = False  # at exit the engine's closers run instead
        if self._store.recovered:
            count = self._store.recovered
            logger.warning(
                "%s being submitted when a previous session stopped: marked submit_unknown "
                "(maybe charged, never re-sent)",
                "1 task was" if count == 1 else f"{count} tasks were",
            )

    # -- public API ---------------------------------------------------------------

    @property
    def history(self) -> History:
        """Every task in this data directory, oldest first (see :class:`History`)."""
        if self.is_sandbox and not self._history.is_sandbox:
            self._history = History(self._store, sandbox=True)
        return self._history

    @property
    def tasks(self) -> list[Task]:
        """The task handles this session has handed out, oldest first."""
        return self._registry.all()

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
        if n is not None:
            check_samples(n)
        request = self._build_request(prompt, model, images, aspect_ratio, image_size, callback_url)
        if n is None:
            return self._submitter.start(request, force=force, variant=variant)
        self._submitter.check_budget([(request, variant + i) for i in range(n)], force=force)
        batch = [(request, variant + i) for i in range(n)]
        return TaskList(self._submitter.start_many(batch, force=force))

    def generate_like(self, path: str | os.PathLike[str], **overrides: Any) -> Any:
        """Generate again what an image file saved by this package was made from.

        Reads the file's recipe (``nanobanana_jupyter.read_provenance(path)``: prompt, model,
        options, references) and starts it like :meth:`generate`, so an identical earlier
        request is reused unless ``force=True``. References are found again by their hash in
        this session's image store. ``overrides`` change the recipe: any argument of
        :meth:`generate` (``prompt=``, ``images=``, ``n=``, ``force=``...).

        Raises:
            FileNotFoundError: there is no such file.
            ValidationError: the file carries no recipe, or a reference is not to be had
                again (says which, and that ``images=[...]`` replaces them); nothing was sent.
        """
        from .recipes import recipe_of

        return self.generate(**recipe_of(path, self._images, overrides))

    def map(
        self,
        prompts: Iterable[str],
        *,
        concurrency: int = 4,
        force: bool = False,
        **options: Any,
    ) -> TaskList:
        """Start one task per prompt (same options), at most ``concurrency`` submits at once.

        Every prompt is validated before anything is sent, so one bad prompt costs nothing.
        The options (and reference images) are the batch's: checked, and converted, once.

        Raises:
            ValidationError: ``prompts`` is one string (or bytes), not a list of prompts; a
                prompt is bad (the message starts ``prompt 3 of 5:``), or an option is.
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
        prompts = list(prompts)
        requests: list[GenerationRequest] = []
        for i, prompt in enumerate(prompts):
            try:
                if requests:  # the shared options (and references) were checked once
                    requests.append(requests[0].with_prompt(prompt))
                    continue
                check_prompt(prompt)
            except ValidationError as exc:
                if len(prompts) == 1:
                    raise
                raise ValidationError(f"prompt {i + 1} of {len(prompts)}: {exc}") from None
            requests.append(
                self._build_request(
                    prompt,
                    options.get("model"),
                    options.get("images", ()),
                    options.get("aspect_ratio"),
                    options.get("image_size"),
                    options.get("callback_url"),
                )
            )
        # Under a budget the whole batch is checked before any of it is sent.
        self._submitter.check_budget([(request, 0) for request in requests], force=force)
        slots = asyncio.Semaphore(concurrency)
        # One transaction for the whole batch's intents, durable before any is sent.
        batch = [(request, 0) for request in requests]
        return TaskList(self._submitter.start_many(batch, force=force, slots=slots))

    def grid(
        self,
        prompt: str | Sequence[str],
        *,
        model: str | Sequence[str] | None = None,
        aspect_ratio: str | Sequence[str] | None = None,
        image_size: str | Sequence[str] | None = None,
        images: object = None,
        fill: Mapping[str, object] | None = None,
        callback_url: str | None = None,
        concurrency: int = 4,
        force: bool = False,
    ) -> Grid:
        """Start a compare grid: one task per cell of the cartesian product of the axes.

        A list given to ``prompt``, ``model``, ``aspect_ratio``, ``image_size`` or
        ``images`` is an axis (one cell per value); anything else is the same in every cell.
        ``images`` lists references, each value one reference or a list of up to four
        (``images=[photo_a, photo_b]`` is two cells). ``fill`` fills the prompt's
        ``{name}`` fields, a list value being an axis named by its field
        (``grid("a {animal} in a hat", fill={"animal": ["cat", "dog"]})``).

        Every cell's request is checked before anything is sent; the tasks then start as
        ``map()``'s do (the submit caps and pacing; at most ``concurrency`` submits at once)
        and an identical earlier request is reused unless ``force``, so a grid run again
        pays only for its new cells. Shown as a cell's result: a table of previews, rows
        and columns from the first two axes with more than one value, the rest as separate
        tables, each cell with its status and cost, the total under it.

        Raises:
            ValidationError: a cell's request is wrong, an axis is empty or repeats a value,
                or there are more than 64 cells (:data:`MAX_GRID_CELLS`); nothing was sent.
        """
        plan = plan_grid(
            prompt=prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            images=images,
            fill=fill,
        )
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        requests = [
            self._build_request(
                c.prompt, c.model, c.images, c.aspect_ratio, c.image_size, callback_url
            )
            for c in plan.cells
        ]
        plan.check_requests(requests)
        # A grid is a batch: under a budget it fits whole or nothing of it is sent.
        self._submitter.check_budget([(request, 0) for request in requests], force=force)
        slots = asyncio.Semaphore(concurrency)
        tasks = self._submitter.start_many([(r, 0) for r in requests], force=force, slots=slots)
        return Grid(plan, tasks, pretend=self.is_sandbox)

    def resume(self) -> list[Task]:
        """Pick up every unfinished task of the store (after a restart, a timeout, a crash).

        Unfinished: still running, timed out (including polling stopped by 404s for a while)
        or unavailable (success without its image here). Nothing is submitted again.

        Tasks another live kernel is polling are watched, not polled, and taken over if that
        kernel goes away. Returns their handles at once.
        """
        self._res.check_open()
        self.settings.require_key()
        with self._registry.lock:
            handles = [self._registry.register(record) for record in self._store.unfinished()]
        if handles:
            # Wait for the engine to take them over, so the handles returned are current
            # (a resumed timed-out task is running again, not still "timed out").
            self._engine.run(self._tracker.resume([h.local_id for h in handles]), timeout=60)
        return handles

    @property
    def is_sandbox(self) -> bool:
        """True when this session's backend is a sandbox: one it started
        (``Session.sandbox()``), one it was told of (``NANOBANANA_SANDBOX=1``, as
        ``make lab`` and ``make demo`` say), or one whose answers said so. Its credits are
        pretend, and every view says so."""
        res = self._res
        if res.sandbox is not None or self.settings.sandbox:
            return True
        return res.client is not None and res.client.sandbox_seen

    def get(self, task_id: str) -> Task:
        """The task with this server id or local id, or the one whose id starts with it.

        An exact id wins; otherwise a prefix of either id (as short as is unique) names
        the task, the way a card's or the history's short id is typed.

        Raises:
            UnknownTaskError: no task of this data directory has such an id (a ``KeyError``).
            AmbiguousTaskError: several have; its message lists a few (a ``KeyError``).
        """
        return self._tracker.handle_for(find_task(self._store, task_id, self.data_dir))

    def last(self, *, succeeded: bool = True) -> Task | None:
        """The last task this session handed out; before any, the newest in the store.

        Preferring this session's own tasks keeps a re-run notebook stable: its cells reuse
        their earlier results, so "the last one" is the same task as on the first run.

        Args:
            succeeded: only tasks that succeeded (the default), or any task, including one
                still running.
        """
        own = self._registry.all()
        for task in reversed(own):
            if not succeeded or task.status is TaskStatus.SUCCESS:
                return task
        history = self._history.filter(status=TaskStatus.SUCCESS) if succeeded else self._history
        latest = history.latest(1)
        return self._tracker.handle_for(latest[0]) if latest else None

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

    @property
    def credits(self) -> SessionCredits:
        """What this session paid and what it reused (:class:`SessionCredits`): ``spent``
        for the tasks it submitted, ``reused`` for the tasks handed back instead of being
        sent again (a re-run cell, a re-run after a restart). Pretend credits in a sandbox.
        """
        registry = self._registry
        with registry.lock:
            submitted, handed_back = list(registry.submitted), list(registry.handed_back)
        handles = [registry.get(i) for i in submitted], [registry.get(i) for i in handed_back]
        return summarize(
            [t for t in handles[0] if t is not None],
            [t for t in handles[1] if t is not None],
            pretend=self.is_sandbox,
        )

    # -- balance and budget ------------------------------------------------------

    def balance(self, timeout: float = 30.0) -> Decimal:
        """The account's remaining credits (``GET /api/user``), asked now; blocks at most
        ``timeout`` seconds. Pretend credits in a sandbox (:attr:`is_sandbox`).

        Raises:
            MissingAPIKeyError: no key is configured.
            APIError: the service could not be asked, or its answer not read.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        self._res.check_open()
        self.settings.require_key()
        future = self.run_in_background(self._fetch_balance())
        try:
            value: Decimal = future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no balance from the API within {timeout:g} s") from None
        self._balance.heard(value)
        return value

    def last_balance(self) -> Decimal | None:
        """The last balance heard, at once (``None`` before any), for views that must never
        wait; looks again in the background when it is a minute old (see
        :meth:`subscribe_balance` to hear the answer)."""
        if self._res.closed or self.settings.api_key is None:
            return self._balance.value
        return self._balance.peek()

    def subscribe_balance(self, listener: Callable[[Decimal], object]) -> Callable[[], None]:
        """Call ``listener(balance)`` (any thread) on each balance heard; returns the
        unsubscribe function."""
        return self._balance.subscribe(listener)

    async def _fetch_balance(self) -> Decimal:
        res = self._res
        res.check_open()
        client, _ = res.connect()
        current = asyncio.current_task()
        if current is not None:  # closing cancels it before the client closes
            res.background.add(current)
            current.add_done_callback(res.background.discard)
        return await client.balance()

    @property
    def budget(self) -> Decimal | None:
        """Credits this session may spend, counting what is in flight; ``None``: no budget.

        A request that would take spent + in flight (estimated from the costs seen per
        model) past it raises :class:`BudgetExceededError` and is not sent; a batch
        (``map``, ``n=``) is checked whole first. Tasks handed back for an identical
        request cost nothing and are never refused. Set it (``session.budget = 2.5``) or
        remove it (``None``) at any time.
        """
        return self._submitter.budget.limit

    @budget.setter
    def budget(self, value: Decimal | float | str | None) -> None:
        limit = as_budget(value)
        with self._registry.lock:
            self._submitter.budget.limit = limit

    @property
    def budget_status(self) -> BudgetStatus:
        """Spent, in flight (estimated) and left of :attr:`budget`, now."""
        with self._registry.lock:
            return self._submitter.budget.status()

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics and benchmarks: queries sent, tasks being polled, and
        the credits of :attr:`credits` (``credits_spent``, ``credits_reused``, as
        ``Decimal``)."""
        loop = self._res.poll_loop
        credits = self.credits
        return {
            "credits_spent": credits.spent,
            "credits_reused": credits.reused,
            "queries": loop.requests if loop is not None else 0,
            "queries_by_task": dict(loop.requests_by_task) if loop is not None else {},
            "polling": len(self._scheduler),
            "watching": len(self._tracker.watched),
            "request_rate": loop.limiter.rate if loop is not None else None,
        }

    def subscribe(self, listener: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``listener(event)`` on every change of any task (:class:`TaskEvent`: the
        handle and the immutable record of that change), in the order of the changes, from
        the session's delivery thread: never inside the store write, never on the submit path.
        A listener that raises is logged; later events still come.

        Returns a function that unsubscribes. Views use this to update their output slots.
        """
        return self._events.subscribe(listener)

    def subscribe_annotations(
        self, listener: Callable[[str, Annotation], object]
    ) -> Callable[[], None]:
        """Call ``listener(local_id, annotation)`` after each rating, tag or note change made
        in this session (``task.rate``, ``session.history.tag``, ...), on the thread that made
        it, once stored; returns the unsubscribe function. Views use it to redraw a card."""
        return self._store.add_annotation_listener(listener)

    def task_for(self, local_id: str) -> Task | None:
        """The handle this session has handed out for ``local_id``, or ``None``."""
        return self._registry.get(local_id)

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
        return resolve_reference(ref, last=self.last, get=self.get, wait=wait)

    def add_wait_hook(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Call ``hook()`` after every blocking wait, on the waiting thread (views bring
        their outputs to the final state from the thread running the cell: headless runners
        keep only updates sent from there). Returns a function that removes it."""
        self._flush_hooks.append(hook)

        def remove() -> None:
            if hook in self._flush_hooks:
                self._flush_hooks.remove(hook)

        return remove

    # -- what a Task handle asks of its session (TaskOwner) -----------------------

    def in_engine_thread(self) -> bool:
        """For :class:`Task`: True on the engine thread (a blocking wait would deadlock)."""
        return self._engine.in_engine_thread()

    def events_delivered(self) -> None:
        """For :class:`Task`: return once every change event queued so far has reached the
        subscribers (not on the engine thread, which never waits)."""
        if not self._engine.in_engine_thread() and not self._events.drain():
            logger.debug("a session listener is slow; a wait returns without it")

    def after_wait(self) -> None:
        """For :class:`Task`: a blocking wait has ended. The subscribers are given every
        event up to the state the wait saw, then views bring their outputs to the current
        state from this thread, the one running the cell. Updates sent from other threads
        carry another cell's parent header, and headless runners (nbclient, papermill) drop
        them."""
        if self._engine.in_engine_thread():
            return
        self.events_delivered()
        for hook in list(self._flush_hooks):
            try:
                hook()
            except Exception:  # a view's failure must not break a wait
                logger.exception("a view could not flush its outputs")

    def resume_task(self, task: Task) -> bool:
        """For :meth:`Task.resume`: poll an ended-but-resumable task again."""
        return self._tracker.resume_one(task)

    def cancel_task(self, task: Task) -> bool:
        """For :meth:`Task.cancel`: stop polling it and mark it abandoned."""
        return self._tracker.abandon(task)

    def related_tasks(self, task: Task, *, parents: bool) -> list[Task]:
        """For :attr:`Task.parents` and :attr:`Task.children`: handles for the stored tasks
        joined to ``task`` by its references' image hashes."""
        history = self.history
        records = history.parents(task) if parents else history.children(task)
        return [self._tracker.handle_for(record) for record in records]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._res.closed

    def close(self) -> None:
        """Stop polling (unfinished tasks stay resumable), close connections and the store.

        Nothing more is sent: requests still waiting for their turn behind the submit cap end
        ``not_sent`` (nothing charged; generate them again), all in one write; a submit
        whose request has left gets a few seconds for its answer (else ``submit_unknown``).

        A wait on an unfinished task of this session (in any thread) then ends at once with
        a ``RuntimeError`` saying how to resume it.
        """
        if self._res.closed:
            return
        self._finalizer.detach()
        try:
            if self._res.close():
                self._events.close()  # after what closing wrote has been queued
        finally:
            # Nothing moves the unfinished tasks on any more: wake whoever waits on them.
            self._registry.orphan_all()

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
        where = (
            f"sandbox at {self.settings.base_url}" if self.is_sandbox else self.settings.base_url
        )
        return f"<Session {where} key={key} data_dir={str(self.data_dir)!r}>"

    @classmethod
    def sandbox(
        cls,
        *,
        time_scale: float = 0.2,
        data_dir: str | os.PathLike[str] | None = None,
        quiet: bool = False,
        **kwargs: Any,
    ) -> Session:
        """A session talking to a local sandbox server started for it (no key, no network).

        The sandbox draws images offline; its history is kept apart from real tasks
        (in ``<data dir>/sandbox``, where the data dir is ``NANOBANANA_DATA_DIR`` or the
        per-user default, unless ``data_dir`` is given). Closing the session
        stops the server. It says so: one warning line on the package's logger (stderr
        unless logging is configured), unless ``quiet``.
        """
        server = start_sandbox(time_scale)
        try:
            kwargs.setdefault("poll_policy", PollPolicy().scaled(time_scale))
            settings = sandbox_settings(server, data_dir, kwargs.pop("model", None))
            session = cls(settings=settings, **kwargs)
        except BaseException:
            server.stop()
            raise
        session._res.sandbox = server
        if not quiet:
            logger.warning(
                "sandbox mode: a local sandbox at %s draws the images offline; nothing goes "
                "to defapi.org and its credits are pretend. History: %s",
                server.url,
                session.data_dir,
            )
        return session

    # -- starting tasks ----------------------------------------------------------

    def _build_request(
        self,
        prompt: str,
        model: str | None,
        images: object,
        aspect_ratio: str | None,
        image_size: str | None,
        callback_url: str | None,
    ) -> GenerationRequest:
        """The request, checked once, here on the caller's thread (its warnings too)."""
        self._res.check_open()
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
