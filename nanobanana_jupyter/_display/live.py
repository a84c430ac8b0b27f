"""Live outputs: one display slot per task, updated in place, and one throttled ticker.

A view creates the slots on the thread running a cell (:meth:`LiveOutputs.open`); the
session's changes (from its engine thread) and the ticker only update them. The display
functions are handed in by the view (IPython's ``display`` and ``update_display``), so this
layer never imports IPython.

:class:`Ticker` is the one periodic refresher of the views (the magic's running cards, the
panel's coalesced updates). It runs as a coroutine on the session's engine loop
(``Session.run_in_background``) rather than on a thread of its own: the engine loop is
already there and idle most of the time, a sleeping coroutine costs nothing, no thread is
left to join at exit, and it stops with the engine. The coroutine holds only a weak
reference to its ticker, so a ticker (and with it the view and the session) that nobody
refers to any more is collected; the loop then ends at its next wake.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._core.grid import Grid
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.models import TaskStatus

from . import present
from .bundles import batch_bundle, record_bundle, shown_as
from .grid import grid_bundle, grid_ended, grid_shown
from .words import elapsed_step

__all__ = [
    "GRID_UPDATE_INTERVAL",
    "MIN_UPDATE_INTERVAL",
    "REFRESH_BUDGET",
    "TICK_SECONDS",
    "LiveOutputs",
    "Ticker",
]

logger = logging.getLogger("nanobanana_jupyter")

# How often live cards refresh while tasks run (their elapsed time).
TICK_SECONDS = 1.0
MIN_UPDATE_INTERVAL = 0.25
# Display updates per second the ticker may send for the whole session (every live card,
# batch line and grid together). A change of a task's state is always shown at once, and
# counts: the ticker's refreshes of elapsed times give way to it. Past the budget, the cards
# longest without a refresh go first; an older card shows its time coarser
# (:func:`.words.elapsed_step`), so it needs fewer refreshes.
REFRESH_BUDGET = 20
# A grid's table holds every cell's preview: it is redrawn at most this often while it runs
# (changes in between are shown by the next tick), and at once when its last task ends.
GRID_UPDATE_INTERVAL = 0.5
# Cards of this many tasks (the newest shown) are redrawn when their rating or tags change,
# also after their task ended.
ANNOTATED_CARDS = 256

Show = Callable[..., object]
"""``show(data, raw=True, metadata=..., display_id=...)``: IPython's ``display`` or
``update_display`` (or a test's recorder)."""


class _LiveSession(Protocol):
    """What the live outputs use of a session (its public methods)."""

    def subscribe(self, listener: Callable[[TaskEvent], object]) -> Callable[[], None]: ...
    def add_wait_hook(self, hook: Callable[[], object]) -> Callable[[], None]: ...
    def task_for(self, local_id: str) -> Task | None: ...
    def run_in_background(self, work: Coroutine[Any, Any, Any]) -> object: ...


# -- the ticker -------------------------------------------------------------------------------


class Ticker:
    """Calls ``callback(now)`` every ``interval`` seconds, on the engine loop, while it
    returns true.

    :meth:`start` from any thread begins the loop unless it runs already (a start while it
    runs makes it go on for at least one more round, even if the callback just said it was
    done); :meth:`stop` ends it. A callback that raises is logged and ends the loop.

    Args:
        callback: called with ``clock()``; returns whether there is more to do.
        interval: seconds between calls.
        run: starts a coroutine in the background (``session.run_in_background``); a
            ``RuntimeError`` (the engine is stopping) leaves the ticker stopped.
        clock: the time given to the callback (tests pass a fake one).
        sleep: ``await sleep(seconds)`` between calls (tests pass one that returns at once).
    """

    def __init__(
        self,
        callback: Callable[[float], bool],
        *,
        interval: float,
        run: Callable[[Coroutine[Any, Any, None]], object],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"the interval must be positive, not {interval!r}")
        self.interval = float(interval)
        self._callback = callback
        self._run = run
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._generation = 0
        self._running = False
        self._again = False

    @property
    def running(self) -> bool:
        """Whether a loop is on (started and not yet ended)."""
        with self._lock:
            return self._running

    def start(self) -> bool:
        """Begin ticking unless already on; return whether a new loop began."""
        with self._lock:
            if self._running:
                self._again = True
                return False
            self._running, self._again = True, False
            self._generation += 1
            generation = self._generation
        try:
            self._run(_loop(weakref.ref(self), generation, self.interval, self._sleep))
        except RuntimeError:  # the engine is stopping: nothing to tick on
            with self._lock:
                if self._generation == generation:
                    self._running = False
            return False
        return True

    def stop(self) -> None:
        """End the loop (at its next wake); :meth:`start` may begin a new one."""
        with self._lock:
            self._generation += 1
            self._running = False

    def tick(self, generation: int | None = None) -> bool:
        """Call the callback once, now; return whether the loop goes on.

        The loop calls this every ``interval`` with its own ``generation``; a loop that
        :meth:`stop` (or a newer start) replaced gets false without calling the callback.
        """
        with self._lock:
            if generation is not None and generation != self._generation:
                return False
            self._again = False
        try:
            more = bool(self._callback(self._clock()))
        except Exception:
            logger.exception("a live output could not refresh")
            more = False
            with self._lock:
                self._again = False
        with self._lock:
            if generation is not None and generation != self._generation:
                return False
            if more or self._again:
                return True
            if generation is not None:
                self._running = False
            return False


async def _loop(
    ref: weakref.ref[Ticker],
    generation: int,
    interval: float,
    sleep: Callable[[float], Awaitable[object]],
) -> None:
    """The ticker's loop: only a weak reference, so it keeps nothing alive."""
    while True:
        await sleep(interval)
        ticker = ref()
        if ticker is None or not ticker.tick(generation):
            return
        del ticker


def _nothing() -> None:
    pass


# -- live outputs -----------------------------------------------------------------------------


@dataclass
class _Slot:
    """One live output (a display id) of one task, and what it last showed."""

    display_id: str
    local_id: str
    embed: str
    side: int
    #: How the card words its cost (:func:`.bundles.shown_as`), fixed when it opened.
    shown_as: dict[str, bool] = field(default_factory=dict)
    sent_at: float = 0.0
    sent_status: str = ""
    #: The newest state sent, from any thread (see ``_rank``): an older one is never sent.
    sent_rank: tuple[bool, float] = (False, float("-inf"))
    #: The state last sent from a thread running a cell (``open`` or ``flush``).
    flushed: tuple[str, int] | None = None
    #: The rating, tags and note the card shows: read once when it opens, then as told
    #: by the session after each change (never read per refresh).
    annotation: Annotation | None = None
    #: The elapsed time last shown, in its steps (``_elapsed_key``): a refresh is due when
    #: it would show another.
    shown_elapsed: int = -1


@dataclass
class _Batch:
    display_id: str
    tasks: list[Task]
    flushed: tuple[int, int] | None = None


@dataclass
class _GridSlot:
    """The one live table of a grid, and what it last showed."""

    display_id: str
    grid: Grid
    local_ids: frozenset[str]
    sent_at: float = 0.0
    #: A change came while throttled: the next tick sends it.
    dirty: bool = False
    #: What was last sent from a thread running a cell (``open_grid`` or ``flush``).
    flushed: tuple[tuple[str, int], ...] | None = None


def _rank(record: TaskRecord) -> tuple[bool, float]:
    """How new a state is: any final state is newer than every running one."""
    return (record.is_terminal, record.updated_at)


def _shown(record: TaskRecord) -> tuple[str, int]:
    """What a card shows, apart from the elapsed time."""
    return (record.status.value, len(record.images))


def _elapsed_key(record: TaskRecord, wall: float) -> int:
    """Which elapsed time a running card shows at ``wall``, as a step count (it changes
    exactly when the shown time does)."""
    age = max(0.0, wall - record.created_at)
    return math.floor(age / elapsed_step(age))


def _batch_shown(tasks: Sequence[Task]) -> tuple[int, int]:
    return (sum(t.done() for t in tasks), sum(t.status is TaskStatus.SUCCESS for t in tasks))


class LiveOutputs:
    """The output slots of one session's tasks, updated in place.

    The engine thread updates them as tasks move (throttled). Those updates carry the parent
    header of whatever cell the kernel saw last, so a headless runner (nbclient, papermill,
    ``nbconvert --execute``) drops them; :meth:`flush`, called on the thread running a cell
    after every blocking wait, sends each slot's current state again from that thread, and
    retires the slots that are final. All sends go through one lock, and a slot never sends
    a state older than one it already sent (``_rank``), so a late engine update cannot undo
    a flush.

    Args:
        session: the session whose tasks are shown (its public methods only).
        show: creates an output (IPython's ``display``).
        update: replaces an output by display id (IPython's ``update_display``).
        clock: monotonic seconds, for the per-slot throttle and the refresh budget.
        wall: the wall clock a card's elapsed time is counted on (tests pass a fake one).
        tick_seconds: how often running cards refresh their elapsed time.
    """

    def __init__(
        self,
        session: _LiveSession,
        *,
        show: Show,
        update: Show,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self._session = session
        self._show = show
        self._update = update
        self._clock = clock
        self._wall = wall
        self._tick_seconds = tick_seconds
        # When each update of the last tick's length was sent (the refresh budget's window).
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}  # display id -> slot
        self._by_task: dict[str, list[_Slot]] = {}  # local id -> its slots
        self._batches: dict[str, _Batch] = {}  # display id -> the batch
        self._grids: dict[str, _GridSlot] = {}  # display id -> the grid's table
        # local id -> every card shown of it (running or ended), the newest tasks last.
        self._cards: OrderedDict[str, list[_Slot]] = OrderedDict()
        self.ticker = Ticker(
            self._refresh_running, interval=tick_seconds, run=session.run_in_background
        )
        self._unsubscribe = session.subscribe(self.on_change)
        self._unflush = session.add_wait_hook(self.flush)
        # A session without ratings (a test's stand-in) has nothing to tell.
        subscribe_annotations = getattr(session, "subscribe_annotations", None)
        self._unannotate: Callable[[], object] = (
            subscribe_annotations(self.on_annotation) if subscribe_annotations else _nothing
        )
        present.register_live(session, self)

    def close(self) -> None:
        if present.live_outputs_of(self._session) is self:
            present.register_live(self._session, None)
        self.ticker.stop()
        self._unsubscribe()
        self._unflush()
        self._unannotate()

    @property
    def slots(self) -> int:
        """How many slots are live (not yet retired)."""
        with self._lock:
            return len(self._slots)

    @property
    def batches(self) -> int:
        """How many batch lines are live (not yet retired)."""
        with self._lock:
            return len(self._batches)

    def open(self, task: Task, *, embed: str, side: int) -> str:
        """Create a slot for ``task`` in the current cell (main thread) and return its id.

        The task's cell result shows the same previews (:func:`.present.remember`).
        """
        present.remember(task, embed=embed, side=side)
        display_id = f"nanobanana-{uuid.uuid4().hex}"
        annotation = present.annotation_of(task)  # one read per card, not per refresh
        with self._lock:
            record = task.record
            shown = shown_as(task)
            slot = _Slot(display_id, task.local_id, embed, side, shown, annotation=annotation)
            data, metadata = self._slot_bundle(slot, record)
            self._show(data, raw=True, metadata=metadata, display_id=display_id)
            self._remember_card(slot)
            slot.sent_at, slot.sent_status = self._clock(), record.status.value
            slot.sent_rank, slot.flushed = _rank(record), _shown(record)
            if record.is_terminal:
                return display_id  # final already, and shown from the cell's own thread
            self._slots[display_id] = slot
            self._by_task.setdefault(task.local_id, []).append(slot)
        self.ticker.start()
        return display_id

    def _remember_card(self, slot: _Slot) -> None:
        """Keep ``slot`` to redraw on a rating or tag change (lock held; the oldest tasks'
        cards are forgotten past :data:`ANNOTATED_CARDS`)."""
        self._cards.setdefault(slot.local_id, []).append(slot)
        self._cards.move_to_end(slot.local_id)
        while len(self._cards) > ANNOTATED_CARDS:
            self._cards.popitem(last=False)

    def on_annotation(self, local_id: str, annotation: Annotation) -> None:
        """Redraw the cards of a task whose rating, tags or note changed (the session calls
        this on the thread that made the change: from a cell, a headless runner keeps it)."""
        task = self._session.task_for(local_id)
        if task is None:
            return
        with self._lock:
            cards = list(self._cards.get(local_id, ()))
            if not cards:
                return
            record = task.record
            for slot in cards:
                slot.annotation = annotation
                if _rank(record) < slot.sent_rank:
                    continue  # pragma: no cover - the handle is never older than a card
                slot.sent_at, slot.sent_status, slot.sent_rank = (
                    self._clock(),
                    record.status.value,
                    _rank(record),
                )
                data, metadata = self._slot_bundle(slot, record)
                try:
                    self._update(data, raw=True, metadata=metadata, display_id=slot.display_id)
                except Exception:  # a closed kernel channel must not break the caller
                    logger.debug("could not update display %s", slot.display_id, exc_info=True)

    def _slot_bundle(
        self, slot: _Slot, record: TaskRecord
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        wall = self._wall()
        if not record.is_terminal:
            slot.shown_elapsed = _elapsed_key(record, wall)
        return record_bundle(
            record,
            embed=slot.embed,
            side=slot.side,
            now=wall,
            reused=slot.shown_as.get("reused", False),
            pretend=slot.shown_as.get("pretend", False),
            annotation=slot.annotation,
        )

    def bundle(self, task: Task, *, embed: str, side: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The mimebundle for a task: previews of the chosen size, or none."""
        return self._bundle(task.record, embed=embed, side=side, **shown_as(task))

    def _bundle(
        self,
        record: TaskRecord,
        *,
        embed: str,
        side: int,
        reused: bool = False,
        pretend: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return record_bundle(record, embed=embed, side=side, reused=reused, pretend=pretend)

    def open_batch(self, tasks: Sequence[Task]) -> str:
        """One progress line for several tasks (``-n``), above their cards (main thread)."""
        display_id = f"nanobanana-batch-{uuid.uuid4().hex}"
        with self._lock:
            self._show(batch_bundle(tasks), raw=True, display_id=display_id)
            self._batches[display_id] = _Batch(display_id, list(tasks), _batch_shown(tasks))
        return display_id

    @property
    def grids(self) -> int:
        """How many grid tables are live (not yet retired)."""
        with self._lock:
            return len(self._grids)

    def open_grid(self, grid: Grid) -> str:
        """One table for a whole grid, updated in place as its cells move (main thread).

        It is the grid's output in the running cell (:func:`.present.remember_grid`); no
        card is opened for its tasks.
        """
        present.remember_grid(grid)
        display_id = f"nanobanana-grid-{uuid.uuid4().hex}"
        with self._lock:
            self._show(grid_bundle(grid), raw=True, display_id=display_id)
            if grid.done():
                return display_id
            slot = _GridSlot(display_id, grid, frozenset(t.local_id for t in grid.tasks))
            slot.sent_at, slot.flushed = self._clock(), grid_shown(grid)
            self._grids[display_id] = slot
        self.ticker.start()
        return display_id

    def _counted(self) -> None:
        """Note one update sent now (lock held), for the refresh budget."""
        now = self._clock()
        self._sent.append(now)
        while self._sent and self._sent[0] <= now - self._tick_seconds:
            self._sent.popleft()

    def _allowance(self) -> int:
        """How many refreshes the ticker may send now (lock held): the budget of one tick,
        less what was sent within the last tick's length."""
        now = self._clock()
        while self._sent and self._sent[0] <= now - self._tick_seconds:
            self._sent.popleft()
        budget = max(1, round(REFRESH_BUDGET * self._tick_seconds))
        return max(0, budget - len(self._sent))

    def _send_grid(self, slot: _GridSlot, *, force: bool) -> bool:
        """Redraw a grid's table (lock held); False when throttled (it is then marked for
        the next tick)."""
        now = self._clock()
        if not force and now - slot.sent_at < GRID_UPDATE_INTERVAL:
            slot.dirty = True
            return False
        slot.sent_at, slot.dirty = now, False
        self._counted()
        try:
            self._update(grid_bundle(slot.grid), raw=True, display_id=slot.display_id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update display %s", slot.display_id, exc_info=True)
        return True

    def flush(self) -> None:
        """Bring every live output to its current state from the calling thread.

        Called after a blocking wait on the thread running the cell (``Session`` calls it
        through its wait hooks; the magic calls it after ``--wait`` and ``%nanobanana
        wait``): updates sent from there are recorded by headless runners. A slot whose task
        has ended is retired after its final state has been sent from here.
        """
        with self._lock:
            for slot in list(self._slots.values()):
                task = self._session.task_for(slot.local_id)
                if task is None:
                    continue
                record = task.record
                if slot.flushed != _shown(record) and self._send(slot, record, force=True):
                    slot.flushed = _shown(record)
                if record.is_terminal and slot.flushed == _shown(record):
                    self._retire(slot)
            # A batch line or a grid is drawn from its tasks as they are while it is drawn,
            # and they move on meanwhile (the engine thread): what was sent counts as
            # flushed only when nothing moved during the drawing, and the output is retired
            # only once what was sent shows every task ended. (Retiring on ``done()`` read
            # after the drawing lost the final state when the last task ended meanwhile.)
            for batch in list(self._batches.values()):
                shown = _batch_shown(batch.tasks)
                if batch.flushed != shown:
                    self._send_batch(batch)
                    if _batch_shown(batch.tasks) == shown:
                        batch.flushed = shown
                if batch.flushed == shown and shown[0] == len(batch.tasks):
                    del self._batches[batch.display_id]
            for grid_slot in list(self._grids.values()):
                cells = grid_shown(grid_slot.grid)
                if grid_slot.flushed != cells:
                    self._send_grid(grid_slot, force=True)
                    if grid_shown(grid_slot.grid) == cells:
                        grid_slot.flushed = cells
                if grid_slot.flushed == cells and grid_ended(cells):
                    del self._grids[grid_slot.display_id]

    def _retire(self, slot: _Slot) -> None:
        self._slots.pop(slot.display_id, None)
        siblings = self._by_task.get(slot.local_id, [])
        if slot in siblings:
            siblings.remove(slot)
        if not siblings:
            self._by_task.pop(slot.local_id, None)

    def on_change(self, event: TaskEvent) -> None:
        """Show a task's change in its slots and batch lines (the session calls this)."""
        task = event.task
        with self._lock:
            record = task.record
            for slot in list(self._by_task.get(task.local_id, ())):
                self._send(slot, record, force=record.is_terminal)
            for batch in list(self._batches.values()):
                if task in batch.tasks:
                    self._send_batch(batch)
            dirty = False
            for grid_slot in list(self._grids.values()):
                if task.local_id in grid_slot.local_ids:
                    sent = self._send_grid(grid_slot, force=grid_slot.grid.done())
                    dirty = dirty or not sent
        if dirty:
            self.ticker.start()

    def _send_batch(self, batch: _Batch) -> None:
        self._counted()
        try:
            self._update(batch_bundle(batch.tasks), raw=True, display_id=batch.display_id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update display %s", batch.display_id, exc_info=True)

    def _send(self, slot: _Slot, record: TaskRecord, *, force: bool) -> bool:
        """Send ``record`` to ``slot`` (lock held); False when throttled or older than shown."""
        rank = _rank(record)
        if rank < slot.sent_rank:
            return False  # a newer state is already there: never go back
        now = self._clock()
        changed = record.status.value != slot.sent_status
        if not (force or changed) and now - slot.sent_at < MIN_UPDATE_INTERVAL:
            return False
        slot.sent_at, slot.sent_status, slot.sent_rank = now, record.status.value, rank
        self._counted()
        data, metadata = self._slot_bundle(slot, record)
        try:
            self._update(data, raw=True, metadata=metadata, display_id=slot.display_id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update display %s", slot.display_id, exc_info=True)
        return True

    def _refresh_running(self, now: float) -> bool:
        """The ticker's round: refresh the running cards' elapsed time; False when none runs.

        The round sends at most the session's :data:`REFRESH_BUDGET` (less the changes just
        shown), to the cards whose shown time is out of date, the longest unrefreshed first.
        It runs on the engine loop, so it never waits for the lock: while an event is being
        shown (the delivery thread holds it), this round is skipped and the next one tries.
        """
        if not self._lock.acquire(blocking=False):
            return True
        try:
            running = [s for s in self._slots.values() if s.sent_rank[0] is False]
            grids = [g for g in self._grids.values() if g.dirty or not g.grid.done()]
            for grid_slot in grids:
                if grid_slot.dirty:
                    self._send_grid(grid_slot, force=False)
            if not running:
                return any(g.dirty or not g.grid.done() for g in grids)
            wall = self._wall()
            due: list[tuple[float, int, _Slot, TaskRecord]] = []
            for order, slot in enumerate(running):
                task = self._session.task_for(slot.local_id)
                if task is None or task.done():
                    continue
                record = task.record
                if _elapsed_key(record, wall) != slot.shown_elapsed:
                    due.append((slot.sent_at, order, slot, record))
            for _, _, slot, record in heapq.nsmallest(self._allowance(), due):
                self._send(slot, record, force=False)
            return True
        finally:
            self._lock.release()
