"""Task state: plans, tasks, and the store that computes statuses from time.

A task's whole timeline is fixed when it is created (when it becomes visible, queued, starts,
ends), so a status is a few comparisons against the clock: no timers are needed to answer a
query, and a query costs one dict lookup. The server still arms one timer per task so that side
effects of finishing (drawing, callbacks, ``completed_at``) happen on time, but ``settle`` is
idempotent and is also called on every access, which is what makes an injected fake clock work.

A prompt containing :data:`TEXT_ONLY_MARK` (``[text only]``, any case) is answered in words,
one ``{"text": ...}`` entry and no image, as the real model sometimes does, unless a queued
plan says otherwise: a way to see such an answer from a notebook, the terminal or a sandbox
started by hand, where no plan can be queued.

Times are on the sandbox clock (``time.monotonic`` unless injected), in real seconds. Durations
given by users are in API seconds and multiplied by ``time_scale``.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Literal

from ._ledger import Ledger

ResultMode = Literal["url", "data_uri", "mixed"]
RESULT_MODES: tuple[ResultMode, ...] = ("url", "data_uri", "mixed")
Status = Literal["pending", "submitted", "in_progress", "success", "failed"]
Clock = Callable[[], float]
Duration = float | Callable[[str], float]

TEXT_ONLY_MARK = "[text only]"
"""A prompt holding this (any case) gets a text-only success unless a plan was queued."""

# Share of a task's duration spent in each phase before it runs; the rest is in_progress.
_PENDING_SHARE = 0.05
_QUEUED_SHARE = 0.10


@dataclass(frozen=True)
class TaskPlan:
    """How the next submitted task behaves (queue plans with ``Sandbox.plan``).

    - ``outcome``/``reason``: end as ``"success"`` or ``"failed"`` with ``reason`` as
      ``status_reason.message``.
    - ``duration``: API seconds from creation to the end (default: the sandbox's rule).
    - ``stuck``: stays ``in_progress`` forever (it does not hold a capacity slot, so one stuck
      task cannot starve a small-capacity sandbox).
    - ``invisible_for``: queries answer 404 for the first N API seconds (eventual consistency).
    - ``images``: how many images a success carries; 0 gives an empty result list.
    - ``text_only``: the result is one ``{"text": ...}`` entry instead of images.
    - ``result_mode``: ``"url"``, ``"data_uri"`` or ``"mixed"``; default: the sandbox's mode.
    """

    outcome: Literal["success", "failed"] = "success"
    reason: str = "The model could not generate an image for this prompt."
    duration: float | None = None
    stuck: bool = False
    invisible_for: float = 0.0
    images: int = 1
    text_only: bool = False
    result_mode: ResultMode | None = None

    def __post_init__(self) -> None:
        if self.outcome not in ("success", "failed"):
            raise ValueError(f"outcome must be 'success' or 'failed', not {self.outcome!r}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration >= 0):
            raise ValueError("duration must be a finite number >= 0")
        if not (math.isfinite(self.invisible_for) and self.invisible_for >= 0):
            raise ValueError("invisible_for must be a finite number >= 0")
        if not 0 <= self.images <= 16:
            raise ValueError("images must be between 0 and 16")
        if self.result_mode is not None and self.result_mode not in RESULT_MODES:
            raise ValueError(f"result_mode must be one of {RESULT_MODES}")


@dataclass(frozen=True)
class SubmitRequest:
    """A validated generation request."""

    prompt: str
    model: str
    images: tuple[str, ...] = ()
    aspect_ratio: str = "auto"
    image_size: str = "1K"
    callback_url: str | None = None


@dataclass(eq=False)
class Task:
    """One task and its precomputed timeline (sandbox clock, real seconds)."""

    task_id: str
    seq: int
    request: SubmitRequest
    plan: TaskPlan
    credits: float
    result_mode: ResultMode
    created_at: float
    created_iso: str
    visible_at: float
    queued_at: float
    started_at: float
    #: ``None`` for a stuck task.
    ends_at: float | None
    terminal: bool = False
    #: One CDN token per image, assigned when the task succeeds.
    tokens: tuple[str, ...] = ()
    urls_expire_at: float = math.inf
    #: Earlier tasks with the same request in this sandbox (0 for the first).
    repeat: int = 0

    def status(self, now: float) -> Status:
        """The status at ``now``; call ``TaskStore.settle`` first.

        A task is terminal only once settled, so whoever sees ``success`` also finds its CDN
        tokens assigned and its completion side effects started.
        """
        if self.terminal:
            return self.plan.outcome
        if now >= self.started_at:
            return "in_progress"
        if now >= self.queued_at:
            return "submitted"
        return "pending"

    def mode_of(self, index: int) -> Literal["url", "data_uri"]:
        """How image ``index`` is delivered; ``mixed`` alternates across images and tasks."""
        if self.result_mode == "mixed":
            return "url" if (self.seq + index) % 2 == 0 else "data_uri"
        return self.result_mode


def default_duration(prompt: str) -> float:
    """4 to 12 API seconds, fixed per prompt so that runs are reproducible."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return 4.0 + 8.0 * int.from_bytes(digest[:4], "big") / 2**32


def new_task_id() -> str:
    """A random id shaped like the service's (``ta`` + a UUID)."""
    return f"ta{uuid.uuid4()}"


class TaskStore:
    """All tasks of one sandbox, their plans and timelines, and the CDN tokens.

    ``plan()`` may be called from any thread; everything else runs on the server loop (or in
    a single test thread when the store is unit-tested with a fake clock).
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        capacity: int | None = None,
        duration: Duration | None = None,
        credits: float = 0.5,
        balance: float = 100.0,
        result_mode: ResultMode = "url",
        url_ttl: float = 3600.0,
        default_plan: TaskPlan | None = None,
        on_terminal: Callable[[Task], None] | None = None,
    ) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError("time_scale must be a finite number > 0")
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be None or at least 1")
        if result_mode not in RESULT_MODES:
            raise ValueError(f"result_mode must be one of {RESULT_MODES}")
        if not (math.isfinite(credits) and credits >= 0):
            raise ValueError("credits must be a finite number >= 0")
        if not math.isfinite(balance):
            raise ValueError("balance must be a finite number")
        if not url_ttl >= 0:
            raise ValueError("url_ttl must be >= 0")
        self.ledger = ledger
        self.clock: Clock = clock or time.monotonic
        self.time_scale = time_scale
        self.capacity = capacity
        self.credits = credits
        self._balance = float(balance)
        self._balance_lock = threading.Lock()
        self.result_mode: ResultMode = result_mode
        self.url_ttl = url_ttl
        self.default_plan = default_plan or TaskPlan()
        #: Called once per task, synchronously, when it becomes terminal (server side effects).
        self.on_terminal = on_terminal
        self._duration = duration
        self._plans: deque[TaskPlan] = deque()
        self._plans_lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._tokens: dict[str, tuple[Task, int]] = {}
        # End times of the tasks occupying each capacity slot (a min-heap).
        self._slots: list[float] = []
        self._seq = 0
        # How many tasks each request has had: a repeated request (several samples of one
        # prompt) draws a different picture each time, still deterministically.
        self._repeats: dict[tuple[object, ...], int] = {}

    def plan(self, plan: TaskPlan, count: int = 1) -> None:
        """Apply ``plan`` to the next ``count`` created tasks (FIFO after earlier plans)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._plans_lock:
            self._plans.extend([plan] * count)

    def pending_plans(self) -> int:
        """How many queued plans are still waiting for a task."""
        with self._plans_lock:
            return len(self._plans)

    @property
    def balance(self) -> float:
        """The account's credits (``GET /api/user``): the starting amount less every charge."""
        with self._balance_lock:
            return self._balance

    def set_balance(self, value: float) -> None:
        """Give the account ``value`` credits from now on (tests: a low balance)."""
        if not math.isfinite(value):
            raise ValueError("balance must be a finite number")
        with self._balance_lock:
            self._balance = float(value)

    def now(self) -> float:
        """The sandbox clock."""
        return self.clock()

    def _next_plan(self, prompt: str = "") -> TaskPlan:
        with self._plans_lock:
            if self._plans:
                return self._plans.popleft()
        if TEXT_ONLY_MARK in prompt.casefold():
            return replace(self.default_plan, text_only=True)
        return self.default_plan

    def _duration_for(self, plan: TaskPlan, prompt: str) -> float:
        if plan.duration is not None:
            return plan.duration
        rule = self._duration
        if rule is None:
            return default_duration(prompt)
        value = float(rule(prompt)) if callable(rule) else float(rule)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"duration rule returned {value!r}; expected a finite number >= 0")
        return value

    def create(self, request: SubmitRequest) -> Task:
        """Create, schedule and charge a task for a validated request."""
        plan = self._next_plan(request.prompt)
        now = self.clock()
        scale = self.time_scale
        total = self._duration_for(plan, request.prompt) * scale
        queued_at = now + _PENDING_SHARE * total
        eligible = queued_at + _QUEUED_SHARE * total
        run = total - (eligible - now)
        ends_at: float | None
        if plan.stuck:
            started_at, ends_at = eligible, None
        elif self.capacity is None:
            started_at, ends_at = eligible, eligible + run
        else:
            # FIFO over slots: take the slot that frees first; wait in "submitted" until then.
            if len(self._slots) < self.capacity:
                started_at = eligible
            else:
                started_at = max(eligible, heapq.heappop(self._slots))
            ends_at = started_at + run
            heapq.heappush(self._slots, ends_at)
        self._seq += 1
        key = (request.model, request.prompt, request.aspect_ratio, request.image_size,
               tuple(request.images))  # fmt: skip
        repeat = self._repeats.get(key, 0)
        self._repeats[key] = repeat + 1
        task = Task(
            task_id=new_task_id(),
            seq=self._seq,
            repeat=repeat,
            request=request,
            plan=plan,
            credits=self.credits,
            result_mode=plan.result_mode or self.result_mode,
            created_at=now,
            created_iso=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            visible_at=now + plan.invisible_for * scale,
            queued_at=queued_at,
            started_at=started_at,
            ends_at=ends_at,
        )
        self._tasks[task.task_id] = task
        with self._balance_lock:
            self._balance -= task.credits
        self.ledger._note_task(task.task_id, task.credits)
        return task

    def get(self, task_id: str) -> Task | None:
        """The task with that id, settled against the clock, or ``None``."""
        task = self._tasks.get(task_id)
        if task is not None:
            self.settle(task)
        return task

    def settle(self, task: Task) -> bool:
        """Mark ``task`` terminal if its end has passed; True only on the call that does it."""
        if task.terminal or task.ends_at is None or self.clock() < task.ends_at:
            return False
        task.terminal = True
        if task.plan.outcome == "success" and not task.plan.text_only:
            tokens = tuple(uuid.uuid4().hex for _ in range(task.plan.images))
            task.tokens = tokens
            for index, token in enumerate(tokens):
                self._tokens[token] = (task, index)
            task.urls_expire_at = task.ends_at + self.url_ttl * self.time_scale
        self.ledger._note_completed(task.task_id, task.ends_at)
        if self.on_terminal is not None:
            self.on_terminal(task)
        return True

    def by_token(self, token: str) -> tuple[Task, int] | None:
        """The task and image index a CDN token stands for (expired or not)."""
        return self._tokens.get(token)

    def __len__(self) -> int:
        return len(self._tasks)
