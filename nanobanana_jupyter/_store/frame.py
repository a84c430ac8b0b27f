"""The history as columns, straight from SQL: what ``History.to_pandas()`` and
``to_polars()`` are built from.

Building one :class:`TaskRecord` per row and then a dict of it cost most of a large
history's frame; here the selected rows are turned into one list per column, and only what
a record would change is worked out in Python, once per column (or once per distinct value):
the status (an unknown one reads as ``unrecognized``), the cost (an unusable stored value
reads as unknown), the JSON lists, and the masking of secrets that
:class:`TaskRecord` applies to prompts, URLs, errors and text answers. The duration is
computed in SQL, as :attr:`TaskRecord.duration` does. Standard library only.
"""

from __future__ import annotations

import contextlib
import gc
import json
import operator
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from nanobanana_jupyter._wire.errors import redact_texts
from nanobanana_jupyter._wire.models import TaskStatus

from .annotations import Annotation
from .records import RECORD_COLUMNS
from .rows import stored_cost

__all__ = [
    "CONVERTED",
    "SELECT_COLUMNS",
    "SELECT_COLUMNS_JSON",
    "TIME_COLUMNS",
    "column",
    "columns",
    "convert",
    "notes_columns",
    "paused_gc",
    "select_columns",
]

TIME_COLUMNS = ("created_at", "updated_at", "submitted_at", "finished_at")
"""The columns holding epoch seconds (datetimes in a frame)."""

# One SQL expression per column of RECORD_COLUMNS, in order.
_EXPRESSIONS: dict[str, str] = {
    "references": "refs",
    "duration": (
        "CASE WHEN submitted_at IS NULL OR finished_at IS NULL THEN NULL "
        "ELSE max(0.0, finished_at - submitted_at) END"
    ),
    "paths": "images",
}
# With SQLite's JSON functions, the one path of a task with one image (nearly all) comes
# out of SQL as "=" and the path as JSON (``->``: a text quoted, so any other type reads as
# that type), found in C: the images' JSON would otherwise be most of the frame's time.
# Two parses of the images' JSON a row (SQLite before 3.45 keeps none for the next call):
# a third, to ask the path's type, cost an eighth of a 10,000-row frame. Any other value
# comes as it is stored.
_PATHS_IN_SQL = (
    "CASE WHEN images = '[]' THEN images WHEN json_array_length(images) = 1 "
    "THEN coalesce('=' || (images -> '$[0].path'), images) ELSE images END"
)
_PATH_MARK = "="
SELECT_COLUMNS = ", ".join(_EXPRESSIONS.get(name, name) for name in RECORD_COLUMNS)
"""The select list whose rows :func:`columns` takes (any SQLite)."""
SELECT_COLUMNS_JSON = ", ".join(
    _PATHS_IN_SQL if name == "paths" else _EXPRESSIONS.get(name, name) for name in RECORD_COLUMNS
)
"""The same, for an SQLite with its JSON functions (see :func:`select_columns`)."""


def select_columns(conn: sqlite3.Connection) -> str:
    """The select list to use on this connection."""
    try:
        conn.execute("SELECT json_array_length('[]'), '[1]' -> '$[0]'").fetchone()
    except sqlite3.OperationalError:
        return SELECT_COLUMNS
    return SELECT_COLUMNS_JSON


_LISTS = ("references", "result_urls", "texts")
_MASKED = ("prompt", "callback_url", "error")
CONVERTED = ("status", "consumed", *_MASKED, *_LISTS, "paths")
"""The columns whose stored values :func:`convert` turns into a record's; the others are
what SQL returns."""
_STATUS = {status.value: status.value for status in TaskStatus}


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a frame is built: the hundreds of thousands of
    new lists and dicts (none of them in a cycle) would set it off again and again, each
    time walking every object made so far, which doubled the time of a large frame."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def columns(rows: Sequence[tuple[Any, ...]], notes: dict[str, Annotation]) -> dict[str, list[Any]]:
    """The values of ``rows`` (selected with :data:`SELECT_COLUMNS`) by column, as
    ``TaskRecord.to_dict()`` gives them, then ``rating``, ``tags`` and ``note``."""
    if rows:
        out: dict[str, list[Any]] = {
            name: list(values)
            for name, values in zip(RECORD_COLUMNS, zip(*rows, strict=True), strict=True)
        }
    else:
        out = {name: [] for name in RECORD_COLUMNS}
    for name in CONVERTED:
        out[name] = convert(name, out[name])
    out.update(notes_columns(out["local_id"], notes))
    return out


def column(rows: Sequence[tuple[Any, ...]], name: str) -> list[Any]:
    """One column of ``rows`` (selected with :data:`SELECT_COLUMNS`) as a list."""
    return list(map(operator.itemgetter(RECORD_COLUMNS.index(name)), rows))


def convert(name: str, values: list[Any]) -> list[Any]:
    """A column of stored values (one of :data:`CONVERTED`) as records hold them."""
    if name == "status":
        unknown = TaskStatus.UNRECOGNIZED.value
        return [_STATUS.get(value, unknown) for value in values]
    if name == "consumed":
        costs: dict[Any, float | None] = {}
        consumed: list[float | None] = []
        for value in values:
            if value is None:
                consumed.append(None)
                continue
            if value not in costs:
                amount = stored_cost(value)
                costs[value] = None if amount is None else float(amount)
            consumed.append(costs[value])
        return consumed
    if name in _MASKED:
        return redact_texts(values)
    if name in _LISTS:
        return _masked_lists(_json_lists(values))
    if name == "paths":
        # One decode for the marked paths (JSON values), one for the images' JSON of the rest.
        marked = [value[1:] for value in values if value[:1] == _PATH_MARK]
        paths = iter(json.loads("[" + ",".join(marked) + "]") if marked else ())
        rest = [value for value in values if value[:1] != _PATH_MARK]
        images = iter(_json_lists(rest))
        return [
            [next(paths)] if value[:1] == _PATH_MARK else [i["path"] for i in next(images)]
            for value in values
        ]
    raise ValueError(f"no conversion for column {name!r}")


def notes_columns(local_ids: Sequence[str], notes: dict[str, Annotation]) -> dict[str, list[Any]]:
    """The ``rating``, ``tags`` (a list) and ``note`` of each task (empty: ``None``, ``[]``)."""
    found = [notes.get(local_id) for local_id in local_ids]
    return {
        "rating": [None if note is None else note.rating for note in found],
        "tags": [[] if note is None else list(note.tags) for note in found],
        "note": [None if note is None else note.note for note in found],
    }


def _json_lists(texts: list[str]) -> list[list[Any]]:
    """Each JSON list text decoded (a fresh list each): one decode of the whole column,
    which costs a fraction of one ``json.loads`` per row."""
    full = [text for text in texts if text != "[]"]  # most of a column: nothing to decode
    if not full:
        return [[] for _ in texts]
    decoded = json.loads("[" + ",".join(full) + "]")
    if len(decoded) != len(full):  # a stored value that is not one JSON value
        decoded = [json.loads(text) for text in full]
    if len(full) == len(texts):
        return list(decoded)
    found = iter(decoded)
    return [[] if text == "[]" else next(found) for text in texts]


def _masked_lists(lists: list[list[str]]) -> list[list[str]]:
    """Each list's texts masked as :class:`TaskRecord` masks them (one search for all)."""
    flat: list[str | None] = [text for items in lists for text in items]
    masked = redact_texts(flat)
    if masked is flat:
        return lists
    it = iter(masked)
    return [[next(it) for _ in items] for items in lists]  # type: ignore[misc]
