"""Unit tests of the sandbox's task state, driven by a fake clock (no server, no sleeping)."""

from __future__ import annotations

import math
import re

import pytest

from nanobanana_jupyter.sandbox import Ledger, TaskPlan
from nanobanana_jupyter.sandbox._faults import Fault, FaultScript
from nanobanana_jupyter.sandbox._state import SubmitRequest, Task, TaskStore, default_duration


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_store(clock: FakeClock, **options: object) -> TaskStore:
    return TaskStore(ledger=Ledger(), clock=clock, **options)  # type: ignore[arg-type]


def request(prompt: str = "a cat") -> SubmitRequest:
    return SubmitRequest(prompt=prompt, model="google/gempix2")


def status_at(store: TaskStore, clock: FakeClock, task: Task, at: float) -> str:
    clock.now = at
    store.settle(task)
    return task.status(at)


def test_status_moves_through_every_phase_in_order() -> None:
    """A 10 s task is pending, then submitted, then in_progress, then success at 10 s."""
    clock = FakeClock()
    store = make_store(clock, duration=10.0)
    task = store.create(request())
    start = clock.now
    assert status_at(store, clock, task, start) == "pending"
    assert status_at(store, clock, task, start + 1.0) == "submitted"
    assert status_at(store, clock, task, start + 2.0) == "in_progress"
    assert status_at(store, clock, task, start + 9.99) == "in_progress"
    assert status_at(store, clock, task, start + 10.0) == "success"


def test_time_scale_shrinks_the_timeline() -> None:
    """With time_scale 0.01 a 10 API-second task ends after 0.1 real seconds."""
    clock = FakeClock()
    store = make_store(clock, duration=10.0, time_scale=0.01)
    task = store.create(request())
    assert task.ends_at == pytest.approx(clock.now + 0.1)
    assert status_at(store, clock, task, clock.now + 0.099) == "in_progress"
    assert status_at(store, clock, task, clock.now + 0.002) == "success"


def test_settle_fires_once_and_records_completion_time() -> None:
    """settle() reports the transition once and the ledger gets the scheduled end time."""
    clock = FakeClock()
    ended: list[str] = []
    store = make_store(clock, duration=4.0)
    store.on_terminal = lambda t: ended.append(t.task_id)
    task = store.create(request())
    assert not store.settle(task)
    clock.now += 100.0
    assert store.settle(task)
    assert not store.settle(task)
    assert ended == [task.task_id]
    assert store.ledger.completed_at == {task.task_id: task.ends_at}


def test_terminal_status_never_changes() -> None:
    """Once settled, a task keeps its final status whatever time is asked about."""
    clock = FakeClock()
    store = make_store(clock, duration=1.0)
    task = store.create(request())
    clock.now += 5
    store.settle(task)
    assert task.status(clock.now - 100) == "success"


def test_capacity_makes_later_tasks_wait_in_submitted() -> None:
    """With capacity 1 the second task stays submitted until the first one ends."""
    clock = FakeClock()
    store = make_store(clock, duration=10.0, capacity=1)
    first = store.create(request("one"))
    second = store.create(request("two"))
    assert first.ends_at is not None
    assert second.started_at == pytest.approx(first.ends_at)
    assert status_at(store, clock, second, clock.now + 5.0) == "submitted"
    assert status_at(store, clock, first, clock.now) == "in_progress"
    assert status_at(store, clock, second, first.ends_at + 0.01) == "in_progress"


def test_capacity_bounds_concurrent_work_for_many_tasks() -> None:
    """At no instant are more than `capacity` tasks in progress."""
    clock = FakeClock()
    store = make_store(clock, duration=lambda p: 1.0 + len(p) % 7, capacity=3)
    tasks = [store.create(request("x" * i)) for i in range(40)]
    edges = sorted({t.started_at for t in tasks} | {t.ends_at or math.inf for t in tasks})
    for instant in edges[:-1]:
        running = sum(1 for t in tasks if t.started_at <= instant < (t.ends_at or math.inf))
        assert running <= 3


def test_stuck_task_never_finishes() -> None:
    """A stuck plan stays in_progress forever."""
    clock = FakeClock()
    store = make_store(clock)
    store.plan(TaskPlan(stuck=True))
    task = store.create(request())
    assert status_at(store, clock, task, clock.now + 1e9) == "in_progress"
    assert store.ledger.completed_at == {}


def test_plans_apply_fifo_with_counts_then_the_default() -> None:
    """Queued plans apply to the next tasks in order; then the constructor's default plan."""
    clock = FakeClock()
    store = make_store(clock, default_plan=TaskPlan(images=2))
    store.plan(TaskPlan(outcome="failed", reason="nope"), count=2)
    store.plan(TaskPlan(text_only=True))
    plans = [store.create(request()).plan for _ in range(4)]
    assert [p.outcome for p in plans] == ["failed", "failed", "success", "success"]
    assert plans[2].text_only
    assert plans[3].images == 2
    assert store.pending_plans() == 0


def test_duration_sources_in_priority_order() -> None:
    """The plan's duration wins over the constructor's, which wins over the default rule."""
    clock = FakeClock()
    store = make_store(clock, duration=lambda prompt: float(len(prompt)))
    store.plan(TaskPlan(duration=3.0))
    planned = store.create(request("abcdef"))
    ruled = store.create(request("abcdef"))
    assert planned.ends_at == pytest.approx(clock.now + 3.0)
    assert ruled.ends_at == pytest.approx(clock.now + 6.0)


def test_default_duration_is_deterministic_and_in_range() -> None:
    """The default duration depends only on the prompt and lies between 4 and 12 s."""
    values = [default_duration(f"prompt {i}") for i in range(200)]
    assert all(4.0 <= v <= 12.0 for v in values)
    assert default_duration("same") == default_duration("same")
    assert len(set(values)) > 150


def test_invisible_for_delays_visibility() -> None:
    """invisible_for is counted in API seconds, scaled like everything else."""
    clock = FakeClock()
    store = make_store(clock, time_scale=0.5)
    store.plan(TaskPlan(invisible_for=2.0))
    task = store.create(request())
    assert task.visible_at == pytest.approx(clock.now + 1.0)


def test_task_ids_are_random_and_service_shaped() -> None:
    """Task ids look like the service's: 'ta' followed by a UUID."""
    clock = FakeClock()
    store = make_store(clock)
    ids = {store.create(request()).task_id for _ in range(50)}
    assert len(ids) == 50
    pattern = re.compile(r"^ta[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    assert all(pattern.match(i) for i in ids)


def test_success_assigns_tokens_and_url_expiry() -> None:
    """A success gets one CDN token per image, expiring url_ttl after the end."""
    clock = FakeClock()
    store = make_store(clock, duration=1.0, url_ttl=30.0, time_scale=0.1)
    store.plan(TaskPlan(images=3))
    task = store.create(request())
    clock.now += 1
    store.settle(task)
    assert len(set(task.tokens)) == 3
    assert task.ends_at is not None
    assert task.urls_expire_at == pytest.approx(task.ends_at + 3.0)
    assert store.by_token(task.tokens[2]) == (task, 2)


def test_failed_and_text_only_tasks_get_no_tokens() -> None:
    """Only successful image results are served by the CDN."""
    clock = FakeClock()
    store = make_store(clock, duration=1.0)
    store.plan(TaskPlan(outcome="failed"))
    store.plan(TaskPlan(text_only=True))
    failed, text = store.create(request()), store.create(request())
    clock.now += 2
    assert store.settle(failed)
    assert store.settle(text)
    assert failed.tokens == ()
    assert text.tokens == ()


def test_mixed_mode_alternates_across_images() -> None:
    """In mixed mode consecutive images alternate between URL and data URI."""
    clock = FakeClock()
    store = make_store(clock, result_mode="mixed")
    task = store.create(request())
    modes = [task.mode_of(i) for i in range(4)]
    assert set(modes) == {"url", "data_uri"}
    assert modes[0] != modes[1]


def test_charges_go_to_the_ledger() -> None:
    """Creating a task charges the configured credits once."""
    clock = FakeClock()
    store = make_store(clock, credits=1.25)
    task = store.create(request())
    assert store.ledger.charges == {task.task_id: 1.25}
    assert store.ledger.tasks == [task.task_id]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"outcome": "maybe"},
        {"duration": -1.0},
        {"duration": math.nan},
        {"invisible_for": math.inf},
        {"images": -1},
        {"result_mode": "ftp"},
    ],
)
def test_invalid_plans_are_refused(kwargs: dict[str, object]) -> None:
    """TaskPlan rejects values that would make a task's timeline meaningless."""
    with pytest.raises(ValueError, match="must be"):
        TaskPlan(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"time_scale": 0.0}, {"capacity": 0}, {"credits": -1.0}, {"result_mode": "x"}],
)
def test_invalid_store_options_are_refused(kwargs: dict[str, object]) -> None:
    """The store refuses options that cannot describe a server."""
    with pytest.raises(ValueError, match="must be"):
        make_store(FakeClock(), **kwargs)


def test_fault_script_is_fifo_with_counts() -> None:
    """Faults apply in order, each to as many requests as its count."""
    script = FaultScript()
    script.add("submit", Fault.RATE_LIMIT, count=2, retry_after=2.0)
    script.add("submit", Fault.SERVER_ERROR_HTML)
    taken = [script.take("submit") for _ in range(4)]
    assert [t.fault if t else None for t in taken] == [
        Fault.RATE_LIMIT,
        Fault.RATE_LIMIT,
        Fault.SERVER_ERROR_HTML,
        None,
    ]
    assert taken[0] is not None
    assert taken[0].retry_after == "2"
    assert script.take("query") is None


@pytest.mark.parametrize(
    ("endpoint", "fault"),
    [("cdn", Fault.MALFORMED_JSON), ("submit", Fault.EXPIRED), ("query", Fault.TRUNCATED)],
)
def test_fault_script_refuses_faults_that_do_not_apply(endpoint: str, fault: Fault) -> None:
    """Scripting a fault on an endpoint where it means nothing is an error, not a no-op."""
    with pytest.raises(ValueError, match="does not apply"):
        FaultScript().add(endpoint, fault)  # type: ignore[arg-type]


def test_fault_script_refuses_bad_endpoint_and_count() -> None:
    """Unknown endpoints and counts below 1 are refused."""
    script = FaultScript()
    with pytest.raises(ValueError, match="unknown endpoint"):
        script.add("upload", Fault.RATE_LIMIT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count"):
        script.add("submit", Fault.RATE_LIMIT, count=0)
    assert script.pending("submit") == []
