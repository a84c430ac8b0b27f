"""One poll scheduler for every open task of a session: each task's state and the queue.

:class:`PollScheduler` decides when each task is polled and what each answer means, with the
maths of :mod:`.poll_policy` (design.md section 5); it does no I/O and reads no clock (the
time is an argument), so it is tested on a fake clock. :class:`~.poll_loop.PollLoop` runs it
on the engine.

Polls not yet due wait in a heap by due time. Once due, a poll joins the *due pool*, and
when the session's cap holds polls back, the pool is served by priority, not by due time:

1. urgent polls first (a webhook's hint, a resume, another look at a success without its
   image), first due first;
2. then any poll that has waited ``max_wait`` past its due time (the starvation bound),
   the one that cuts the most expected delay (3.) first; a task younger than every
   duration seen for its model (no chance that it has finished) is not starved however
   long it waited: a cap too small for a crowd of young tasks would otherwise go round
   them first due first and leave the tasks finishing now unseen (issue 18);
3. then the poll that cuts the most expected delay: the chance that the task has finished
   since its last poll (:func:`~.poll_policy.done_chance`, its age against the durations
   seen for its model) times the time since that poll (how long, roughly, it has been
   done if it is). The chance alone would feed the tasks around the usual duration and
   leave the slow ones to the starvation bound; the time since the last poll makes a long
   wait count, so the slow tail is seen too.

Without a cap in the way the pool never holds more than the polls due at one instant, and
the schedule is the policy's.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import random

from nanobanana_jupyter._wire.errors import APIError, AuthenticationError, NotFoundError
from nanobanana_jupyter._wire.models import TaskStatus
from nanobanana_jupyter._wire.snapshot import TaskSnapshot

from . import poll_policy
from .poll_policy import Action, Decision, DurationStats, PollPolicy

__all__ = ["PollEntry", "PollScheduler"]

logger = logging.getLogger("nanobanana_jupyter")


@dataclasses.dataclass
class PollEntry:
    """One task being polled: its schedule and what its answers said so far."""

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
    last_age: float = 0.0
    """The task's age at its last poll answer (0 before the first)."""
    urgent: bool = False
    """Its next poll goes ahead of the others (a hint, a resume, an empty success)."""


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
        self._entries: dict[str, PollEntry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, tuple[float, int]] = {}
        """The due pool: key -> (due time, seq) of polls whose time has come."""
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _jitter(self, seconds: float) -> float:
        j = self.policy.jitter
        return seconds * (1 - self._rng.uniform(0, j)) if j else seconds

    def first_delay(self, model: str) -> float:
        """How long after submit the first poll should come."""
        return poll_policy.first_delay(self.policy, self.stats, model)

    def interval(self, age: float, model: str | None = None) -> float:
        """The interval between polls for a task of this age (before jitter)."""
        return poll_policy.interval(self.policy, self.stats, age, model)

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
        entry = PollEntry(key=key, task_id=task_id, model=model, started=start, deadline=deadline)
        self._entries[key] = entry
        entry.urgent = poll_now
        when = now if poll_now else max(now, start + self._jitter(self.first_delay(model)))
        self._push(entry, min(when, max(now, deadline)))

    def remove(self, key: str) -> None:
        self._entries.pop(key, None)
        self._due.pop(key, None)

    def poke(self, key: str, now: float) -> bool:
        """Poll a task as soon as possible (a webhook said it may be done)."""
        entry = self._entries.get(key)
        if entry is None or entry.in_flight:
            return False
        entry.urgent = True
        self._push(entry, now)
        return True

    def _push(self, entry: PollEntry, when: float) -> None:
        entry.next_at = when
        entry.seq = next(self._seq)
        self._due.pop(entry.key, None)
        heapq.heappush(self._heap, (when, entry.seq, entry.key))

    def _valid(self, key: str, seq: int) -> PollEntry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.seq == seq and not entry.in_flight:
            return entry
        return None

    def _clean_top(self) -> None:
        while self._heap:
            _, seq, key = self._heap[0]
            if self._valid(key, seq) is not None:
                return
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        """When the next poll is due, or ``None`` when nothing waits."""
        if self._due:
            return min(when for when, _ in self._due.values())
        self._clean_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> PollEntry | None:
        """Take the due poll that should go first (marking it in flight), if any."""
        self._clean_top()
        while self._heap and self._heap[0][0] <= now:
            when, seq, key = heapq.heappop(self._heap)
            self._due[key] = (when, seq)
            self._clean_top()
        if not self._due:
            return None
        key = self._choose(now)
        del self._due[key]
        entry = self._entries[key]
        entry.in_flight = True
        entry.urgent = False
        entry.polls += 1
        return entry

    def _choose(self, now: float) -> str:
        """The key in the due pool to poll first (see the module's docstring)."""
        if len(self._due) == 1:
            return next(iter(self._due))
        max_wait = self.policy.max_wait * self.policy.time_scale
        urgent = starved = best = None
        urgent_at = starved_at = best_at = 0.0
        starved_value = best_value = -1.0
        for key, (when, _) in self._due.items():
            entry = self._entries[key]
            if entry.urgent:
                if urgent is None or when < urgent_at:
                    urgent, urgent_at = key, when
                continue
            overdue = now - when >= max_wait
            if urgent is not None or (starved is not None and not overdue):
                continue  # (nothing this one could win against)
            value = self.poll_value(entry, now)
            if value > 0 and overdue:
                if value > starved_value or (value == starved_value and when < starved_at):
                    starved, starved_at, starved_value = key, when, value
            elif starved is None and (
                value > best_value or (value == best_value and when < best_at)
            ):
                best, best_at, best_value = key, when, value
        for choice in (urgent, starved, best):
            if choice is not None:
                return choice
        raise AssertionError("the due pool is not empty")

    def done_chance(self, entry: PollEntry, now: float) -> float:
        """The chance that the task has finished since its last poll answer."""
        age = now - entry.started
        return poll_policy.done_chance(self.policy, self.stats, entry.model, entry.last_age, age)

    def poll_value(self, entry: PollEntry, now: float) -> float:
        """What polling the task now is worth when the cap holds polls back: the chance it
        has finished since its last poll times the time since (see the module docstring)."""
        waited = now - entry.started - entry.last_age
        return self.done_chance(entry, now) * max(0.0, waited)

    def on_answer(self, entry: PollEntry, answer: TaskSnapshot | APIError, now: float) -> Decision:
        """Interpret one poll's outcome and reschedule or retire the task."""
        entry.in_flight = False
        entry.last_age = now - entry.started
        if entry.key not in self._entries:
            return Decision(Action.CONTINUE, polls=entry.polls)
        decision = self._decide(entry, answer, now)
        return dataclasses.replace(decision, polls=entry.polls)

    def _decide(self, entry: PollEntry, answer: TaskSnapshot | APIError, now: float) -> Decision:
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

    def _retire(self, entry: PollEntry, now: float) -> None:
        self.remove(entry.key)
        self.stats.add(entry.model, (entry.succeeded_at or now) - entry.started)

    def _not_found(self, entry: PollEntry, now: float) -> Decision:
        """A 404: the task is not visible yet, or (rarely, for a while) not at all.

        The service answers 404 for tasks it knows, early and now and then later, so one 404
        decides nothing. Polling stops only after ``not_found_polls`` 404s in a row that span
        ``not_found_span`` since the first of them (and past the grace period after submit);
        even then it is no final answer (``Action.NOT_FOUND``, which the session keeps
        resumable), because the server may still finish and charge the task.
        """
        if entry.not_found_since is None:
            entry.not_found_since = now
        entry.not_found_count += 1
        span = now - entry.not_found_since
        age = now - entry.started
        if poll_policy.not_found_ends(self.policy, count=entry.not_found_count, span=span, age=age):
            self.remove(entry.key)
            return Decision(Action.NOT_FOUND, error=self._not_found_text(entry, now))
        return self._continue(entry, now, None)

    def _not_found_text(self, entry: PollEntry, now: float) -> str:
        since = now - (entry.not_found_since if entry.not_found_since is not None else now)
        return (
            f"the server answered 404 (task not found) to the last {entry.not_found_count} "
            f"polls over {_seconds(since)}, {_seconds(now - entry.started)} after submit"
        )

    def _empty_success(self, entry: PollEntry, answer: TaskSnapshot, now: float) -> Decision:
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
        delay = poll_policy.empty_success_delay(
            self.policy, self.stats, looks, now - entry.started, entry.model
        )
        entry.urgent = True  # the server said success: the image is all that is missing
        self._push(entry, min(now + self._jitter(delay), entry.deadline))
        return Decision(Action.CONTINUE)

    def _continue(self, entry: PollEntry, now: float, snapshot: TaskSnapshot | None) -> Decision:
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
