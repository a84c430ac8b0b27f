"""Balance and budgets against a real sandbox: the balance lowers after a charge, and a
budget stops a request before anything reaches the server."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from nanobanana_jupyter import BudgetExceededError, TaskStatus
from nanobanana_jupyter.sandbox import Sandbox
from tests.integration.test_session import make_session

pytestmark = pytest.mark.integration


def test_balance_lowers_after_a_charge(sandbox: Sandbox, tmp_path: Path) -> None:
    """session.balance() reads the sandbox's credits; a finished task lowers them by its cost."""
    with make_session(sandbox, tmp_path / "data") as session:
        before = session.balance(timeout=10)
        assert before == Decimal(100)
        session.generate("a lemon").wait(timeout=20)
        assert session.balance(timeout=10) == before - Decimal("0.5")
        assert session.last_balance() == Decimal("99.5")  # what the blocking call heard


def test_a_budget_stops_the_next_submit_and_nothing_is_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Under a budget of 1 credit with tasks of 0.5: the first (cost unknown) and the second
    (estimated from the first) are sent; the third is refused, written nowhere, sent never."""
    with make_session(sandbox, tmp_path / "data", budget="1") as session:
        first = session.generate("one")
        with pytest.raises(BudgetExceededError, match="one task at a time"):
            session.generate("two")  # the model's cost is not known while the first runs
        first.wait(timeout=20)
        session.generate("two").wait(timeout=20)
        submits, rows = sandbox.ledger.submits_received, len(session.history)
        with pytest.raises(BudgetExceededError) as info:
            session.generate("three")
        assert (info.value.spent, info.value.in_flight, info.value.budget) == (1, 0, 1)
        assert sandbox.ledger.submits_received == submits == 2
        assert len(session.history) == rows == 2
        again = session.generate("one")  # an identical request is handed back: never refused
        assert again.local_id == first.local_id and again.status is TaskStatus.SUCCESS
        session.budget = 2
        session.generate("three").wait(timeout=20)
        assert sandbox.ledger.submits_received == 3
        assert session.budget_status.spent == Decimal("1.5")


def test_a_batch_over_budget_is_refused_whole(sandbox: Sandbox, tmp_path: Path) -> None:
    """map() and n= under a budget send nothing when the batch would pass it."""
    with make_session(sandbox, tmp_path / "data") as session:
        session.generate("priced").wait(timeout=20)  # the model's cost is now known: 0.5
        session.budget = Decimal("1.5")
        with pytest.raises(BudgetExceededError, match="these 3 requests"):
            session.map(["a", "b", "c"])
        with pytest.raises(BudgetExceededError, match="these 3 requests"):
            session.generate("d", n=3)
        assert sandbox.ledger.submits_received == 1
        tasks = session.map(["a", "b"])
        for task in tasks:
            task.wait(timeout=20)
        assert sandbox.ledger.submits_received == 3


def test_a_grid_over_budget_is_refused_whole_and_a_rerun_costs_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A grid is a batch: over the budget nothing of it is sent; its cells already made are
    handed back for free, so re-running a grid that fitted is never refused."""
    with make_session(sandbox, tmp_path / "data") as session:
        session.generate("priced").wait(timeout=20)  # the model's cost is now known: 0.5
        session.budget = Decimal("1.5")
        submits = sandbox.ledger.submits_received
        with pytest.raises(BudgetExceededError, match="these 4 requests"):
            session.grid(prompt=["a", "b"], aspect_ratio=["1:1", "16:9"])
        assert sandbox.ledger.submits_received == submits
        assert len(session.history) == 1
        grid = session.grid(prompt=["a", "b"]).wait(timeout=30)
        assert sandbox.ledger.submits_received == submits + 2
        session.grid(prompt=["a", "b"]).wait(timeout=30)  # reused: spends nothing more
        assert sandbox.ledger.submits_received == submits + 2
        assert len(grid.tasks) == 2
