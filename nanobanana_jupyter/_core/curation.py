"""What a person types to curate the history, read once for the magic and the terminal.

``rate ID N``, ``tag ID name...``, ``search --rating 3-5 --since 2025-01-31``: the words
become a task (:func:`named_task`), a rating or a rating range (:func:`rating_word`,
:func:`rating_range`) and a time (:func:`time_word`). Each bad word is refused with one
line that says what to write instead. Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Callable, Sequence

from nanobanana_jupyter._store.history import History
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.search import RatingFilter
from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import TaskStatus

from .task import Task

__all__ = [
    "SEARCH_LIMIT",
    "SearchRequest",
    "add_search_options",
    "named_task",
    "rating_range",
    "rating_word",
    "search_request",
    "time_word",
]

SEARCH_LIMIT = 20
"""How many matches a search shows unless ``--limit`` says otherwise."""

_CLEAR = frozenset({"none", "off", "clear", "-"})
_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*\Z")
_AGO = re.compile(r"\s*(\d+)\s*([mhdw])\s*\Z", re.IGNORECASE)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def named_task(word: str, *, last: Callable[..., Task | None], get: Callable[[str], Task]) -> Task:
    """The task ``word`` names: ``@last`` (the last successful task, else the last one),
    an id, ``@<id>``, or a unique first part of an id; ``last`` and ``get`` are the session's.

    Raises:
        ValidationError: ``@last`` before any task.
        TaskLookupError: no task, or several, match (its message says what to type).
    """
    text = word.strip()
    if text == "@last":
        found = last() or last(succeeded=False)
        if found is None:
            raise ValidationError("@last: no task yet; generate one first, or give a task id")
        return found
    if text.startswith("@"):
        text = text[1:]
    if not text:
        raise ValidationError("name a task: @last, a task id, or its first characters")
    return get(text)


def rating_word(word: str) -> int | None:
    """``"4"`` as 4; ``"none"`` (or ``off``, ``clear``, ``-``) clears the rating.

    Raises:
        ValidationError: anything but a whole number from 0 to 5 or a clearing word.
    """
    text = word.strip()
    if text.lower() in _CLEAR:
        return None
    if text.isdigit() and int(text) <= 5:
        return int(text)
    raise ValidationError(
        f"a rating is a whole number of stars from 0 to 5 (or none to clear it), not {word!r}"
    )


def rating_range(word: str) -> RatingFilter:
    """``"4"`` (exactly 4), ``"3-5"``, ``"3-"`` (3 or more), ``"-2"`` (at most 2).

    Raises:
        ValidationError: anything else, or bounds outside 0..5 or the wrong way round.
    """
    text = word.strip()
    match = _RANGE.match(text)
    hint = f"--rating is N or N-M with whole stars from 0 to 5 (4, 3-5, 3-), not {word!r}"
    if match is None:
        if text.isdigit() and int(text) <= 5:
            return int(text)
        raise ValidationError(hint)
    low, high = (int(part) if part else None for part in match.groups())
    if low is None and high is None:
        raise ValidationError(hint)
    if (low is not None and low > 5) or (high is not None and high > 5):
        raise ValidationError(hint)
    if low is not None and high is not None and low > high:
        raise ValidationError(
            f"--rating {word}: the lowest is above the highest; write {high}-{low}"
        )
    return (low, high)


def time_word(word: str, *, now: float, option: str = "--since") -> float:
    """A time as epoch seconds: ``2025-01-31``, ``2025-01-31T14:00`` (local time), or an age
    such as ``30m``, ``2h``, ``3d``, ``1w`` (that long before ``now``).

    Raises:
        ValidationError: none of those forms.
    """
    text = word.strip()
    ago = _AGO.match(text)
    if ago is not None:
        return now - int(ago.group(1)) * _UNIT_SECONDS[ago.group(2).lower()]
    try:
        when = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise ValidationError(
            f"{option} is a date (2025-01-31), a date and time (2025-01-31T14:00) or an age "
            f"(30m, 2h, 3d, 1w), not {word!r}"
        ) from None
    return when.timestamp()


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    """A search as typed, checked: what :meth:`History.search` is asked, and the words of
    the dates as given (for the line above the results)."""

    text: str | None = None
    tags: tuple[str, ...] = ()
    model: str | None = None
    status: str | None = None
    rating: RatingFilter = None
    since: float | None = None
    until: float | None = None
    limit: int = SEARCH_LIMIT
    since_word: str | None = None
    until_word: str | None = None

    def run(self, history: History) -> list[TaskRecord]:
        """The newest matching tasks, newest first."""
        return history.search(
            self.text,
            tags=list(self.tags) or None,
            model=self.model,
            status=self.status,
            rating=self.rating,
            since=self.since,
            until=self.until,
            limit=self.limit,
        )


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The words of a search, the same for the magic and the terminal."""
    parser.add_argument("text", nargs="*", help="words of the prompt (all must appear)")
    parser.add_argument("--tag", "-t", action="append", default=[], help="a tag (repeatable)")
    parser.add_argument("--model", "-m", help="only tasks of this model id")
    parser.add_argument("--status", help="only tasks in this status (success, failed, ...)")
    parser.add_argument("--rating", "-r", help="stars: N, N-M, N- (N or more), -M")
    parser.add_argument("--since", help="created since: 2025-01-31, 2025-01-31T14:00, 2h, 3d")
    parser.add_argument("--until", help="created before: a date, a date and time, or an age")
    parser.add_argument("--limit", "-n", default=str(SEARCH_LIMIT), help="at most this many")


def search_request(namespace: argparse.Namespace, *, now: float) -> SearchRequest:
    """Check what :func:`add_search_options` parsed.

    Raises:
        ValidationError: a bad rating, date, status or limit, in one line.
    """
    words: Sequence[str] = namespace.text or ()
    text = " ".join(words).strip() or None
    status = None
    if namespace.status is not None:
        status = namespace.status.strip().lower()
        known = [s.value for s in TaskStatus]
        if status not in known:
            close = difflib.get_close_matches(status, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValidationError(
                f"--status {namespace.status!r} is no status{hint}; one of {', '.join(known)}"
            )
    limit_word = str(namespace.limit).strip()
    if not limit_word.isdigit() or int(limit_word) < 1:
        raise ValidationError(f"--limit is a whole number of tasks, 1 or more, not {limit_word!r}")
    since = None if namespace.since is None else time_word(namespace.since, now=now)
    until = None
    if namespace.until is not None:
        until = time_word(namespace.until, now=now, option="--until")
    return SearchRequest(
        text=text,
        tags=tuple(namespace.tag),
        model=namespace.model,
        status=status,
        rating=None if namespace.rating is None else rating_range(namespace.rating),
        since=since,
        until=until,
        limit=int(limit_word),
        since_word=namespace.since,
        until_word=namespace.until,
    )
