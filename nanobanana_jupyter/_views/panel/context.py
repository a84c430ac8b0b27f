"""What every part of one panel shares: the session, one lock, owned widgets, the status line."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import ipywidgets as widgets

from nanobanana_jupyter._core.session import Session

from .showing import TONE_COLOURS, WRAP, escape

__all__ = ["PanelContext", "close_widget"]


def close_widget(widget: Any) -> None:
    """Close a widget and the layout and style widgets made for it."""
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    widget.close()


class PanelContext:
    """The session, lock, clock and owned widgets of one panel, and its status line.

    Every part of a panel gets the same context. Background code and callbacks change
    widgets only while holding :attr:`lock`; none of them holds it while calling into the
    session (a cancel waits for the engine, whose listener needs the lock).

    Args:
        session: the session the panel is a view of.
        clock: the monotonic clock (debounce, throttles); a test passes a fake one.
    """

    def __init__(self, session: Session, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.clock = clock
        self.lock = threading.RLock()
        self.closed = False
        self.owned: set[Any] = set()
        self._status_plain = ""
        self.status_html = self.own(widgets.HTML(""))
        self.status_html.add_class("nanobanana-panel-status")

    @property
    def pretend(self) -> bool:
        """Whether the session talks to a sandbox: its costs are pretend credits."""
        return bool(self.session.is_sandbox)

    # -- widgets --------------------------------------------------------------------------

    def own(self, widget: Any) -> Any:
        """Remember a widget, so closing the panel closes it; returns it."""
        self.owned.add(widget)
        return widget

    def drop(self, widget: Any) -> None:
        """Close a widget tree that left the panel (caller holds the lock)."""
        if widget is None:
            return
        stack = [widget]
        while stack:
            w = stack.pop()
            stack.extend(getattr(w, "children", ()) or ())
            self.owned.discard(w)
            close_widget(w)

    def button(self, text: str, icon: str, css: str, tooltip: str) -> Any:
        """An owned button of the panel's look, with the CSS class the tests and pages find."""
        button = self.own(
            widgets.Button(
                description=text, icon=icon, tooltip=tooltip, layout=widgets.Layout(width="auto")
            )
        )
        button.add_class(css)
        return button

    def row(self, children: list[Any], **layout: str) -> Any:
        """A wrapping row of widgets, vertically centred unless ``layout`` says otherwise."""
        options = {"flex_flow": "row wrap", "align_items": "center", **layout}
        return self.own(widgets.HBox(children, layout=widgets.Layout(**options)))

    def shut(self) -> list[Any]:
        """Mark the panel closed; hand back every owned widget, for the caller to close."""
        with self.lock:
            self.closed = True
            owned = list(self.owned)
            self.owned.clear()
        return owned

    # -- the status line ------------------------------------------------------------------

    @property
    def status_text(self) -> str:
        """The status line's message as plain text."""
        with self.lock:
            return self._status_plain

    def say(self, message: str, *, error: bool = False) -> None:
        """Show a message (escaped) in the status line; red when ``error``."""
        colour = TONE_COLOURS["failed"] if error else "inherit"
        with self.lock:
            if self.closed:
                return
            self._status_plain = message
            self.status_html.value = (
                f'<div style="{WRAP};color:{colour};font-size:0.92em">{escape(message)}</div>'
                if message
                else ""
            )

    # -- the engine -----------------------------------------------------------------------

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine on the session's engine loop (may raise RuntimeError when stopping)."""
        self.session.run_in_background(coro)

    def in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine on the engine loop; nothing happens if the engine is stopping."""
        with contextlib.suppress(RuntimeError):  # the engine is stopping (interpreter exit)
            self.session.run_in_background(coro)
