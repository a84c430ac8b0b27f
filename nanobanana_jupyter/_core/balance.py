"""The account's balance for views that must never wait: the last value known, refreshed
in the background at most once a minute.

``GET /api/user`` is a network call; a panel header that asked for it on every redraw would
block the kernel and spam the API. :class:`BalanceCache` hands back what it last heard at
once (``None`` before the first answer) and, when that is older than ``max_age`` (or there
is none), starts one fetch on the engine; listeners hear each new value. A failed fetch
keeps the last value and waits ``max_age`` too before trying again, so a refused key or an
outage costs one request a minute at most. The clock is injectable: tests need no waiting.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

__all__ = ["BALANCE_MAX_AGE", "BalanceCache"]

logger = logging.getLogger("nanobanana_jupyter")

BALANCE_MAX_AGE = 60.0
"""Seconds a known balance is shown before the next look (the issue: once a minute)."""

Fetch = Callable[[], Coroutine[Any, Any, Decimal]]
Run = Callable[[Coroutine[Any, Any, Decimal]], "concurrent.futures.Future[Decimal]"]


class BalanceCache:
    """The last balance heard, and at most one background refresh per ``max_age`` seconds.

    Args:
        fetch: makes the coroutine that asks the API (run on the engine).
        run: hands a coroutine to the engine and returns its future.
        clock: monotonic seconds (tests pass a fake one).
        max_age: seconds between two looks at most once each.
    """

    def __init__(
        self,
        fetch: Fetch,
        run: Run,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = BALANCE_MAX_AGE,
    ) -> None:
        self._fetch = fetch
        self._run = run
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()
        self._value: Decimal | None = None
        self._asked_at: float | None = None
        self._busy = False
        self._listeners: list[Callable[[Decimal], object]] = []
        self.error: str | None = None
        """Why the last look failed (one line, no key), or ``None`` after a good one."""

    @property
    def value(self) -> Decimal | None:
        """The last balance heard, without looking again."""
        with self._lock:
            return self._value

    def peek(self) -> Decimal | None:
        """The last balance heard (``None`` before any); starts a background look when that
        is older than ``max_age`` and none is under way. Never blocks, never raises."""
        with self._lock:
            value = self._value
            due = not self._busy and (
                self._asked_at is None or self._clock() - self._asked_at >= self._max_age
            )
            if due:
                self._busy = True
                self._asked_at = self._clock()
        if due:
            try:
                future = self._run(self._fetch())
            except Exception as exc:  # the engine is stopping: nothing to show then
                self._ended(None, f"{type(exc).__name__}: {exc}")
            else:
                future.add_done_callback(self._done)
        return value

    def heard(self, value: Decimal) -> None:
        """A balance heard some other way (``Session.balance()``): keep it, tell listeners."""
        with self._lock:
            self._asked_at = self._clock()
        self._ended(value, None, looked=False)

    def subscribe(self, listener: Callable[[Decimal], object]) -> Callable[[], None]:
        """Call ``listener(balance)`` on each new value (any thread); returns the unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _done(self, future: concurrent.futures.Future[Decimal]) -> None:
        if future.cancelled():
            self._ended(None, "cancelled")
            return
        error = future.exception()
        if error is not None:
            message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            logger.info("could not read the balance: %s", message)
            self._ended(None, str(message))
            return
        self._ended(future.result(), None)

    def _ended(self, value: Decimal | None, error: str | None, *, looked: bool = True) -> None:
        with self._lock:
            if looked:  # a look of this cache's own ended (not one heard from elsewhere)
                self._busy = False
            self.error = error
            if value is None:
                return
            self._value = value
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(value)
            except Exception:  # a view's failure must not stop the others
                logger.exception("a balance listener failed")
