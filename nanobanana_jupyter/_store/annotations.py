"""Ratings, tags and notes: what a user says about a task, kept next to its record.

They live in tables of their own (``annotations`` and ``tags``, see :mod:`.database`), so
the task rows and their state machine are untouched, and every kernel sharing the data
directory sees them at once. This module checks the values and holds the SQL; the store
runs it in its short write transactions. Standard library only.

Decisions: a rating is an int from 0 to 5 (``None``: not rated; 0 is a rating, "no
stars"); a tag is stripped, its inner runs of white space made one space, and case-folded
(``"Best  Of"`` and ``"best of"`` are one tag), at most :data:`MAX_TAG_CHARS` characters;
a note is any text up to :data:`MAX_NOTE_CHARS` characters (an empty note removes it).
Tags, notes and prompts never hold an API key: they are redacted like prompts are.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterable, Sequence

from nanobanana_jupyter._wire.errors import ValidationError, redact

__all__ = [
    "MAX_NOTE_CHARS",
    "MAX_TAG_CHARS",
    "Annotation",
    "check_rating",
    "clean_note",
    "clean_tags",
    "read_annotations",
    "write_note",
    "write_rating",
    "write_tags",
]

MAX_TAG_CHARS = 64
"""The longest tag name, in characters."""
MAX_NOTE_CHARS = 10_000
"""The longest note, in characters."""
MAX_RATING = 5

_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class Annotation:
    """What the user said about one task: its rating, tags (sorted) and note."""

    rating: int | None = None
    tags: tuple[str, ...] = ()
    note: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.rating is None and not self.tags and not self.note


EMPTY = Annotation()


def check_rating(rating: object) -> int | None:
    """``rating`` as stored: an int 0..5, or ``None`` (clear it).

    Raises:
        ValidationError: a bool, a float, a string, or an int outside 0..5.
    """
    if rating is None:
        return None
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise ValidationError(
            f"a rating is a whole number from 0 to {MAX_RATING} (or None to clear it), "
            f"not {type(rating).__name__} {rating!r}"
        )
    if not 0 <= rating <= MAX_RATING:
        raise ValidationError(
            f"a rating is a whole number from 0 to {MAX_RATING} (or None to clear it), not {rating}"
        )
    return int(rating)


def clean_tags(names: Iterable[object]) -> list[str]:
    """Tag names as stored (stripped, one space inside, case-folded), without repeats.

    Raises:
        ValidationError: a name that is not a string, is empty, has control characters, or
            is longer than :data:`MAX_TAG_CHARS`; or no name at all.
    """
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValidationError(
                f"a tag is a string, not {type(name).__name__} {name!r}; "
                'pass several as task.tag("a", "b")'
            )
        tag = _SPACE.sub(" ", redact(name, limit=None).strip()).casefold()
        if not tag:
            raise ValidationError("a tag cannot be empty or only white space")
        if _CONTROL.search(tag):
            raise ValidationError(f"a tag cannot hold control characters: {name[:80]!r}")
        if len(tag) > MAX_TAG_CHARS:
            raise ValidationError(
                f"a tag is at most {MAX_TAG_CHARS} characters, not {len(tag)}: {tag[:40]!r}..."
            )
        if tag not in out:
            out.append(tag)
    if not out:
        raise ValidationError('name at least one tag, e.g. task.tag("favourite")')
    return out


def clean_note(note: object) -> str | None:
    """A note as stored: the text, or ``None`` for no note (``None`` or empty text).

    Raises:
        ValidationError: not a string, or longer than :data:`MAX_NOTE_CHARS`.
    """
    if note is None:
        return None
    if not isinstance(note, str):
        raise ValidationError(f"a note is a string, not {type(note).__name__}")
    if len(note) > MAX_NOTE_CHARS:
        raise ValidationError(f"a note is at most {MAX_NOTE_CHARS} characters, not {len(note)}")
    return redact(note, limit=None) if note.strip() else None


# -- SQL, run by the store inside one of its transactions ------------------------------------


def write_rating(conn: sqlite3.Connection, local_id: str, rating: int | None, now: float) -> None:
    _upsert(conn, local_id, "rating", rating, now)


def write_note(conn: sqlite3.Connection, local_id: str, note: str | None, now: float) -> None:
    _upsert(conn, local_id, "note", note, now)


def _upsert(
    conn: sqlite3.Connection, local_id: str, column: str, value: object, now: float
) -> None:
    assert column in ("rating", "note")
    conn.execute(
        f"INSERT INTO annotations (local_id, {column}, updated_at) VALUES (?, ?, ?) "  # noqa: S608
        f"ON CONFLICT (local_id) DO UPDATE SET {column} = excluded.{column}, "
        "updated_at = excluded.updated_at",
        (local_id, value, now),
    )
    # A row with nothing left in it is removed, so "annotated" always means something.
    conn.execute(
        "DELETE FROM annotations WHERE local_id = ? AND rating IS NULL AND note IS NULL",
        (local_id,),
    )


def write_tags(conn: sqlite3.Connection, local_id: str, tags: Sequence[str], *, add: bool) -> None:
    if add:
        conn.executemany(
            "INSERT OR IGNORE INTO tags (local_id, tag) VALUES (?, ?)",
            [(local_id, tag) for tag in tags],
        )
    else:
        conn.executemany(
            "DELETE FROM tags WHERE local_id = ? AND tag = ?", [(local_id, tag) for tag in tags]
        )


def read_annotations(
    conn: sqlite3.Connection, local_ids: Sequence[str] | None
) -> dict[str, Annotation]:
    """The annotations of these tasks (``None``: of every task), by local id; a task
    without any is left out."""
    rated: dict[str, tuple[int | None, str | None]] = {}
    tagged: dict[str, list[str]] = {}
    if local_ids is None:
        chunks: list[Sequence[str] | None] = [None]
    else:
        ids = list(dict.fromkeys(local_ids))
        chunks = [ids[i : i + 500] for i in range(0, len(ids), 500)]
    for chunk in chunks:
        where, params = ("", []) if chunk is None else _in(chunk)
        for local_id, rating, note in conn.execute(
            f"SELECT local_id, rating, note FROM annotations{where}",  # noqa: S608
            params,
        ):
            rated[local_id] = (rating, note)
        for local_id, tag in conn.execute(
            f"SELECT local_id, tag FROM tags{where} ORDER BY local_id, tag",  # noqa: S608
            params,
        ):
            tagged.setdefault(local_id, []).append(tag)
    out: dict[str, Annotation] = {}
    for local_id in rated.keys() | tagged.keys():
        rating, note = rated.get(local_id, (None, None))
        out[local_id] = Annotation(rating, tuple(tagged.get(local_id, ())), note)
    return out


def _in(ids: Sequence[str]) -> tuple[str, list[str]]:
    return f" WHERE local_id IN ({', '.join('?' for _ in ids)})", list(ids)
