"""The words every view uses for the account's balance and the session's budget.

In a sandbox both are pretend credits, and the words say so.
"""

from __future__ import annotations

from decimal import Decimal

from nanobanana_jupyter._core.budget import BudgetStatus

from .words import format_cost

__all__ = ["balance_words", "budget_words"]


def balance_words(value: Decimal | None, *, pretend: bool = False) -> str:
    """``balance: 100.5 credits`` (``... pretend credits (sandbox)``); ``balance: unknown``
    before any answer. An overdrawn account shows its minus sign."""
    if value is None:
        return "balance: unknown"
    sign = "-" if value < 0 else ""
    amount = format_cost(abs(value), pretend=pretend)
    tail = " (sandbox)" if pretend else ""
    return f"balance: {sign}{amount}{tail}"


def budget_words(status: BudgetStatus, *, pretend: bool = False) -> str:
    """One line: ``budget 2.5 credits: 0.5 spent, 0.5 in flight (estimated), 1.5 left``;
    without a budget, what was spent and how to set one."""

    def cost(value: Decimal) -> str:
        return format_cost(value, pretend=pretend)

    spent = f"{cost(status.spent)} spent, {cost(status.in_flight)} in flight (estimated)"
    unknown = f"; cost not known yet for {', '.join(status.unknown)}" if status.unknown else ""
    if status.budget is None or status.left is None:
        return f"no budget ({spent}); set one with %nanobanana budget <credits>{unknown}"
    return f"budget {cost(status.budget)}: {spent}, {cost(status.left)} left{unknown}"
