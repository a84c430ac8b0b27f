"""One poll scheduler for every open task of a session.

The decisions (when to poll each task, what an answer means, how fast the session may
send) are pure and take the time as an argument, so they are tested on a fake clock. The
:class:`PollLoop` at the bottom is the thin async driver that runs them on the engine.

How the next poll is chosen (design.md section 5). A poll only pays off when the task may
have finished since the last one, so polls go where completions are likely:

* the first poll waits ``initial_delay``, or, once tasks of the same model have finished,
  until about the shortest typical duration seen for that model (its 3rd percentile):
  polling earlier only costs requests;
* after that the interval is a fraction of the task's age, so a task that takes T seconds
  is seen done at most about ``age_fraction * T`` late; while the task's age is within the
  range where that model's tasks usually finish, the interval is also capped at a small
  fraction of their median duration, which keeps the absolute delay low where most tasks
  end; past that range (the rare slow tail) intervals grow faster;
* ``min_interval`` and ``max_interval`` bound every interval; jitter only ever shortens an
  interval, so tasks submitted together drift apart without breaking the bounds above;
* a deadline ends polling with one last poll exactly at it;
* requests are capped per second and in flight for the whole session, and a 429 slows the
  whole session down (multiplicative decrease, slow recovery).

The default numbers were chosen with ``python -m benchmarks.polling_model``, a fake-clock
model that runs this scheduler behind the default cap on the benchmark's workload, next to
the best schedules possible when durations are known in advance (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import enum
import heapq
import itertools
import logging
import math
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

from nanobanana_jupyter._wire.errors import (
    APIError,
    APITimeoutError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
)
from nanobanana_jupyter._wire.models import TaskSnapshot, TaskStatus

# However near the deadline, a poll gets at least this long to answer.
MIN_POLL_BUDGET = 1.0

__all__ = ["Decision", "DurationStats", "PollLoop", "PollPolicy", "PollScheduler", "RateLimiter"]

logger = logging.getLogger("nanobanana_jupyter")


@dataclasses.dataclass(frozen=True)
class PollPolicy:
    """The polling schedule. All times in seconds; ``time_scale`` multiplies every one.

    ``time_scale`` exists for the sandbox's scaled clock (tests and benchmarks): a sandbox
    running 100x faster is polled with ``time_scale=0.01``.
    """

    initial_delay: float = 2.0
    """Wait before the first poll while nothing is known about the model."""
    age_fraction: float = 0.15
    """Interval as a fraction of the task's age: bounds the detection delay relative to T."""
    min_interval: float = 0.5
    max_interval: float = 15.0
    jitter: float = 0.02
    """Intervals are shortened by up to this fraction, at random."""
    learn_quantile: float = 0.03
    """The first poll aims at this quantile of the model's past durations..."""
    learn_margin: float = 1.0
    """...times this margin."""
    bulk_fraction: float = 0.08
    """Within the usual range, intervals are capped at this fraction of the median duration."""
    tail_quantile: float = 0.99
    """Past this quantile of past durations a task is in the slow tail..."""
    tail_fraction: float = 0.1
    """...and its interval is this fraction of its age."""
    min_samples: int = 5
    """Past durations needed before they shape the schedule."""
    not_found_grace: float = 30.0
    """A 404 this soon after submit means "not visible yet", not "gone"."""
    not_found_polls: int = 3
    """Past the grace period, polling stops only after this many 404s in a row..."""
    not_found_span: float = 60.0
    """...spanning at least this long since the first of them (a single 404 never ends a
    task: the service answers 404 for a task it does know, now and then). Polling then
    stops without a final state: the task stays resumable and is never called failed."""
    empty_success_polls: int = 3
    """A success whose answer carries no image or text (the status can flip before the
    result is written) is polled again up to this many times, soon, before the task ends
    without its image (resumable)."""
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        values = (self.initial_delay, self.min_interval, self.max_interval, self.time_scale)
        if not all(v > 0 and math.isfinite(v) for v in values):
            raise ValueError("poll policy times must be positive and finite")
        if self.min_interval > self.max_interval:
            raise ValueError("need min_interval <= max_interval")
        fractions = (self.age_fraction, self.bulk_fraction, self.tail_fraction)
        quantiles = (self.learn_quantile, self.tail_quantile)
        if not all(0 < f < 1 for f in fractions) or not all(0 <= q <= 1 for q in quantiles):
            raise ValueError("fractions must lie in (0, 1) and quantiles in [0, 1]")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be within [0, 1)")
        spans = (self.not_found_grace, self.not_found_span)
        if not all(v >= 0 and math.isfinite(v) for v in spans):
            raise ValueError("not_found_grace and not_found_span must be finite and >= 0")
        if self.not_found_polls < 1 or self.empty_success_polls < 0:
            raise ValueError("need not_found_polls >= 1 and empty_success_polls >= 0")

    def scaled(self, factor: float) -> PollPolicy:
        """The same policy on a clock running ``1/factor`` times faster."""
        return dataclasses.replace(self, time_scale=self.time_scale * factor)


class DurationStats:
    """What past tasks of each model took (the last few hundred, per model)."""

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=self._keep))
        self._sorted: dict[str, list[float]] = {}

    def add(self, model: str, seconds: float) -> None:
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        recent = self._recent[model]
        if len(recent) == recent.maxlen:
            old = recent[0]
            ordered = self._sorted[model]
            del ordered[bisect.bisect_left(ordered, old)]
        recent.append(seconds)
        bisect.insort(self._sorted.setdefault(model, []), seconds)

    def count(self, model: str) -> int:
        return len(self._sorted.get(model, ()))

    def quantile(self, model: str, q: float) -> float | None:
        ordered = self._sorted.get(model)
        if not ordered:
            return None
        index = min(len(ordered) - 1, max(0, int(q * len(ordered))))
        return ordered[index]


class Action(enum.Enum):
    """What the session should do after a poll answer."""

    CONTINUE = "continue"
    """Not finished: the task was rescheduled."""
    FINISHED = "finished"
    """The server reports a final state (success or failed): ``snapshot`` holds it."""
    TIMED_OUT = "timed_out"
    """The deadline passed (after the last poll at it)."""
    NOT_FOUND = "not_found"
    """The server kept answering 404 for the task (see ``PollPolicy.not_found_span``). Not a
    final answer: the server may still know and finish the task."""
    NO_RESULT = "no_result"
    """The server says success, but its answer still carries no image or text after a few
    more looks: ``snapshot`` holds the last answer (with ``raw_result``)."""
    AUTH_FAILED = "auth_failed"
    """The key was refused: stop polling everything for this key."""


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    snapshot: TaskSnapshot | None = None
    error: str | None = None
    polls: int = 0
    """Polls made for the task so far (by this scheduler)."""


@dataclasses.dataclass
class _Entry:
    key: str
    task_id: str
    model: str
    started: float
    deadline: float
    next_at: float = 0.0
    polls: int = 0
    in_flight: bool = False
    last_status: TaskStatus | None = None
    seq: int = 0
    not_found_since: float | None = None
    """When the current run of 404 answers began (``None``: the last answer was no 404)."""
    not_found_count: int = 0
    empty_successes: int = 0
    """Success answers so far that carried no image or text."""
    succeeded_at: float | None = None


class RateLimiter:
    """A token bucket for the session's requests, slowed down by 429s (AIMD)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.base_rate = rate
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._stamp: float | None = None
        self.paused_until = 0.0

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now if self._stamp is None else max(self._stamp, now)

    def ready_at(self, now: float) -> float:
        """The earliest time a request may be sent."""
        self._refill(now)
        if self._tokens >= 1:
            return max(now, self.paused_until)
        return max(now + (1 - self._tokens) / self.rate, self.paused_until)

    def take(self, now: float) -> None:
        self._refill(now)
        self._tokens -= 1

    async def acquire(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Wait (on the running loop) until a request may be sent, and take its token."""
        while True:
            now = clock()
            ready = self.ready_at(now)
            if ready <= now:
                self.take(now)
                return
            await asyncio.sleep(ready - now)

    def on_rate_limited(self, now: float, retry_after: float | None) -> None:
        """Halve the rate, and pause everything for what the server asked."""
        self.rate = max(self.base_rate / 32, self.rate / 2)
        self._tokens = min(self._tokens, 0.0)
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + min(retry_after, 60.0))

    def on_success(self) -> None:
        """Recover slowly: a few percent of the base rate per good answer."""
        if self.rate < self.base_rate:
            self.rate = min(self.base_rate, self.rate + self.base_rate * 0.02)


class PollScheduler:
    """Decides when each task is polled and what each answer means. No I/O, no clock."""

    def __init__(
        self,
        policy: PollPolicy | None = None,
        *,
        stats: DurationStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or PollPolicy()
        self.stats = stats or DurationStats()
        self._rng = rng or random.Random()
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _scale(self, seconds: float) -> float:
        return seconds * self.policy.time_scale

    def _jitter(self, seconds: float) -> float:
        j = self.policy.jitter
        return seconds * (1 - self._rng.uniform(0, j)) if j else seconds

    def _learned(self, model: str) -> bool:
        return self.stats.count(model) >= self.policy.min_samples

    def first_delay(self, model: str) -> float:
        """How long after submit the first poll should come."""
        p = self.policy
        if self._learned(model):
            typical = self.stats.quantile(model, p.learn_quantile)
            if typical is not None:
                return max(self._scale(p.min_interval), typical * p.learn_margin)
        return self._scale(p.initial_delay)

    def interval(self, age: float, model: str | None = None) -> float:
        """The interval between polls for a task of this age (before jitter)."""
        p = self.policy
        lower, upper = self._scale(p.min_interval), self._scale(p.max_interval)
        interval = p.age_fraction * age
        if model is not None and self._learned(model):
            tail = self.stats.quantile(model, p.tail_quantile)
            median = self.stats.quantile(model, 0.5)
            if tail is not None and median is not None:
                if age < tail:
                    interval = min(interval, p.bulk_fraction * median)
                else:
                    interval = p.tail_fraction * age
        return min(upper, max(lower, interval))

    def add(
        self,
        key: str,
        task_id: str,
        model: str,
        *,
        now: float,
        started: float | None = None,
        deadline: float,
        poll_now: bool = False,
    ) -> None:
        """Start polling a task submitted at ``started`` (default ``now``)."""
        start = now if started is None else started
        entry = _Entry(key=key, task_id=task_id, model=model, started=start, deadline=deadline)
        self._entries[key] = entry
        when = now if poll_now else max(now, start + self._jitter(self.first_delay(model)))
        self._push(entry, min(when, max(now, deadline)))

    def remove(self, key: str) -> None:
        self._entries.pop(key, None)

    def poke(self, key: str, now: float) -> bool:
        """Poll a task as soon as possible (a webhook said it may be done)."""
        entry = self._entries.get(key)
        if entry is None or entry.in_flight:
            return False
        self._push(entry, now)
        return True

    def _push(self, entry: _Entry, when: float) -> None:
        entry.next_at = when
        entry.seq = next(self._seq)
        heapq.heappush(self._heap, (when, entry.seq, entry.key))

    def _clean_top(self) -> None:
        while self._heap:
            _, seq, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq and not entry.in_flight:
                return
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        """When the next poll is due, or ``None`` when nothing waits."""
        self._clean_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> _Entry | None:
        """Take the next task whose poll is due (marking it in flight), if any."""
        self._clean_top()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, key = heapq.heappop(self._heap)
        entry = self._entries[key]
        entry.in_flight = True
        entry.polls += 1
        return entry

    def on_answer(self, entry: _Entry, answer: TaskSnapshot | APIError, now: float) -> Decision:
        """Interpret one poll's outcome and reschedule or retire the task."""
        entry.in_flight = False
        if entry.key not in self._entries:
            return Decision(Action.CONTINUE, polls=entry.polls)
        decision = self._decide(entry, answer, now)
        return dataclasses.replace(decision, polls=entry.polls)

    def _decide(self, entry: _Entry, answer: TaskSnapshot | APIError, now: float) -> Decision:
        if isinstance(answer, TaskSnapshot):
            entry.last_status = answer.status
            entry.not_found_since, entry.not_found_count = None, 0
            if answer.status is TaskStatus.SUCCESS and not answer.results:
                return self._empty_success(entry, answer, now)
            if answer.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
                self._retire(entry, now)
                return Decision(Action.FINISHED, snapshot=answer)
            if answer.status is TaskStatus.UNRECOGNIZED and entry.polls == 1:
                logger.warning(
                    "task %s: unknown status %r, treated as not finished",
                    entry.task_id,
                    answer.raw_status,
                )
            return self._continue(entry, now, answer)
        if isinstance(answer, AuthenticationError):
            self.remove(entry.key)
            return Decision(Action.AUTH_FAILED, error=answer.message)
        if isinstance(answer, NotFoundError):
            return self._not_found(entry, now)
        # Anything else (server errors after the client's own retries, unreadable answers):
        # keep polling on the schedule; the deadline bounds it. A run of 404s goes on
        # across them: they say nothing about the task.
        logger.info("task %s: poll failed (%s); will poll again", entry.task_id, answer.message)
        return self._continue(entry, now, None)

    def _retire(self, entry: _Entry, now: float) -> None:
        self.remove(entry.key)
        self.stats.add(entry.model, (entry.succeeded_at or now) - entry.started)

    def _not_found(self, entry: _Entry, now: float) -> Decision:
        """A 404: the task is not visible yet, or (rarely, for a while) not at all.

        The service answers 404 for tasks it knows, early and now and then later, so one 404
        decides nothing. Polling stops only after ``not_found_polls`` 404s in a row that span
        ``not_found_span`` since the first of them (and past the grace period after submit);
        even then it is no final answer (``Action.NOT_FOUND``, which the session keeps
        resumable), because the server may still finish and charge the task.
        """
        p = self.policy
        if entry.not_found_since is None:
            entry.not_found_since = now
        entry.not_found_count += 1
        span = now - entry.not_found_since
        age = now - entry.started
        if (
            age >= self._scale(p.not_found_grace)
            and entry.not_found_count >= p.not_found_polls
            and span >= self._scale(p.not_found_span)
        ):
            self.remove(entry.key)
            return Decision(Action.NOT_FOUND, error=self._not_found_text(entry, now))
        return self._continue(entry, now, None)

    def _not_found_text(self, entry: _Entry, now: float) -> str:
        since = now - (entry.not_found_since if entry.not_found_since is not None else now)
        return (
            f"the server answered 404 (task not found) to the last {entry.not_found_count} "
            f"polls over {_seconds(since)}, {_seconds(now - entry.started)} after submit"
        )

    def _empty_success(self, entry: _Entry, answer: TaskSnapshot, now: float) -> Decision:
        """A success with no image or text: look again soon, a few times, then give up.

        The status can flip before the result is written. The empty answer is never passed
        on as a state (success is final in the store): the session only hears of it as
        ``NO_RESULT``, once the looks are spent or the deadline has come.
        """
        entry.empty_successes += 1
        if entry.succeeded_at is None:
            entry.succeeded_at = now
        looks = entry.empty_successes
        if looks > self.policy.empty_success_polls or now >= entry.deadline:
            self._retire(entry, now)
            return Decision(
                Action.NO_RESULT,
                snapshot=answer,
                error=f"{looks} success answer(s) over {_seconds(now - entry.succeeded_at)}",
            )
        # Soon (min_interval, doubling), never later than the task's usual schedule.
        soon = self._scale(self.policy.min_interval) * 2 ** (looks - 1)
        delay = min(soon, self.interval(now - entry.started, entry.model))
        self._push(entry, min(now + self._jitter(delay), entry.deadline))
        return Decision(Action.CONTINUE)

    def _continue(self, entry: _Entry, now: float, snapshot: TaskSnapshot | None) -> Decision:
        if now >= entry.deadline:
            self.remove(entry.key)
            error = self._not_found_text(entry, now) if entry.not_found_count else None
            return Decision(Action.TIMED_OUT, snapshot=snapshot, error=error)
        age = now - entry.started
        when = now + self._jitter(self.interval(age, entry.model))
        # Smithy's rule: if the deadline would fall between polls, poll once exactly at it.
        self._push(entry, min(when, entry.deadline))
        return Decision(Action.CONTINUE, snapshot=snapshot)

    def keys(self) -> list[str]:
        """The keys of the tasks being polled (a copy)."""
        return list(self._entries)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


PollFn = Callable[[str], Awaitable[TaskSnapshot]]
DecisionFn = Callable[[str, Decision], Awaitable[None] | None]


class PollLoop:
    """The async driver: sends due polls within the session's caps, reports decisions.

    Runs on the engine loop. ``query`` performs one poll (with its own request retries);
    ``on_decision(key, decision)`` is called for every answer.
    """

    def __init__(
        self,
        scheduler: PollScheduler,
        query: PollFn,
        on_decision: DecisionFn,
        *,
        max_per_second: float = 20.0,
        max_in_flight: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = scheduler
        self.limiter = RateLimiter(max_per_second, burst=max(1.0, max_per_second / 2))
        self.max_in_flight = max_in_flight
        self._query = query
        self._on_decision = on_decision
        self._clock = clock
        self._in_flight = 0
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._polls: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.requests_by_task: dict[str, int] = defaultdict(int)

    def wake(self) -> None:
        """Re-plan now (a task was added or poked). Engine thread only."""
        if self._wake is not None:
            self._wake.set()
        if self._runner is None or self._runner.done():
            self._wake = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run())

    def on_rate_limited(self, retry_after: float | None) -> None:
        self.limiter.on_rate_limited(self._clock(), retry_after)

    async def _run(self) -> None:
        assert self._wake is not None
        while len(self.scheduler) or self._in_flight:
            now = self._clock()
            wait: float | None = None
            while self._in_flight < self.max_in_flight:
                due = self.scheduler.next_due()
                if due is None:
                    break
                if due > now:
                    wait = due - now
                    break
                ready = self.limiter.ready_at(now)
                if ready > now:
                    wait = ready - now
                    break
                entry = self.scheduler.pop_due(now)
                if entry is None:
                    break
                self.limiter.take(now)
                self._in_flight += 1
                self.requests += 1
                self.requests_by_task[entry.task_id] += 1
                poll = asyncio.get_running_loop().create_task(self._poll(entry))
                self._polls.add(poll)
                poll.add_done_callback(self._polls.discard)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _poll(self, entry: _Entry) -> None:
        # A poll (with its own retries) may not outlive the task's deadline by more than a
        # moment, however the network misbehaves (reliability.md P9).
        budget = max(entry.deadline - self._clock(), MIN_POLL_BUDGET)
        try:
            answer: TaskSnapshot | APIError = await asyncio.wait_for(
                self._query(entry.task_id), budget
            )
        except asyncio.TimeoutError:
            answer = APITimeoutError(f"the poll got no answer within {budget:.1f} s")
        except RateLimitError as exc:
            self.on_rate_limited(exc.retry_after)
            answer = exc
        except APIError as exc:
            answer = exc
        # One task's surprise must not stop the loop that serves all the others.
        except Exception as exc:
            logger.exception("task %s: unexpected error while polling", entry.task_id)
            answer = APIError(f"unexpected error while polling: {type(exc).__name__}")
        finally:
            self._in_flight -= 1
        if isinstance(answer, TaskSnapshot):
            self.limiter.on_success()
        decision = self.scheduler.on_answer(entry, answer, self._clock())
        try:
            result = self._on_decision(entry.key, decision)
            if result is not None:
                await result
        except Exception:  # reported, and the loop keeps serving the others
            logger.exception("task %s: handling a poll answer failed", entry.task_id)
        if self._wake is not None:
            self._wake.set()

    async def aclose(self) -> None:
        for task in [self._runner, *self._polls]:
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._runner, *self._polls] if t), return_exceptions=True
        )
