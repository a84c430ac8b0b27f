"""Issue 18: a thousand live cards cost what a person can see, not one update per card per
second. The ticker refreshes the running cards' elapsed time within one budget of updates per
second for the whole session, the cards longest without a refresh first, and an older card's
elapsed time is shown coarser, so it needs fewer refreshes. Fake clocks throughout."""

from __future__ import annotations

from collections import Counter

import pytest

from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._core.task import Task, TaskState
from nanobanana_jupyter._display.live import REFRESH_BUDGET, LiveOutputs
from nanobanana_jupyter._display.words import coarse_elapsed, elapsed_step, format_duration
from nanobanana_jupyter._wire.models import TaskStatus
from tests.unit.test_display import Clock, Runner, Session, Shown
from tests.unit.test_render import make_record


def _running(session: Session, count: int, *, age: float, clock: Clock) -> list[Task]:
    """``count`` running tasks, each created ``age`` seconds before ``clock.now``."""
    tasks = []
    for i in range(count):
        record = make_record(
            TaskStatus.IN_PROGRESS,
            paths=(),
            local_id=f"loc-{i}",
            created_at=clock.now - age,
            updated_at=clock.now - age,
        )
        task = Task(session, TaskState(record))  # type: ignore[arg-type]
        session.handles[record.local_id] = task
        tasks.append(task)
    return tasks


def _live(clock: Clock) -> tuple[LiveOutputs, Session, Shown, Runner]:
    runner, shown = Runner(), Shown()
    session = Session(runner)
    live = LiveOutputs(
        session,  # type: ignore[arg-type]
        show=shown,
        update=shown,
        clock=clock,
        wall=clock,
        tick_seconds=1.0,
    )
    return live, session, shown, runner


@pytest.mark.parametrize(
    ("seconds", "step"),
    [(0, 1), (59, 1), (60, 10), (599, 10), (600, 60), (3599, 60), (3600, 300), (90000, 300)],
)
def test_the_refresh_step_grows_with_the_cards_age(seconds: float, step: float) -> None:
    assert elapsed_step(seconds) == step


def test_an_older_card_shows_its_elapsed_time_to_its_step() -> None:
    """Under a minute as today (tenths below 10 s); then to 10 s, a minute, 5 minutes."""
    assert coarse_elapsed(4.26) == 4.26 and coarse_elapsed(42.7) == 42.7
    assert format_duration(coarse_elapsed(75.9)) == "1 min 10 s"
    assert format_duration(coarse_elapsed(12 * 60 + 41)) == "12 min"
    assert format_duration(coarse_elapsed(3600 + 7 * 60 + 59)) == "1 h 5 min"


def test_a_thousand_young_cards_stay_within_the_sessions_budget() -> None:
    """1,000 running cards a few seconds old: each tick sends at most the budget (not 1,000),
    and over a minute every card is refreshed, the least recently refreshed first."""
    clock = Clock()
    live, session, shown, runner = _live(clock)
    tasks = _running(session, 1000, age=2.0, clock=clock)
    for task in tasks:
        live.open(task, embed="none", side=64)
    opened = len(shown.calls)
    assert opened == 1000
    per_tick = []
    for _ in range(60):
        clock.now += 1.0
        before = len(shown.calls)
        assert live.ticker.tick() is True
        per_tick.append(len(shown.calls) - before)
    assert max(per_tick) <= REFRESH_BUDGET, per_tick
    assert sum(per_tick) >= REFRESH_BUDGET * 59  # the budget is used, not wasted
    refreshed = Counter(display_id for display_id, _ in shown.calls[opened:])
    assert len(refreshed) == 1000  # nobody starved: in turn
    assert max(refreshed.values()) - min(refreshed.values()) <= 1
    live.close()
    runner.run_all()


def test_status_changes_count_against_the_budget_and_are_never_held_back() -> None:
    """A burst of task changes is shown at once (each card's new status is news), and the
    elapsed-time refreshes of that second give way to it."""
    clock = Clock()
    live, session, shown, runner = _live(clock)
    tasks = _running(session, 200, age=2.0, clock=clock)
    for task in tasks:
        live.open(task, embed="none", side=64)
    clock.now += 1.0
    before = len(shown.calls)
    for task in tasks[:REFRESH_BUDGET]:
        done = task.record.replace(status=TaskStatus.SUCCESS, updated_at=clock.now)
        task._state.update(done)
        for listener in session.listeners:
            listener(TaskEvent(task, done))
    assert len(shown.calls) - before == REFRESH_BUDGET  # every change shown
    assert live.ticker.tick() is True
    assert len(shown.calls) - before == REFRESH_BUDGET  # no refresh on top this second
    clock.now += 1.0
    before = len(shown.calls)
    assert live.ticker.tick() is True
    assert 0 < len(shown.calls) - before <= REFRESH_BUDGET
    live.close()
    runner.run_all()


def test_an_hour_old_card_is_refreshed_once_per_its_step() -> None:
    """A card over an hour old shows its time to 5 minutes: in 20 minutes of ticks it is sent
    four or five times, not 1,200."""
    clock = Clock()
    live, session, shown, runner = _live(clock)
    (task,) = _running(session, 1, age=3 * 3600.0, clock=clock)
    live.open(task, embed="none", side=64)
    before = len(shown.calls)
    for _ in range(20 * 60):
        clock.now += 1.0
        assert live.ticker.tick() is True
    assert 4 <= len(shown.calls) - before <= 5
    live.close()
    runner.run_all()
