"""The default session: the one the magic and the panel use when given none."""

from __future__ import annotations

import threading

from .session import Session

__all__ = ["get_default_session", "set_default_session"]

_default: Session | None = None
_default_lock = threading.Lock()


def get_default_session() -> Session:
    """The session the magic and the panel use, built on first use (never at import)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Session()
        return _default


def set_default_session(session: Session | None) -> Session | None:
    """Replace the default session (e.g. with ``Session.sandbox()``); returns the old one."""
    global _default
    with _default_lock:
        old, _default = _default, session
        return old
