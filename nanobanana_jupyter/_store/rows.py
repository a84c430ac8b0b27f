"""A :class:`TaskRecord` as a row of the ``tasks`` table, and listing filters as SQL.

Records are plain columns (JSON text for lists, ``Decimal`` as text); nothing is pickled, so
a store file can never run code, and no API key is ever written (no record holds one, and
error texts are redacted once more on the way in). Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from nanobanana_jupyter._wire.credits import usable_credits
from nanobanana_jupyter._wire.errors import redact
from nanobanana_jupyter._wire.models import TaskStatus

from .records import ImageRecord, TaskRecord

__all__ = [
    "INSERT",
    "MAX_ERROR_CHARS",
    "ORDER",
    "SELECT",
    "UPDATE",
    "ModelFilter",
    "StatusFilter",
    "from_row",
    "stored_cost",
    "to_row",
    "where_clause",
]

MAX_ERROR_CHARS = 2000
"""Error texts are capped: a server can send a whole HTML page as a "reason"."""

# Record field -> column, in column order. ``writer`` is the store's own bookkeeping.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("local_id", "local_id"),
    ("task_id", "task_id"),
    ("status", "status"),
    ("prompt", "prompt"),
    ("model", "model"),
    ("fingerprint", "fingerprint"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("aspect_ratio", "aspect_ratio"),
    ("image_size", "image_size"),
    ("callback_url", "callback_url"),
    ("references", "refs"),
    ("submitted_at", "submitted_at"),
    ("finished_at", "finished_at"),
    ("consumed", "consumed"),
    ("error", "error"),
    ("result_urls", "result_urls"),
    ("images", "images"),
    ("texts", "texts"),
    ("polls", "polls"),
    ("reuses", "reuses"),
)
_COLUMN_LIST = ", ".join(column for _, column in _COLUMNS)
INSERT = (
    f"INSERT INTO tasks ({_COLUMN_LIST}, writer) "  # noqa: S608 -- constant column names
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}, ?)"
)
"""Insert one row: the values of :func:`to_row`, then the writer."""
UPDATE = (
    "UPDATE tasks SET "  # noqa: S608 -- constant column names
    + ", ".join(f"{column} = ?" for _, column in _COLUMNS[1:])
    + " WHERE local_id = ?"
)
"""Update one row: the values of :func:`to_row` but the first, then the local id."""
SELECT = f"SELECT {_COLUMN_LIST} FROM tasks"  # noqa: S608 -- constant column names
"""Select whole rows, for :func:`from_row`."""
ORDER = ("created_at", "local_id")
"""The listing order (oldest first), which the indexes serve."""

StatusFilter = TaskStatus | str | Iterable[TaskStatus | str] | None
ModelFilter = str | Iterable[str] | None


def to_row(record: TaskRecord) -> tuple[Any, ...]:
    """The column values of a record, in column order."""
    error = record.error
    if error is not None:
        # Defence in depth: the session already redacts, but a key must never hit the disk.
        error = redact(error, limit=MAX_ERROR_CHARS)
    return (
        record.local_id,
        record.task_id,
        TaskStatus(record.status).value,
        record.prompt,
        record.model,
        record.fingerprint,
        float(record.created_at),
        float(record.updated_at),
        record.aspect_ratio,
        record.image_size,
        record.callback_url,
        _json(record.references),
        record.submitted_at,
        record.finished_at,
        None if record.consumed is None else str(record.consumed),
        error,
        _json(record.result_urls),
        _json(dataclasses.asdict(image) for image in record.images),
        _json(record.texts),
        max(0, int(record.polls)),
        max(0, int(record.reuses)),
    )


def from_row(row: Sequence[Any]) -> TaskRecord:
    """The record a row (selected with :data:`SELECT`) holds."""
    values = dict(zip((column for _, column in _COLUMNS), row, strict=True))
    try:
        status = TaskStatus(values["status"])
    except ValueError:
        # Written by a newer release with a status this one does not know.
        status = TaskStatus.UNRECOGNIZED
    return TaskRecord(
        local_id=values["local_id"],
        task_id=values["task_id"],
        status=status,
        prompt=values["prompt"],
        model=values["model"],
        fingerprint=values["fingerprint"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        aspect_ratio=values["aspect_ratio"],
        image_size=values["image_size"],
        callback_url=values["callback_url"],
        references=tuple(json.loads(values["refs"])),
        submitted_at=values["submitted_at"],
        finished_at=values["finished_at"],
        consumed=stored_cost(values["consumed"]),
        error=values["error"],
        result_urls=tuple(json.loads(values["result_urls"])),
        images=tuple(ImageRecord.from_dict(item) for item in json.loads(values["images"])),
        texts=tuple(json.loads(values["texts"])),
        polls=values["polls"],
        reuses=values["reuses"],
    )


def stored_cost(value: object) -> Decimal | None:
    """A stored cost, exactly as written; ``None`` when it cannot be a cost.

    An older version stored any number the server sent (``1E+27``, ``-0``): such a value reads
    as an unknown cost, so no sum or view built on it can fail.
    """
    if value is None:
        return None
    try:
        return usable_credits(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def where_clause(
    status: StatusFilter,
    model: ModelFilter,
    since: float | None,
    until: float | None,
    text: str | None,
) -> tuple[str, list[Any]]:
    """A WHERE clause (with leading space, or empty) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("model", model)):
        if value is None:
            continue
        values = _values(value, column)
        if not values:
            clauses.append("0")  # an empty selection matches nothing
            continue
        clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(float(since))
    if until is not None:
        clauses.append("created_at < ?")
        params.append(float(until))
    if text:
        if text.isascii():
            # LIKE runs in C and folds ASCII case, which is all an ASCII needle needs.
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("prompt LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        else:
            # Registered on every connection when the database is opened (database.py).
            clauses.append("nb_icontains(prompt, ?)")
            params.append(text)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _values(value: object, kind: str) -> list[str]:
    if isinstance(value, (str, TaskStatus)):
        items: list[object] = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise TypeError(f"{kind} filter must be a string or an iterable of strings")
    out = []
    for item in items:
        if kind == "status":
            out.append(item.value if isinstance(item, TaskStatus) else TaskStatus(str(item)).value)
        else:
            out.append(str(item))
    return out


def _json(items: Iterable[Any]) -> str:
    values = list(items)
    if not values:  # most rows' lists, at the intent: a batch of 10,000 writes 40,000
        return "[]"
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))
