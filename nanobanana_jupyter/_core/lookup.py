"""Finding tasks by what a user types: an id, an id prefix, ``@last``, ``@<id>``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.errors import (
    AmbiguousTaskError,
    TaskLookupError,
    UnknownTaskError,
    ValidationError,
)
from nanobanana_jupyter._wire.models import TaskStatus

from .task import Task

__all__ = ["CANDIDATES_SHOWN", "find_task", "resolve_reference"]

CANDIDATES_SHOWN = 3
"""How many tasks an ambiguous prefix's message names (the newest ones)."""

_PROMPT_CHARS = 24


def find_task(store: Store, query: str, data_dir: Path) -> TaskRecord:
    """The record :meth:`Session.get` hands out: exact server id, exact local id, then a
    unique prefix of either.

    Raises:
        UnknownTaskError: nothing matches.
        AmbiguousTaskError: several tasks match the prefix.
    """
    wanted = query.strip()
    if wanted:
        record = store.get_by_task_id(wanted) or store.get(wanted)
        if record is not None:
            return record
        found, count = store.find_by_id_prefix(wanted, limit=CANDIDATES_SHOWN)
        if count == 1 and found:
            return found[0]
        if count > 1:
            raise AmbiguousTaskError(
                _ambiguous_message(wanted, found, count),
                query=wanted,
                candidates=tuple(r.local_id for r in found),
                count=count,
            )
    raise UnknownTaskError(
        f"no such task {query!r} in the history in {data_dir} (no server id or local id "
        "is or starts with it); copy an id from a card or from session.history",
        query=query,
    )


def _ambiguous_message(query: str, found: list[TaskRecord], count: int) -> str:
    shown = "; ".join(f"{_matched_id(r, query)} {_short(r.prompt)!r}" for r in found)
    more = f" and {count - len(found)} more" if count > len(found) else ""
    return (
        f"{count} tasks have an id starting with {query!r}: {shown}{more}; "
        "type more characters of the id"
    )


def _matched_id(record: TaskRecord, query: str) -> str:
    if record.task_id is not None and record.task_id.startswith(query):
        return record.task_id
    return record.local_id


def _short(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= _PROMPT_CHARS else text[: _PROMPT_CHARS - 1] + "…"


def resolve_reference(
    ref: str,
    *,
    last: Callable[..., Task | None],
    get: Callable[[str], Task],
    wait: float,
) -> object:
    """See :meth:`Session.resolve_reference`; ``last`` and ``get`` are the session's."""
    if ref == "@last":
        found = last(succeeded=False)
        if found is not None and not found.done():
            # The reference must exist before the next submit: wait for the previous one.
            try:
                found.wait(wait)
            except TimeoutError:
                raise ValidationError(f"@last: {found.id} is still running") from None
        if found is None or found.status is not TaskStatus.SUCCESS:
            found = last()
        if found is None:
            raise ValidationError("@last: no successful task yet")
        return found
    if ref.startswith("@"):
        try:
            return get(ref[1:])
        except TaskLookupError as exc:
            raise ValidationError(f"{ref}: {exc.message}") from None
    return ref
