"""A session's budget: what it has spent plus what it has in flight never passes it.

Checked when a request is started, before anything is written or sent (the submitter calls
:meth:`BudgetGuard.check` under the registry's lock, after the reuse check: a task handed
back for an identical request costs nothing and is never refused). The arithmetic:

- **spent**: the ``consumed`` of this session's submitted tasks, as far as the server said;
- **in flight**: for each submitted task with no cost known yet that may still be charged
  (waiting, submitting, running, submit_unknown, timed out, abandoned, succeeded without a
  cost), the estimate of its model; a task not sent, or failed without a cost, counts 0;
- **estimate** of a model: the largest ``consumed`` ever seen for it (the whole history in
  this data directory, and this session's tasks), so a model whose price varies by size is
  estimated at the dearest seen.

A new request is refused when ``spent + in flight + its estimate`` would pass the budget.
A model whose cost is not known yet (never charged here) counts 0 but runs one at a time
under a budget: a second request of it while one is in flight is refused (never queued),
saying to wait for the first, which then tells its cost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.credits import MAX_CREDITS, credits_sum, normalize_credits
from nanobanana_jupyter._wire.errors import BudgetExceededError, ValidationError
from nanobanana_jupyter._wire.models import TaskStatus

__all__ = ["BudgetGuard", "BudgetStatus", "as_budget"]

# Ended without a charge: never sent, or failed with no cost said.
_UNCHARGED = frozenset({TaskStatus.NOT_SENT, TaskStatus.FAILED})


def as_budget(value: object) -> Decimal | None:
    """A budget as given (``2.5``, ``"2.5"``, ``Decimal``), or ``None`` for none.

    Raises:
        ValidationError: not a positive, finite number of credits.
    """
    if value is None:
        return None
    number: Decimal | None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, float):
        number = Decimal(repr(value)) if math.isfinite(value) else None
    elif isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except (InvalidOperation, ValueError):
            number = None
    else:
        number = None
    if number is None or not number.is_finite() or not 0 < number <= MAX_CREDITS:
        raise ValidationError(
            f"a budget is a positive number of credits, such as 2.5, not {value!r} "
            "(None, or 'off' in the magic, removes it)"
        )
    return normalize_credits(number)


@dataclasses.dataclass(frozen=True)
class BudgetStatus:
    """Where a session stands against its budget (``Session.budget_status``).

    Attributes:
        budget: the budget, or ``None`` when the session has none.
        spent: credits charged for this session's tasks, as far as the server said.
        in_flight: estimated credits of its tasks that may still be charged.
        unknown: models with a task in flight whose cost is not known yet.
    """

    budget: Decimal | None
    spent: Decimal
    in_flight: Decimal
    unknown: tuple[str, ...] = ()

    @property
    def left(self) -> Decimal | None:
        """What the budget leaves for new requests (never below 0), or ``None``."""
        if self.budget is None:
            return None
        return max(Decimal(0), self.budget - self.spent - self.in_flight)

    def __str__(self) -> str:
        head = "no budget" if self.budget is None else f"budget {self.budget} credits"
        parts = [f"{head}: spent {self.spent}", f"in flight {self.in_flight} (estimated)"]
        if self.left is not None:
            parts.append(f"left {self.left}")
        if self.unknown:
            parts.append(f"cost not known yet for {', '.join(self.unknown)}")
        return ", ".join(parts)

    def __repr__(self) -> str:  # what a cell shows for ``session.budget_status``
        return f"<BudgetStatus: {self}>"


class BudgetGuard:
    """Keeps one session's spending within its budget (see the module's rules).

    Args:
        store: the history, where the costs seen per model are read (once per model).
        submitted: this session's submitted tasks, as records (called under the registry's
            lock by the submitter).
    """

    def __init__(self, store: Store, submitted: Callable[[], Iterable[TaskRecord]]) -> None:
        self._store = store
        self._submitted = submitted
        self._stored: dict[str, Decimal | None] = {}
        self.limit: Decimal | None = None

    def estimate(self, model: str, records: Sequence[TaskRecord] = ()) -> Decimal | None:
        """The largest cost seen for ``model`` (history and ``records``), or ``None``."""
        if model not in self._stored:
            self._stored[model] = self._store.largest_cost(model)
        best = self._stored[model]
        for record in records:
            if record.model == model and record.consumed is not None:
                best = record.consumed if best is None else max(best, record.consumed)
        return best

    def status(self) -> BudgetStatus:
        """Spent, in flight and the budget, now."""
        return self._status(list(self._submitted()))

    def _status(self, records: Sequence[TaskRecord]) -> BudgetStatus:
        spent = in_flight = Decimal(0)
        unknown: list[str] = []
        for record in records:
            if record.consumed is not None:
                spent = credits_sum(spent, record.consumed)
                continue
            if record.status in _UNCHARGED:
                continue
            estimate = self.estimate(record.model, records)
            if estimate is not None:
                in_flight = credits_sum(in_flight, estimate)
            elif (record.status.is_active or record.status.is_local) and (
                record.model not in unknown
            ):
                unknown.append(record.model)
        return BudgetStatus(self.limit, spent, in_flight, tuple(unknown))

    def check(self, models: Sequence[str]) -> None:
        """Refuse new requests of ``models`` (one entry per request) that would pass the
        budget; nothing to check without one.

        Raises:
            BudgetExceededError: says spent, in flight, the budget, and what to do.
        """
        if self.limit is None or not models:
            return
        records = list(self._submitted())
        state = self._status(records)
        budget, spent, in_flight = self.limit, state.spent, state.in_flight
        total = Decimal(0)
        unknown = set(state.unknown)
        for model in models:
            estimate = self.estimate(model, records)
            if estimate is not None:
                total = credits_sum(total, estimate)
                continue
            if model in unknown:
                why = "one is in flight" if model in state.unknown else "this asks for several"
                raise BudgetExceededError(
                    f"under a budget, {model} runs one task at a time until its cost is "
                    f"known (none has been charged here yet), and {why}: nothing was sent. "
                    "Start one and wait for it to end (it tells the cost), or remove the "
                    f"budget ({_numbers(spent, in_flight, budget)})",
                    budget=budget,
                    spent=spent,
                    in_flight=in_flight,
                    estimate=None,
                )
            unknown.add(model)
        if spent + in_flight + total > budget or spent + in_flight >= budget:
            many = f"these {len(models)} requests" if len(models) > 1 else "this request"
            raise BudgetExceededError(
                f"over budget: {many} would cost about {total} credits, and "
                f"{_numbers(spent, in_flight, budget)}; nothing was sent. Raise the budget "
                "(session.budget = ..., %nanobanana budget <credits>, --budget) or wait "
                "for the tasks in flight to end",
                budget=budget,
                spent=spent,
                in_flight=in_flight,
                estimate=total,
            )


def _numbers(spent: Decimal, in_flight: Decimal, budget: Decimal) -> str:
    return f"spent {spent} + in flight {in_flight} (estimated) of a budget of {budget}"
