"""The panel header's balance: shown when known, updated by the session's listener, never
asked for in a way that waits. Over a fake session: no server, no clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx

from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter._views.panel.balance import BalanceLabel
from nanobanana_jupyter._views.panel.context import PanelContext
from tests.helpers.mock_api import Accepting, mock_session


class BalanceSession:
    """What the balance label uses of a session: the last balance and its listener."""

    def __init__(self, last: Decimal | None, *, sandbox: bool = False) -> None:
        self.last = last
        self.is_sandbox = sandbox
        self.peeks = 0
        self.listeners: list[Callable[[Decimal], object]] = []

    def last_balance(self) -> Decimal | None:
        self.peeks += 1
        return self.last

    def subscribe_balance(self, listener: Callable[[Decimal], object]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


def label(session: BalanceSession) -> BalanceLabel:
    return BalanceLabel(PanelContext(session))  # type: ignore[arg-type]


def test_nothing_is_shown_before_the_balance_is_known_then_the_listener_shows_it() -> None:
    """Before any answer the label is empty; an answer heard later fills it in."""
    session = BalanceSession(None)
    part = label(session)
    assert part.widget.value == "" and session.peeks == 1
    (listener,) = session.listeners
    listener(Decimal("99.5"))
    assert part.text == "balance: 99.5 credits"
    assert "balance: 99.5 credits" in part.widget.value
    part.close()
    assert session.listeners == []


def test_a_sandbox_balance_says_pretend() -> None:
    """In a sandbox the header's balance is pretend credits."""
    part = label(BalanceSession(Decimal(100), sandbox=True))
    assert part.text == "balance: 100 pretend credits (sandbox)"


class SlowBalance(Accepting):
    """Answers /api/user only once the test opens the gate (or after 5 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.asked = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/user":
            self.asked.set()
            self.gate.wait(5)
            return httpx.Response(200, json={"code": 0, "data": {"credit": "42.00000000"}})
        return super().__call__(request)


def test_the_panel_header_shows_the_balance_without_waiting_for_it(tmp_path: Path) -> None:
    """A panel over a mocked service returns while /api/user is still unanswered (its label
    empty); the answer, when it comes, shows in the header."""
    api = SlowBalance()
    with mock_session(tmp_path / "data", api) as session:
        panel = Panel(session=session)
        heard = threading.Event()
        # After the panel's own listener, which is called first.
        session.subscribe_balance(lambda value: heard.set())
        try:
            assert panel.balance.widget in panel.children[0].children
            assert panel.balance.text == ""  # built before the answer: it did not wait
            assert api.asked.wait(5)
            api.gate.set()
            assert heard.wait(5)
            assert panel.balance.text == "balance: 42 credits"
        finally:
            api.gate.set()
            panel.close()
