"""Budget arithmetic and the cached balance, with fake records, store, engine and clock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, cast

import pytest

from nanobanana_jupyter import BudgetExceededError, TaskRecord, TaskStatus, ValidationError
from nanobanana_jupyter._core.balance import BalanceCache
from nanobanana_jupyter._core.budget import BudgetGuard, BudgetStatus, as_budget
from nanobanana_jupyter._store.store import Store

NANO, OTHER = "google/gempix2", "vendor/new-model"


class FakeStore:
    """The one store call a budget makes: the largest cost seen per model."""

    def __init__(self, costs: dict[str, Decimal]) -> None:
        self.costs = costs
        self.asked: list[str] = []

    def largest_cost(self, model: str) -> Decimal | None:
        self.asked.append(model)
        return self.costs.get(model)


def record(status: TaskStatus, model: str = NANO, consumed: str | None = None) -> TaskRecord:
    return TaskRecord(
        local_id=uuid.uuid4().hex,
        status=status,
        prompt="p",
        model=model,
        fingerprint=uuid.uuid4().hex,
        created_at=0.0,
        updated_at=0.0,
        consumed=None if consumed is None else Decimal(consumed),
    )


def guard(
    records: list[TaskRecord], limit: str | None, costs: dict[str, Decimal] | None = None
) -> tuple[BudgetGuard, FakeStore]:
    store = FakeStore(costs if costs is not None else {NANO: Decimal("0.5")})
    budget = BudgetGuard(cast(Store, store), lambda: records)
    budget.limit = None if limit is None else Decimal(limit)
    return budget, store


def test_spent_is_known_costs_and_in_flight_is_estimates() -> None:
    """Known costs are spent; tasks that may still be charged count the model's estimate;
    not-sent and failed-without-cost count nothing."""
    records = [
        record(TaskStatus.SUCCESS, consumed="0.5"),
        record(TaskStatus.FAILED, consumed="0.25"),
        record(TaskStatus.IN_PROGRESS),
        record(TaskStatus.WAITING_TO_SEND),
        record(TaskStatus.SUBMIT_UNKNOWN),
        record(TaskStatus.NOT_SENT),
        record(TaskStatus.FAILED),
    ]
    status = guard(records, "5")[0].status()
    assert (status.spent, status.in_flight, status.left) == (
        Decimal("0.75"),
        Decimal("1.5"),
        Decimal("2.75"),
    )


def test_a_request_that_fits_passes_and_one_over_is_refused_with_the_numbers() -> None:
    """spent + in flight + the estimate may reach the budget, never pass it."""
    records = [record(TaskStatus.SUCCESS, consumed="0.5"), record(TaskStatus.PENDING)]
    budget, _ = guard(records, "1.5")
    budget.check([NANO])  # 0.5 + 0.5 + 0.5 = 1.5: exactly the budget
    records.append(record(TaskStatus.WAITING_TO_SEND))
    with pytest.raises(BudgetExceededError) as info:
        budget.check([NANO])
    error = info.value
    assert (error.spent, error.in_flight, error.budget, error.estimate) == (
        Decimal("0.5"),
        Decimal("1.0"),
        Decimal("1.5"),
        Decimal("0.5"),
    )
    assert "spent 0.5" in error.message and "budget of 1.5" in error.message
    assert "nothing was sent" in error.message and "%nanobanana budget" in error.message
    assert "\n" not in error.message


def test_a_batch_is_refused_whole_when_together_it_passes() -> None:
    """Four requests of 0.5 under a budget of 1.5 are refused together, naming all four."""
    budget, _ = guard([], "1.5")
    budget.check([NANO] * 3)
    with pytest.raises(BudgetExceededError, match="these 4 requests would cost about 2"):
        budget.check([NANO] * 4)


def test_the_estimate_is_the_largest_cost_seen_here_or_in_the_history() -> None:
    """A model's estimate is the largest consumed seen, this session's tasks included; the
    history is read once per model."""
    records = [record(TaskStatus.SUCCESS, consumed="2")]
    budget, store = guard(records, "10", {NANO: Decimal("0.5")})
    assert budget.estimate(NANO, records) == Decimal(2)
    assert budget.estimate(NANO) == Decimal("0.5")
    assert store.asked == [NANO]
    assert budget.status().in_flight == 0


def test_an_unknown_cost_runs_one_at_a_time() -> None:
    """A model never charged here: one may be in flight under a budget, a second is refused
    saying why and what to do; once the first has a cost, its estimate applies."""
    records: list[TaskRecord] = []
    budget, _ = guard(records, "3", {})
    budget.check([OTHER])
    with pytest.raises(BudgetExceededError, match="one task at a time") as info:
        budget.check([OTHER, OTHER])  # a batch of two at once
    assert info.value.estimate is None
    records.append(record(TaskStatus.SUBMITTING, model=OTHER))
    with pytest.raises(BudgetExceededError, match=r"one is in flight.*wait for it to end"):
        budget.check([OTHER])
    records[0] = record(TaskStatus.SUCCESS, model=OTHER, consumed="1")
    budget.check([OTHER, OTHER])  # 1 + 2 = 3
    with pytest.raises(BudgetExceededError, match="over budget"):
        budget.check([OTHER] * 3)


def test_an_unknown_cost_is_refused_when_nothing_is_left() -> None:
    """With the budget used up, even a request of unknown cost is refused."""
    budget, _ = guard([record(TaskStatus.SUCCESS, consumed="1")], "1", {})
    with pytest.raises(BudgetExceededError, match="over budget"):
        budget.check([OTHER])


def test_no_budget_refuses_nothing() -> None:
    """Without a budget every request passes, whatever was spent."""
    budget, _ = guard([record(TaskStatus.SUCCESS, consumed="100")], None)
    budget.check([NANO] * 10 + [OTHER] * 3)
    assert budget.status().left is None


@pytest.mark.parametrize(
    ("given", "expected"), [(2.5, "2.5"), ("3", "3"), (Decimal("0.10"), "0.1")]
)
def test_budgets_are_read_from_numbers_and_text(given: object, expected: str) -> None:
    """A budget is a positive number of credits, kept as a Decimal."""
    assert as_budget(given) == Decimal(expected)


@pytest.mark.parametrize("given", [0, -1, "abc", float("nan"), float("inf"), True, "1e30", [1]])
def test_a_bad_budget_is_refused_saying_what_a_budget_is(given: object) -> None:
    """Zero, negative, non-numbers and absurd amounts are a ValidationError."""
    with pytest.raises(ValidationError, match="positive number of credits"):
        as_budget(given)


# -- the cached balance ----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Collects the coroutines handed to it; ``finish()`` runs them to their futures."""

    def __init__(self) -> None:
        self.pending: list[
            tuple[Coroutine[Any, Any, Decimal], concurrent.futures.Future[Decimal]]
        ] = []

    def run(self, coro: Coroutine[Any, Any, Decimal]) -> concurrent.futures.Future[Decimal]:
        future: concurrent.futures.Future[Decimal] = concurrent.futures.Future()
        self.pending.append((coro, future))
        return future

    def finish(self) -> None:
        pending, self.pending = self.pending, []
        for coro, future in pending:
            try:
                future.set_result(asyncio.run(coro))
            except Exception as exc:
                future.set_exception(exc)


def test_the_cached_balance_never_waits_and_looks_at_most_once_a_minute() -> None:
    """peek() returns at once (None before any answer), starts one look, and looks again
    only when the value is a minute old; listeners hear each new value."""
    answers = [Decimal("100.5"), Decimal("99")]
    clock, engine, heard = FakeClock(), FakeEngine(), []

    async def fetch() -> Decimal:
        return answers.pop(0)

    cache = BalanceCache(fetch, engine.run, clock=clock)
    cache.subscribe(heard.append)
    assert cache.peek() is None and len(engine.pending) == 1
    assert cache.peek() is None and len(engine.pending) == 1  # one look at a time
    engine.finish()
    assert heard == [Decimal("100.5")]
    clock.now += 59.0
    assert cache.peek() == Decimal("100.5") and engine.pending == []
    clock.now += 1.0
    assert cache.peek() == Decimal("100.5") and len(engine.pending) == 1
    engine.finish()
    assert cache.peek() == Decimal("99") and heard == [Decimal("100.5"), Decimal("99")]


def test_a_failed_look_keeps_the_last_value_and_waits_a_minute_too() -> None:
    """A look that fails keeps the last balance, notes why, and is not retried at once."""
    clock, engine = FakeClock(), FakeEngine()
    outcomes: list[Decimal | Exception] = [Decimal(7), ValidationError("the key was refused")]

    async def fetch() -> Decimal:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cache = BalanceCache(fetch, engine.run, clock=clock)
    cache.peek()
    engine.finish()
    clock.now += 60
    cache.peek()
    engine.finish()
    assert cache.peek() == Decimal(7) and cache.error == "the key was refused"
    assert engine.pending == []
    cache.heard(Decimal(5))  # a blocking balance() answer counts as a look
    assert cache.value == Decimal(5) and cache.error is None


def test_a_budget_status_reads_as_a_sentence_in_a_cell() -> None:
    status = BudgetStatus(Decimal("8"), Decimal("5.5"), Decimal("0.5"))
    assert repr(status) == (
        "<BudgetStatus: budget 8 credits: spent 5.5, in flight 0.5 (estimated), left 2.0>"
    )
