"""The poll scheduler's decisions on a fake clock (reliability.md rows P1-P12)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random

import pytest

from nanobanana_jupyter import (
    APIError,
    AuthenticationError,
    NotFoundError,
    ServerError,
    TaskSnapshot,
)
from nanobanana_jupyter._core import poll_policy
from nanobanana_jupyter._core.poll_loop import PollLoop, RateLimiter
from nanobanana_jupyter._core.poll_policy import Action, DurationStats, PollPolicy
from nanobanana_jupyter._core.scheduler import PollScheduler


def snap(status: str, task_id: str = "t1") -> TaskSnapshot:
    # A success carries its image: one without is not final (issue 14 item 2).
    result = [{"image": "https://cdn.example/x.png"}] if status == "success" else []
    return TaskSnapshot.from_data({"task_id": task_id, "status": status, "result": result})


def run_until_done(
    sched: PollScheduler, answers: object, *, start: float = 0.0, limit: int = 1000
) -> tuple[list[float], Action]:
    """Drive one task through the scheduler: answer each due poll; return poll times."""
    now = start
    times: list[float] = []
    for _ in range(limit):
        due = sched.next_due()
        assert due is not None
        now = max(now, due)
        entry = sched.pop_due(now)
        assert entry is not None
        times.append(now)
        answer = answers(now) if callable(answers) else answers
        decision = sched.on_answer(entry, answer, now)
        if decision.action is not Action.CONTINUE:
            return times, decision.action
    raise AssertionError("never finished")


def test_p1_schedule_grows_with_age_within_bounds() -> None:
    """P1: first poll after the initial delay, then intervals ~age fraction, within min/max."""
    policy = PollPolicy(jitter=0.0)
    sched = PollScheduler(policy, rng=random.Random(1))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(
        sched, lambda now: snap("success" if now >= 120 else "in_progress")
    )
    assert action is Action.FINISHED
    assert times[0] == pytest.approx(policy.initial_delay)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for t, gap in zip(times, gaps):
        assert policy.min_interval - 1e-9 <= gap <= policy.max_interval + 1e-9
        assert gap == pytest.approx(
            min(policy.max_interval, max(policy.min_interval, policy.age_fraction * t))
        )
    # Seen done at most one interval late, and with a bounded number of polls.
    assert times[-1] - 120 <= policy.age_fraction * times[-1] + 1e-9
    assert len(times) < 50


def test_jitter_stays_within_bounds_and_spreads_tasks() -> None:
    """Jittered intervals stay within +-jitter, and tasks started together drift apart."""
    policy = PollPolicy(jitter=0.1)
    sched = PollScheduler(policy, rng=random.Random(7))
    for i in range(20):
        sched.add(f"k{i}", f"t{i}", "m", now=0.0, deadline=600.0)
    firsts = []
    while (entry := sched.pop_due(10.0)) is not None:
        firsts.append(entry.next_at)
    assert len(firsts) == 20
    assert all(1.8 - 1e-9 <= t <= 2.2 + 1e-9 for t in firsts)
    assert len(set(firsts)) > 15


def test_first_poll_learns_from_past_durations_of_the_model() -> None:
    """After a few tasks of a model took 20-30 s, the first poll waits close to 20 s."""
    stats = DurationStats()
    for d in (20, 22, 25, 30, 28):
        stats.add("slow-model", d)
    sched = PollScheduler(PollPolicy(jitter=0.0), stats=stats)
    assert 15 <= sched.first_delay("slow-model") <= 20
    assert sched.first_delay("other-model") == pytest.approx(2.0)


def test_finished_tasks_teach_the_stats() -> None:
    """A task's observed duration is recorded for its model when it finishes."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=100.0, started=90.0, deadline=1000.0)
    entry = sched.pop_due(200.0)
    assert entry is not None
    assert sched.on_answer(entry, snap("success"), 130.0).action is Action.FINISHED
    assert sched.stats.quantile("m", 0.5) == pytest.approx(40.0)


def test_p3_early_404_is_tolerated_late_404_is_terminal() -> None:
    """P3: 404s within the grace period keep polling; only 404s that last end the task."""
    policy = PollPolicy(jitter=0.0, not_found_grace=30.0, not_found_span=60.0)
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    not_found = NotFoundError("gone", status_code=404)
    times, action = run_until_done(sched, not_found)
    assert action is Action.NOT_FOUND
    # Issue 14 item 3: not at the first 404 past the grace period, but once the 404s have
    # gone on for not_found_span since the first one.
    assert times[-1] >= times[0] + 60.0 and all(t < times[0] + 60.0 for t in times[:-1])
    assert times[-1] >= 30.0

    sched.add("k2", "t2", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(
        sched, lambda now: not_found if now < 5 else snap("success", "t2")
    )
    assert action is Action.FINISHED


NOT_FOUND = NotFoundError("task not found", status_code=404)


def test_h3_one_late_404_never_ends_a_task() -> None:
    """H3: a single 404 long after submit is polled again; the next answer decides."""
    sched = PollScheduler(PollPolicy(jitter=0.0, not_found_grace=30.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    late: list[float] = []

    def answer(now: float) -> TaskSnapshot | NotFoundError:
        if now >= 40.0 and not late:
            late.append(now)  # the first poll past 40 s, well past the grace period
            return NOT_FOUND
        return snap("success" if late else "in_progress")

    times, action = run_until_done(sched, answer)
    assert late and action is Action.FINISHED and times[-1] > late[0]


def test_h3_a_resumed_old_task_survives_a_404_on_its_first_poll() -> None:
    """H3: after a restart, an hour-old task whose first poll answers 404 is polled again."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=5000.0, started=1400.0, deadline=5600.0, poll_now=True)
    answers = [NOT_FOUND, snap("success")]
    times, action = run_until_done(sched, lambda now: answers.pop(0))
    assert action is Action.FINISHED and len(times) == 2


def test_h3_only_404s_spread_over_the_span_end_a_task() -> None:
    """H3: not_found needs not_found_polls 404s in a row, spanning not_found_span."""
    policy = PollPolicy(
        jitter=0.0, not_found_grace=0.0, not_found_span=60.0, not_found_polls=3, max_interval=100
    )
    # Many 404s within a short time are not enough.
    sched = PollScheduler(dataclasses.replace(policy, max_interval=1.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(sched, NOT_FOUND)
    assert action is Action.NOT_FOUND and times[-1] - times[0] >= 60.0
    # Two 404s far apart are not enough either.
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=10_000.0)
    entry = sched.pop_due(100.0)
    assert entry is not None
    assert sched.on_answer(entry, NOT_FOUND, 100.0).action is Action.CONTINUE
    entry = sched.pop_due(1000.0)
    assert entry is not None
    assert sched.on_answer(entry, NOT_FOUND, 1000.0).action is Action.CONTINUE
    entry = sched.pop_due(2000.0)
    assert entry is not None
    decision = sched.on_answer(entry, NOT_FOUND, 2000.0)
    assert decision.action is Action.NOT_FOUND
    assert decision.error is not None and "3 polls" in decision.error and "404" in decision.error


def test_h3_an_answer_between_404s_starts_the_count_again() -> None:
    """H3: any real answer between 404s resets the streak: it must start over to end."""
    policy = PollPolicy(jitter=0.0, not_found_grace=0.0, not_found_span=10.0, max_interval=4.0)
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=100.0)
    # A 404 every poll except one in every three: no streak ever spans 10 s.
    count = itertools.count()
    times, action = run_until_done(
        sched, lambda now: snap("in_progress") if next(count) % 3 == 2 else NOT_FOUND
    )
    assert action is Action.TIMED_OUT and times[-1] == pytest.approx(100.0)


def test_h3_server_errors_neither_reset_nor_count_towards_not_found() -> None:
    """H3: a 5xx between 404s says nothing about the task: the streak goes on, uncounted."""
    policy = PollPolicy(
        jitter=0.0, not_found_grace=0.0, not_found_span=10.0, not_found_polls=3, max_interval=4.0
    )
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=1000.0)
    count = itertools.count()
    boom = ServerError("boom", status_code=503)
    times, action = run_until_done(sched, lambda now: boom if next(count) % 2 else NOT_FOUND)
    assert action is Action.NOT_FOUND and times[-1] - times[0] >= 10.0


def test_h3_timed_out_while_404s_says_so() -> None:
    """H3: a deadline reached during 404s ends timed out, saying the server did not know it."""
    policy = PollPolicy(jitter=0.0, not_found_grace=0.0, not_found_span=1000.0)
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=100.0)
    due = sched.next_due()
    decision = None
    while due is not None:
        entry = sched.pop_due(due)
        assert entry is not None
        decision = sched.on_answer(entry, NOT_FOUND, due)
        due = sched.next_due()
    assert decision is not None and decision.action is Action.TIMED_OUT
    assert decision.error is not None and "404" in decision.error


def empty_success(task_id: str = "t1", result: object = None) -> TaskSnapshot:
    return TaskSnapshot.from_data({"task_id": task_id, "status": "success", "result": result})


def with_image(task_id: str = "t1") -> TaskSnapshot:
    return TaskSnapshot.from_data(
        {"task_id": task_id, "status": "success", "result": {"image": "https://x/y.png"}}
    )


def test_h2_success_before_its_result_is_written_is_polled_again() -> None:
    """H2: a success with a null result is polled again soon; the filled answer finishes."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    answers = [snap("in_progress"), empty_success(), empty_success(), with_image()]
    decisions = []
    now = 0.0
    times = []
    while answers:
        due = sched.next_due()
        assert due is not None
        now = due
        entry = sched.pop_due(now)
        assert entry is not None
        times.append(now)
        decisions.append(sched.on_answer(entry, answers.pop(0), now))
    actions = [d.action for d in decisions]
    assert actions == [Action.CONTINUE] * 3 + [Action.FINISHED]
    assert decisions[-1].snapshot is not None and decisions[-1].snapshot.images
    # The empty successes are never passed on as a state to record (success is final).
    assert all(d.snapshot is None for d in decisions[1:3])
    # Looked at again soon, not on the task's slow schedule.
    assert times[2] - times[1] <= 2 * sched.policy.min_interval + 1e-9
    assert times[3] - times[1] <= 6 * sched.policy.min_interval + 1e-9


@pytest.mark.parametrize("result", [None, [], {}, [{"image": None}], "javascript:x"])
def test_h2_success_that_never_carries_an_image_ends_no_result_bounded(result: object) -> None:
    """H2: a success with no image or text is looked at a bounded number of times more."""
    policy = PollPolicy(jitter=0.0, empty_success_polls=3)
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(sched, lambda now: empty_success(result=result))
    assert action is Action.NO_RESULT
    assert len(times) == 1 + 3
    assert times[-1] - times[0] < 10 * policy.min_interval
    assert "k" not in sched and sched.next_due() is None


def test_h2_no_result_decision_carries_the_last_answer() -> None:
    """H2: the no-result decision hands the session the last answer, with its raw result."""
    sched = PollScheduler(PollPolicy(jitter=0.0, empty_success_polls=0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    entry = sched.pop_due(10.0)
    assert entry is not None
    decision = sched.on_answer(entry, empty_success(result={"image": None}), 10.0)
    assert decision.action is Action.NO_RESULT
    assert decision.snapshot is not None and decision.snapshot.raw_result == '{"image": null}'


def test_h2_empty_success_at_the_deadline_ends_no_result_not_timed_out() -> None:
    """H2: the server said success: at the deadline the task ends no-result, not timed out."""
    sched = PollScheduler(PollPolicy(jitter=0.0, empty_success_polls=100))
    sched.add("k", "t1", "m", now=0.0, deadline=20.0)
    times, action = run_until_done(
        sched, lambda now: empty_success() if now >= 10 else snap("in_progress")
    )
    assert action is Action.NO_RESULT and times[-1] == pytest.approx(20.0)


def test_h2_text_only_success_is_final_at_once() -> None:
    """H2: a success whose entries carry only text is a genuine answer: finished at once."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(
        sched, lambda now: empty_success(result=[{"text": "I would rather not"}])
    )
    assert action is Action.FINISHED and len(times) == 1


def test_p4_auth_failure_stops_polling() -> None:
    """P4: a 401 while polling stops at once (no further polls for that task)."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(sched, AuthenticationError("bad key", status_code=401))
    assert action is Action.AUTH_FAILED and len(times) == 1
    assert sched.next_due() is None


def test_p5_never_finishing_task_times_out_with_a_last_poll_at_the_deadline() -> None:
    """P5: a stuck task is polled a bounded number of times, the last exactly at the deadline."""
    policy = PollPolicy(jitter=0.0)
    sched = PollScheduler(policy)
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(sched, snap("in_progress"))
    assert action is Action.TIMED_OUT
    assert times[-1] == pytest.approx(600.0)
    assert len(times) < 80


@pytest.mark.parametrize("raw", ["queued", "", None, 123, {"nested": "object"}])
def test_p6_unknown_status_keeps_polling_until_the_deadline(raw: object) -> None:
    """P6: an unknown status is treated as not finished and the deadline still applies."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=0.0, deadline=100.0)
    weird = TaskSnapshot.from_data({"task_id": "t1", "status": raw})
    times, action = run_until_done(sched, weird)
    assert action is Action.TIMED_OUT and times[-1] == pytest.approx(100.0)


def test_server_errors_after_client_retries_keep_the_schedule() -> None:
    """A poll that failed after its own retries is simply polled again later."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    flaky = [ServerError("boom", status_code=503), APIError("odd"), snap("success")]
    times, action = run_until_done(sched, lambda now: flaky.pop(0))
    assert action is Action.FINISHED and len(times) == 3


def test_p12_terminal_answer_retires_the_task_for_good() -> None:
    """P12: once finished, a late answer for the task changes nothing and nothing is polled."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    entry = sched.pop_due(10.0)
    assert entry is not None
    assert sched.on_answer(entry, snap("success"), 10.0).action is Action.FINISHED
    late = sched.on_answer(entry, snap("in_progress"), 11.0)
    assert late.action is Action.CONTINUE and "k" not in sched and sched.next_due() is None


def test_poke_polls_at_once_and_remove_cancels() -> None:
    """A webhook hint moves the next poll to now; a removed task is never popped."""
    sched = PollScheduler(PollPolicy(jitter=0.0, initial_delay=50.0))
    sched.add("a", "ta", "m", now=0.0, deadline=600.0)
    sched.add("b", "tb", "m", now=0.0, deadline=600.0)
    assert sched.poke("a", 1.0)
    entry = sched.pop_due(1.0)
    assert entry is not None and entry.key == "a"
    sched.remove("b")
    assert sched.pop_due(1000.0) is None


def test_p11_rate_limiter_caps_requests_per_second() -> None:
    """P11: the token bucket never lets more than rate*t + burst requests through."""
    limiter = RateLimiter(rate=5.0, burst=2.0)
    now, sent = 0.0, []
    while now < 10.0:
        ready = limiter.ready_at(now)
        now = ready
        limiter.take(now)
        sent.append(now)
    for i, t in enumerate(sent):
        assert i + 1 <= 5.0 * t + 2.0 + 1e-9


def test_429_halves_the_rate_and_honours_retry_after() -> None:
    """A 429 pauses everything for Retry-After and halves the rate; successes recover it."""
    limiter = RateLimiter(rate=10.0)
    limiter.on_rate_limited(now=5.0, retry_after=3.0)
    assert limiter.rate == 5.0
    assert limiter.ready_at(5.0) >= 8.0
    for _ in range(100):
        limiter.on_success()
    assert limiter.rate == 10.0


def test_poll_loop_respects_the_in_flight_cap() -> None:
    """The async driver never has more queries in flight than its cap, and finishes all."""
    sched = PollScheduler(
        PollPolicy(initial_delay=0.001, min_interval=0.001, max_interval=0.002, jitter=0.0)
    )
    in_flight = 0
    peak = 0
    calls: dict[str, int] = {}
    done: list[str] = []

    async def query(task_id: str) -> TaskSnapshot:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1
        calls[task_id] = calls.get(task_id, 0) + 1
        return snap("success" if calls[task_id] >= 3 else "in_progress", task_id)

    def on_decision(key: str, decision: object) -> None:
        if getattr(decision, "action", None) is Action.FINISHED:
            done.append(key)

    async def main() -> None:
        loop = PollLoop(sched, query, on_decision, max_per_second=10_000, max_in_flight=3)
        now = asyncio.get_running_loop().time()
        for i in range(20):
            sched.add(f"k{i}", f"t{i}", "m", now=0.0, deadline=1e9)
        loop._clock = lambda: asyncio.get_running_loop().time() - now
        loop.wake()
        for _ in range(500):
            if len(done) == 20:
                break
            await asyncio.sleep(0.01)
        await loop.aclose()

    asyncio.run(main())
    assert len(done) == 20
    assert peak <= 3
    assert all(n == 3 for n in calls.values())


def _learned(durations: list[float], **policy: float) -> PollScheduler:
    stats = DurationStats()
    for d in durations:
        stats.add("m", d)
    return PollScheduler(PollPolicy(jitter=0.0, **policy), stats=stats)  # type: ignore[arg-type]


def test_learned_schedule_is_dense_where_tasks_usually_end() -> None:
    """Within the usual range the interval is capped at a fraction of the median duration."""
    sched = _learned([10, 12, 15, 18, 20, 25, 30, 45])
    median = sched.stats.quantile("m", 0.5)
    assert median is not None
    policy = sched.policy
    assert sched.interval(30.0, "m") == pytest.approx(policy.bulk_fraction * median)
    assert sched.interval(30.0) == pytest.approx(policy.age_fraction * 30.0)  # unknown model


def test_learned_schedule_backs_off_in_the_slow_tail() -> None:
    """Past the slowest durations seen, intervals grow with age (up to max_interval)."""
    sched = _learned([10, 12, 15, 18, 20])
    assert sched.interval(40.0, "m") == pytest.approx(sched.policy.tail_fraction * 40.0)
    assert sched.interval(400.0, "m") == pytest.approx(15.0)


def test_jitter_only_ever_shortens_an_interval() -> None:
    """Jittered delays lie within [1 - jitter, 1] of the planned one."""
    sched = PollScheduler(PollPolicy(jitter=0.1), rng=random.Random(3))
    for _ in range(200):
        value = sched._jitter(10.0)
        assert 9.0 <= value <= 10.0


@pytest.mark.parametrize("duration", [5.0, 6.3, 9.9, 14.2, 22.0, 37.5])
def test_learned_model_sees_tasks_done_within_ten_percent(duration: float) -> None:
    """Once durations are learned, a task in the usual range is seen done within 10% of T."""
    sched = _learned([5, 6, 8, 10, 12, 15, 18, 22, 30, 40, 45, 50])
    sched.add("k", "t1", "m", now=0.0, deadline=600.0)
    times, action = run_until_done(
        sched, lambda now: snap("success" if now >= duration else "in_progress")
    )
    assert action is Action.FINISHED
    assert times[-1] - duration <= 0.1 * duration + 1e-9
    assert times[0] >= 4.5  # nothing is polled before the shortest task could be done


def test_poll_loop_closes_even_when_woken_in_the_same_step() -> None:
    """aclose() ends the loop when a wake comes in the same loop step as the cancel.

    On Python 3.11, ``asyncio.wait_for`` returns the inner result instead of raising when it
    is cancelled just as the inner future completes: a loop that waited for its wake that way
    swallowed aclose()'s cancel and went on polling until its tasks ended (leases held
    seconds after close, tests/reliability H14 in CI).
    """
    sched = PollScheduler(PollPolicy(initial_delay=1e6, jitter=0.0))
    queries: list[str] = []

    async def query(task_id: str) -> TaskSnapshot:
        queries.append(task_id)
        return snap("in_progress", task_id)

    async def main() -> None:
        loop = PollLoop(sched, query, lambda key, decision: None)
        sched.add("k", "t", "m", now=0.0, deadline=1e9)
        loop._clock = lambda: 0.0
        loop.wake()
        for _ in range(3):
            await asyncio.sleep(0)  # the runner now waits for its wake (the poll is far off)
        loop.wake()  # the wake and the cancel land in the same step
        await asyncio.wait_for(loop.aclose(), 2)

    for _ in range(20):
        asyncio.run(main())
    assert queries == []


# -- behind the cap: which due poll goes first (issue 18) ---------------------------------


def test_done_chance_reads_age_against_the_durations_seen() -> None:
    """Zero for a task just polled, higher the further its age has gone into the durations
    seen since its last poll; before enough are seen, a guess that only weighs the ages."""
    stats = DurationStats()
    policy = PollPolicy()
    unknown = [poll_policy.done_chance(policy, stats, "m", 0.0, age) for age in (1, 4, 8, 30)]
    assert unknown[0] == 0.0 and unknown == sorted(unknown) and unknown[-1] < 1
    for d in range(10, 30):
        stats.add("m", float(d))
    assert poll_policy.done_chance(policy, stats, "m", 12.0, 12.0) == 0.0
    assert poll_policy.done_chance(policy, stats, "m", 0.0, 9.0) == 0.0  # none done so young
    near = poll_policy.done_chance(policy, stats, "m", 15.0, 20.0)
    far = poll_policy.done_chance(policy, stats, "m", 15.0, 28.0)
    assert 0 < near < far < 1
    # Older than any seen: still a chance (a heavy tail), smaller for a shorter wait.
    assert poll_policy.done_chance(policy, stats, "m", 40.0, 41.0) > 0
    assert poll_policy.done_chance(policy, stats, "m", 40.0, 41.0) < far


def _crowded(n: int, *, ages: list[float], max_wait: float = 30.0) -> PollScheduler:
    """``n`` due tasks of a learned model (durations 10-29 s), submitted ``ages`` ago."""
    sched = _learned([float(d) for d in range(10, 30)], max_wait=max_wait)
    for i, age in enumerate(ages):
        sched.add(f"k{i}", f"t{i}", "m", now=100.0, started=100.0 - age, deadline=1e9)
    return sched


def test_behind_the_cap_the_task_likeliest_done_goes_first_not_the_first_due() -> None:
    """Of the due polls, the task whose age is in the range where its model's tasks finish
    goes before a younger one due earlier."""
    sched = _crowded(3, ages=[11.0, 25.0, 12.0])
    sched._entries["k1"].next_at = 100.0  # (due last: pushed after the others)
    first = sched.pop_due(100.0)
    assert first is not None and first.key == "k1"


def test_a_hint_or_a_resume_goes_ahead_of_likelier_tasks() -> None:
    sched = _crowded(3, ages=[11.0, 25.0, 12.0])
    assert sched.poke("k0", 100.0)
    entry = sched.pop_due(101.0)
    assert entry is not None and entry.key == "k0"
    sched.add("r", "tr", "m", now=101.0, started=0.0, deadline=1e9, poll_now=True)
    entry = sched.pop_due(101.0)
    assert entry is not None and entry.key == "r"


def _crowd_under_a_tight_cap(seed: int, max_wait: float) -> tuple[float, PollScheduler]:
    """The longest gap between two polls of one of 30 old tasks (see the test below)."""
    rng = random.Random(seed)
    sched = _learned([float(d) for d in range(10, 30)], max_wait=max_wait)
    last: dict[str, float] = {}
    worst = now = 0.0
    for i in range(30):
        sched.add(f"old{i}", f"o{i}", "m", now=0.0, started=-rng.uniform(40, 400), deadline=1e9)
        last[f"old{i}"] = 0.0
    fresh = 0
    while now < 600.0:
        now += 1.0  # the cap: one poll per second
        if rng.random() < 0.3:
            sched.add(f"new{fresh}", f"n{fresh}", "m", now=now, deadline=1e9)
            fresh += 1
        entry = sched.pop_due(now)
        if entry is None:
            continue
        if entry.key in last:
            worst = max(worst, now - last[entry.key])
            last[entry.key] = now
        done = entry.key.startswith("new") and now - entry.started >= 15.0
        sched.on_answer(entry, snap("success" if done else "in_progress"), now)
    assert fresh > 100 and len(sched) < 30 + 20
    return max(worst, *(now - t for t in last.values())), sched


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_behind_a_tight_cap_no_task_goes_unpolled_past_its_interval_plus_max_wait(
    seed: int,
) -> None:
    """Starvation bound: 30 old tasks that never finish, behind a cap of 1 poll per second
    (too few for their schedules, enough to poll each every interval + max_wait), while new
    tasks keep arriving (and finish at 15 s), each in turn at the age where tasks usually
    finish, which a pure "likeliest done" rule would serve first for ever. Every old task is
    still polled within its interval + ``max_wait`` + a few seconds (starved polls queue
    behind each other at the cap's pace); without the bound some wait far longer."""
    worst, sched = _crowd_under_a_tight_cap(seed, max_wait=30.0)
    assert worst <= sched.policy.max_interval + sched.policy.max_wait + 5.0
    unbounded, _ = _crowd_under_a_tight_cap(seed, max_wait=1e6)
    assert unbounded > sched.policy.max_interval + sched.policy.max_wait + 10.0


def test_a_crowd_of_young_tasks_past_max_wait_does_not_take_the_cap_from_tasks_ending() -> None:
    """Issue 18 (bench_growth's 1,000 in flight: p95 4.8x the oracle): tasks younger than
    every duration seen cannot have finished, by what was seen; once a cap too small for
    the crowd had held their polls back ``max_wait``, the starvation bound served them
    first due first, ahead of the tasks in the range where the model's tasks end, and the
    whole cap went round the young crowd. They now wait their turn by the chance they are
    done."""
    sched = PollScheduler(PollPolicy(jitter=0.0))
    for i in range(50):  # polled before anything was learned: due at t=50
        sched.add(f"young{i}", f"y{i}", "m", now=48.0, deadline=1e9)
    for d in range(100, 130):  # then tasks of 100-129 s end
        sched.stats.add("m", float(d))
    sched.add("ending", "e", "m", now=99.0, started=-11.0, deadline=1e9)  # 111 s old at 100
    entry = sched.pop_due(100.0)  # the young ones are 52 s old, 50 s past due
    assert entry is not None and entry.key == "ending"
    # With nothing likelier waiting, the young crowd is still served, first due first.
    entry = sched.pop_due(100.0)
    assert entry is not None and entry.key == "young0"


def test_among_polls_past_max_wait_the_one_that_cuts_the_most_delay_goes_first() -> None:
    """Two polls past ``max_wait``: the one likelier done (older, longer unpolled) goes
    first, though due later."""
    sched = _learned([float(d) for d in range(10, 30)])
    sched.add("k0", "t0", "m", now=50.0, started=40.0, deadline=1e9)  # due at 50, age 60
    sched.add("k1", "t1", "m", now=60.0, started=0.0, deadline=1e9)  # due at 60, age 100
    entry = sched.pop_due(100.0)
    assert entry is not None and entry.key == "k1"
