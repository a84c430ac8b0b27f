"""The fake-clock polling model (benchmarks/polling_model.py) agrees with itself and with
simple facts, so that what it says about the polling goals can be trusted."""

from __future__ import annotations

import random

import pytest

from benchmarks._common import lognormal_durations, poisson_arrivals
from benchmarks.polling_model import (
    DEFAULT_RATE,
    SUBMIT_RATE,
    KnownDistribution,
    ScheduleFollower,
    capped_oracle,
    clairvoyant,
    fixed_poller,
    follow,
    oracle_schedule,
    paced_arrivals,
    simulate,
)
from nanobanana_jupyter import PollPolicy
from nanobanana_jupyter._core.scheduler import PollScheduler

DURATIONS = lognormal_durations(200, seed=11)
ARRIVALS = poisson_arrivals(200, 100.0, seed=12)


def test_simulation_uncapped_matches_the_analytic_fixed_poller() -> None:
    """Following fixed ages through the scheduler and limiter, with no cap, counts the same
    queries and delays as the closed form for a fixed-interval poller."""
    ages = [1.0 * k for k in range(1, 200)]
    simulated = simulate(DURATIONS, ARRIVALS, ScheduleFollower(ages), rate=1e6)
    analytic = fixed_poller(DURATIONS, 1.0)
    assert simulated.queries == pytest.approx(analytic.queries)
    assert simulated.p95 == pytest.approx(analytic.p95, abs=1e-6)
    assert simulated.within_10pct == analytic.within_10pct


def test_the_rate_cap_costs_delay_not_queries_in_the_simulation() -> None:
    """Behind a tight cap the same schedule sends no more queries, and detects later."""
    ages = [0.5 * k for k in range(1, 400)]
    free = simulate(DURATIONS, ARRIVALS, ScheduleFollower(ages), rate=1e6)
    capped = simulate(DURATIONS, ARRIVALS, ScheduleFollower(ages), rate=5.0)
    assert capped.queries <= free.queries
    assert capped.p95 > free.p95


def test_oracle_with_a_heavy_delay_weight_keeps_every_task_within_the_delay() -> None:
    schedule = oracle_schedule(DURATIONS, 1.0, w_abs=1e6, w_rel=0.0, step=0.05)
    assert schedule == sorted(schedule)
    assert schedule[-1] >= max(DURATIONS)
    outcome = follow(DURATIONS, schedule)
    assert outcome.p95 <= 1.0 + 1e-9
    # Knowing nothing finishes before 5 s, it never polls before then: cheaper than 1 s polls.
    assert schedule[0] >= 5.0
    assert outcome.queries < fixed_poller(DURATIONS, 1.0).queries


def test_the_session_policy_runs_in_the_model_and_detects_every_task() -> None:
    scheduler = PollScheduler(PollPolicy(), rng=random.Random(1))
    outcome = simulate(DURATIONS, ARRIVALS, scheduler)
    assert len(scheduler) == 0
    assert outcome.queries >= 1
    assert 0 <= outcome.within_10pct <= 1
    # Light load (2 arrivals per second): no detection waits longer than the longest
    # interval, and most tasks are seen within 10% of their duration.
    assert outcome.p95 <= PollPolicy().max_interval
    assert outcome.within_10pct > 0.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_thousand_in_flight_detection_p95_near_the_best_capped_schedule(seed: int) -> None:
    """Issue 18: one ``session.map`` of 1,000 tasks, sent at the default submit cap (so
    completions come slower than the poll cap), polled behind the default poll cap. The
    session's scheduler, which learns the durations as tasks finish, sees tasks done with a
    p95 delay within 1.2x of the best any poller that knows the durations was found to do
    behind the same cap (the goal is 1.5x; serving due polls first due, first served, as
    before, gave 1.27x-1.32x on these seeds)."""
    durations = lognormal_durations(1000, seed=seed)
    arrivals = paced_arrivals(len(durations))
    assert arrivals[-1] == pytest.approx((1000 - SUBMIT_RATE) / SUBMIT_RATE)
    scheduler = PollScheduler(PollPolicy(), rng=random.Random(seed))
    session = simulate(durations, arrivals, scheduler, DEFAULT_RATE)
    _, oracle = capped_oracle(durations, arrivals, delays=(1.0, 4.0), weights=(5.0, 20.0))
    assert len(scheduler) == 0
    assert session.p95 <= 1.2 * oracle.p95, (session, oracle)
    # The cap is what limits both: a poller told each task's own duration sees every task
    # done almost at once (completions come at half the cap), far ahead of both.
    assert clairvoyant(durations, arrivals, DEFAULT_RATE).p95 < 0.1 * oracle.p95


def test_the_known_distribution_oracle_never_learns_past_what_it_was_told() -> None:
    oracle = KnownDistribution(DURATIONS)
    before = oracle.stats.count("model")
    simulate(DURATIONS, ARRIVALS, oracle, DEFAULT_RATE)
    assert oracle.stats.count("model") == before == len(DURATIONS)
