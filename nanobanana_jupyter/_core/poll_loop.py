"""The poll loop: sends due polls within the session's caps, and reports each decision.

The thin async driver of the :class:`~.scheduler.PollScheduler`, on the engine loop. Requests
are capped per second (:class:`RateLimiter`, a token bucket that a 429 slows down for the
whole session: multiplicative decrease, slow recovery) and in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from nanobanana_jupyter._wire.errors import APIError, APITimeoutError, RateLimitError
from nanobanana_jupyter._wire.snapshot import TaskSnapshot
from nanobanana_jupyter._wire.timeouts import time_limit

from .poll_policy import Decision
from .scheduler import PollEntry, PollScheduler

__all__ = ["MIN_POLL_BUDGET", "PollLoop", "RateLimiter"]

logger = logging.getLogger("nanobanana_jupyter")

# However near the deadline, a poll gets at least this long to answer.
MIN_POLL_BUDGET = 1.0


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
            # time_limit(), not wait_for: on 3.11 wait_for swallows a cancel that lands
            # as its inner wait completes, and aclose() would not stop this loop.
            with contextlib.suppress(asyncio.TimeoutError):
                async with time_limit(wait):
                    await self._wake.wait()

    async def _poll(self, entry: PollEntry) -> None:
        # A poll (with its own retries) may not outlive the task's deadline by more than a
        # moment, however the network misbehaves (reliability.md P9).
        budget = max(entry.deadline - self._clock(), MIN_POLL_BUDGET)
        try:
            async with time_limit(budget):
                answer: TaskSnapshot | APIError = await self._query(entry.task_id)
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
