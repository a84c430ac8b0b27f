"""The fake-clock polling model (benchmarks/polling_model.py) agrees with itself and with
simple facts, so that what it says about the polling goals can be trusted."""

from __future__ import annotations

import random

import pytest

from benchmarks._common import lognormal_durations, poisson_arrivals
from benchmarks.polling_model import (
    ScheduleFollower,
    fixed_poller,
    follow,
    oracle_schedule,
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
