"""Which tasks an export from a view takes: the options the terminal and the magic share.

``nanobanana export OUT --search TEXT --tag T --rating N --since WHEN`` and
``%nanobanana export OUT ...`` read their options here, so both mean the same by them:
``--rating N`` is N stars or more, several ``--tag`` must all be on a task, ``--since`` is a
date, a date and time (local unless it names a zone), or ``7d`` / ``12h`` ago.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence

from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import ValidationError

__all__ = ["parse_rating", "parse_since", "select_for_export"]

_AGO = re.compile(r"\s*(\d{1,6})\s*([dh])\s*")


def parse_since(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from ``2026-01-31`` (local midnight), ``2026-01-31T14:05`` or
    ``2026-01-31 14:05`` (local time unless a zone is given), ``7d`` or ``12h`` (ago).

    Raises:
        ValidationError: anything else.
    """
    ago = _AGO.fullmatch(text.lower())
    if ago:
        seconds = int(ago.group(1)) * (86400 if ago.group(2) == "d" else 3600)
        return (time.time() if now is None else now) - seconds
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValidationError(
            f"--since {text!r} is no date: write 2026-01-31, 2026-01-31T14:05, 7d or 12h"
        ) from None


def parse_rating(text: str) -> int:
    """Whole stars from 0 to 5.

    Raises:
        ValidationError: anything else.
    """
    word = text.strip()
    if not word.isdigit() or not 0 <= int(word) <= 5:
        raise ValidationError(f"--rating: a rating is 0 to 5 stars, not {text!r}")
    return int(word)


def select_for_export(
    history: History,
    *,
    search: str | None = None,
    tags: Sequence[str] = (),
    rating: int | None = None,
    since: float | None = None,
) -> tuple[History, list[TaskRecord] | None]:
    """The history to export from and the tasks to take (``None``: all of it), oldest first.

    Only ``since``: the history filtered by creation time. Text, tags or a rating: the
    tasks found by :meth:`History.search`, at least ``rating`` stars.
    """
    if since is not None:
        history = history.filter(since=since)
    if not search and not tags and rating is None:
        return history, None
    found = history.search(
        search or None,
        tags=list(tags) or None,
        rating=None if rating is None else (rating, None),
        limit=max(1, len(history)),
    )
    return history, sorted(found, key=lambda r: (r.created_at, r.local_id))
