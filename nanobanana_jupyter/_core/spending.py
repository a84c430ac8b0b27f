"""What a session paid for, and what it was handed back instead of paying again."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from decimal import Decimal

from nanobanana_jupyter._store import presenter
from nanobanana_jupyter._wire.credits import credits_sum

from .task import Task

__all__ = ["SessionCredits", "summarize"]


@dataclasses.dataclass(frozen=True)
class SessionCredits:
    """A session's credits, split by what was paid and what was reused
    (``Session.credits``).

    Attributes:
        spent: credits charged for the tasks this session submitted (as far as the server
            has said: a task still running may not carry its cost yet).
        reused: credits of the tasks handed back instead of sent again (an identical
            request, in this session or an earlier one): each hand-back counts once, as
            the charge it saved.
        submitted: how many requests this session sent.
        reuses: how many times this session handed back an existing task.
        pretend: True for a sandbox session: nothing here is real money.
    """

    spent: Decimal = Decimal(0)
    reused: Decimal = Decimal(0)
    submitted: int = 0
    reuses: int = 0
    pretend: bool = False

    def __repr__(self) -> str:
        fallback = (
            f"SessionCredits(spent={self.spent}, reused={self.reused}, "
            f"submitted={self.submitted}, reuses={self.reuses}, pretend={self.pretend})"
        )
        return presenter.text(self, fallback)


def summarize(
    submitted: Iterable[Task], handed_back: Iterable[Task], *, pretend: bool
) -> SessionCredits:
    """Sum the current costs of the tasks sent and of every hand-back."""
    spent = reused = Decimal(0)
    sent = back = 0
    for task in submitted:
        sent += 1
        if task.cost is not None:
            spent = credits_sum(spent, task.cost)
    for task in handed_back:
        back += 1
        if task.cost is not None:
            reused = credits_sum(reused, task.cost)
    return SessionCredits(spent, reused, sent, back, pretend)
