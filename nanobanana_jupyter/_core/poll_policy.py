"""When to poll a task, and the words for what a poll's answer means. Pure maths, no clock.

The decisions take the time as an argument, so they are tested on a fake clock; the
:class:`~nanobanana_jupyter._core.scheduler.PollScheduler` keeps each task's state and the
queue of due polls, and the :class:`~nanobanana_jupyter._core.poll_loop.PollLoop` runs them
on the engine.

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
  whole session down (multiplicative decrease, slow recovery);
* when more polls are due than the cap lets through, the task most likely to have finished
  since its last poll goes first (:func:`done_chance`: its age against the durations seen
  for its model), not the one due longest: with many tasks in flight the cap goes where
  completions are, instead of round the queue. A due poll that has waited ``max_wait``
  goes ahead of likelier ones, so no task goes unpolled for longer than its interval plus
  ``max_wait`` while the cap can poll every task that often; a task younger than every
  duration seen for its model (it cannot have finished, by what was seen) never jumps the
  queue that way.

The default numbers were chosen with ``python -m benchmarks.polling_model``, a fake-clock
model that runs the scheduler behind the default cap on the benchmark's workload, next to
the best schedules possible when durations are known in advance (benchmarks/README.md).
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import math
from collections import defaultdict, deque

from nanobanana_jupyter._wire.snapshot import TaskSnapshot

__all__ = [
    "Action",
    "Decision",
    "DurationStats",
    "PollPolicy",
    "done_chance",
    "empty_success_delay",
    "first_delay",
    "interval",
    "not_found_ends",
]


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
    max_wait: float = 30.0
    """A due poll held back by the cap (for likelier ones) goes first once it has waited
    this long: the bound on how long any task can go unpolled past its interval. Not for a
    task younger than every duration seen for its model: it waits its turn by the chance
    that it has finished, so a crowd of young tasks cannot take the cap from those ending."""
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        values = (
            self.initial_delay,
            self.min_interval,
            self.max_interval,
            self.max_wait,
            self.time_scale,
        )
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

    def survival(self, model: str, age: float) -> float | None:
        """The share of past tasks still running at ``age`` (``None``: none seen), smoothed
        so that it is never 0: past the longest one seen it falls as ``1/age`` (a heavy
        tail: a task older than any seen may still finish)."""
        ordered = self._sorted.get(model)
        if not ordered:
            return None
        n = len(ordered)
        done = bisect.bisect_right(ordered, age)
        if done < n:
            return (n - done + 1) / (n + 1)
        return ordered[-1] / max(age, ordered[-1]) / (n + 1)

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
    """What one poll answer means for the session (see :class:`Action`)."""

    action: Action
    snapshot: TaskSnapshot | None = None
    error: str | None = None
    polls: int = 0
    """Polls made for the task so far (by this scheduler)."""


def _scale(policy: PollPolicy, seconds: float) -> float:
    return seconds * policy.time_scale


def _learned(policy: PollPolicy, stats: DurationStats, model: str) -> bool:
    return stats.count(model) >= policy.min_samples


def first_delay(policy: PollPolicy, stats: DurationStats, model: str) -> float:
    """How long after submit the first poll should come."""
    if _learned(policy, stats, model):
        typical = stats.quantile(model, policy.learn_quantile)
        if typical is not None:
            return max(_scale(policy, policy.min_interval), typical * policy.learn_margin)
    return _scale(policy, policy.initial_delay)


def interval(
    policy: PollPolicy, stats: DurationStats, age: float, model: str | None = None
) -> float:
    """The interval between polls for a task of this age (before jitter)."""
    p = policy
    lower, upper = _scale(p, p.min_interval), _scale(p, p.max_interval)
    between = p.age_fraction * age
    if model is not None and _learned(p, stats, model):
        tail = stats.quantile(model, p.tail_quantile)
        median = stats.quantile(model, 0.5)
        if tail is not None and median is not None:
            if age < tail:
                between = min(between, p.bulk_fraction * median)
            else:
                between = p.tail_fraction * age
    return min(upper, max(lower, between))


def done_chance(
    policy: PollPolicy, stats: DurationStats, model: str, since: float, age: float
) -> float:
    """The chance that a task still running at age ``since`` has finished by ``age``.

    From the durations seen for the model once there are ``min_samples`` of them; before
    that, from a heavy-tailed guess (survival ``initial_delay / age``): only the ratio of
    the ages counts, so a task twice as old as at its last poll is likelier done than one
    polled a moment ago, whatever the durations turn out to be.
    """
    if _learned(policy, stats, model):
        before, now = stats.survival(model, since), stats.survival(model, age)
        if before is not None and now is not None:
            return max(0.0, 1.0 - now / before)
    scale = _scale(policy, policy.initial_delay)
    before, now = min(1.0, scale / max(since, 1e-9)), min(1.0, scale / max(age, 1e-9))
    return max(0.0, 1.0 - now / before)


def not_found_ends(policy: PollPolicy, *, count: int, span: float, age: float) -> bool:
    """Whether a run of ``count`` 404 answers over ``span`` seconds, ``age`` seconds after
    submit, ends polling (see :attr:`PollPolicy.not_found_span`)."""
    return (
        age >= _scale(policy, policy.not_found_grace)
        and count >= policy.not_found_polls
        and span >= _scale(policy, policy.not_found_span)
    )


def empty_success_delay(
    policy: PollPolicy, stats: DurationStats, looks: int, age: float, model: str
) -> float:
    """When to look again after the ``looks``-th success answer without an image or text:
    soon (``min_interval``, doubling), never later than the task's usual schedule."""
    soon: float = _scale(policy, policy.min_interval) * 2 ** (looks - 1)
    return min(soon, interval(policy, stats, age, model))
