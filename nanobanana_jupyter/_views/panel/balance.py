"""The header's balance: the account's credits when known, never waited for.

It shows what the session last heard (:meth:`Session.last_balance`) and asks again at most
once a minute, in the background; the answer arrives through the session's balance
listener and only sets a trait. Before any answer, and when the API cannot be asked, it
shows nothing. In a sandbox the credits are pretend, and it says so.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._display.balance import balance_words

from .context import PanelContext
from .showing import escape

__all__ = ["BalanceLabel"]


class BalanceLabel:
    """An HTML widget with ``balance: 99.5 credits`` once the session has heard it."""

    def __init__(self, ctx: PanelContext) -> None:
        self._ctx = ctx
        self.widget = ctx.own(widgets.HTML("", layout={"margin": "0 12px 0 0"}))
        self.widget.add_class("nanobanana-balance")
        self.text = ""
        self._unsubscribe: Callable[[], None] | None = None
        subscribe = getattr(ctx.session, "subscribe_balance", None)
        if subscribe is not None:
            self._unsubscribe = subscribe(self._heard)
        self.refresh()

    def refresh(self) -> None:
        """Show the last balance heard; the session looks again when it is a minute old.
        Never blocks (the caller may hold the panel's lock)."""
        last: Any = getattr(self._ctx.session, "last_balance", None)
        value = last() if last is not None else None
        if value is not None:
            self._show(value)

    def _heard(self, value: Decimal) -> None:
        """Balance listener (any thread): set the trait only."""
        with self._ctx.lock:
            if not self._ctx.closed:
                self._show(value)

    def _show(self, value: Decimal) -> None:
        text = balance_words(value, pretend=self._ctx.pretend)
        if text != self.text:
            self.text = text
            self.widget.value = f'<span style="white-space:nowrap">{escape(text)}</span>'

    def close(self) -> None:
        """Stop listening to the session."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
