"""History search as SQL: the user's text as a safe FTS5 query, and tag and rating filters.

The text is never handed to FTS5 as query syntax: every word and every ``"quoted
phrase"`` becomes an FTS5 string (double quotes doubled inside), so ``AND``, ``*``, ``:``,
``(`` or an unbalanced quote are plain characters. Words match as prefixes and all of them
must appear (``red fox`` finds "a red foxglove"); a quoted phrase matches those words in a
row. Case and accents are ignored (``unicode61 remove_diacritics 2``). Text with no letter
or digit at all (``"!!!"``, ``"#"``), or a store without FTS5, falls back to the
case-insensitive substring match of ``History.filter(text=...)``. Standard library only.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from typing import Any

from nanobanana_jupyter._wire.errors import ValidationError

from .annotations import check_rating, clean_tags
from .database import PROMPT_INDEX

__all__ = [
    "COMMON_MATCHES",
    "COMMON_TEXT_CLAUSE",
    "ROWIDS_CLAUSE",
    "RatingFilter",
    "count_matches",
    "fts_query",
    "has_annotation_filter",
    "newest_matches",
    "rating_bounds",
    "search_clauses",
]

RatingFilter = int | tuple[int | None, int | None] | None

# Where the index narrows to few tasks, SQLite walks its matches and sorts them; where a
# word is common, it walks the tasks newest first and stops at the limit (the "+" keeps it
# from using the list of matches to drive the query). The store picks one by counting.
_TEXT_CLAUSE = f"rowid IN (SELECT rowid FROM {PROMPT_INDEX} WHERE {PROMPT_INDEX} MATCH ?)"  # noqa: S608
COMMON_TEXT_CLAUSE = "+" + _TEXT_CLAUSE
COMMON_MATCHES = 3000
"""Above this many matches the newest-first walk is quicker (benchmarks/bench_search.py)."""

_PART = re.compile(r'"([^"]*)"|(\S+)')


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def fts_query(text: str) -> str | None:
    """The FTS5 query for the user's text, or ``None`` when it has no word to index."""
    terms: list[str] = []
    for phrase, word in _PART.findall(text):
        part = phrase or word
        if not any(ch.isalnum() for ch in part):
            continue  # FTS5 indexes no punctuation: such a term would match nothing
        terms.append(_quoted(part) if phrase else _quoted(part) + "*")
    return " AND ".join(terms) if terms else None


def has_annotation_filter(clauses: list[str]) -> bool:
    """Whether a tag or rating condition is among ``clauses`` (its lookup should lead)."""
    return any(clause.startswith("local_id IN") for clause in clauses)


def _param_at(clauses: list[str], params: list[Any], clause: str) -> tuple[int, int]:
    """Where ``clause`` is in ``clauses`` and where its one parameter is in ``params``."""
    at = clauses.index(clause)
    return at, sum(c.count("?") for c in clauses[:at])


def count_matches(conn: sqlite3.Connection, clauses: list[str], params: list[Any]) -> None:
    """Turn the text condition into the plan that suits how many prompts match it: the
    matches are counted only as far as the choice needs (a common word can match most of
    the history).

    A plan that walks the tasks newest first and looks each one up in the index by rowid
    (an ``EXISTS`` per task) was tried: 3 ms for a word in 95% of 100,000 prompts, but
    3.5 ms *per task* on another history of 50,000 (one long doclist in few segments), so
    it is not used.
    """
    if _TEXT_CLAUSE not in clauses:
        return
    at, first = _param_at(clauses, params, _TEXT_CLAUSE)
    query = params[first]
    (matches,) = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {PROMPT_INDEX} "  # noqa: S608
        f"WHERE {PROMPT_INDEX} MATCH ? LIMIT ?)",
        (query, COMMON_MATCHES + 1),
    ).fetchone()
    if matches > COMMON_MATCHES:
        clauses[at] = COMMON_TEXT_CLAUSE


ROWIDS_CLAUSE = "rowid IN (SELECT value FROM json_each(?))"
"""The tasks whose rowids a JSON list names."""

NEWEST_FIRST_READS = 2048
"""How many of a common word's newest matches :func:`newest_matches` reads before it gives
way to the full plan (a filter that keeps few of them)."""


def newest_matches(
    conn: sqlite3.Connection, clauses: list[str], params: list[Any], limit: int
) -> list[int] | None:
    """The rowids of the newest ``limit`` tasks matching a common word and the other
    ``clauses``, read from the index newest rowid first and stopped early; ``None`` where
    that cannot be known to be the answer (the caller then runs the full plan).

    A word in most prompts matches tens of thousands of tasks; listing them all costs about
    30 ms on 100,000 tasks, where the newest few hundred cost well under one. Rowids follow
    the order tasks were written in, which is their creation order but for tasks written
    late (two processes on one history). So the answer is checked: no task older by rowid
    than the matches read may be as new as the last one kept; if one is, ``None``. Also
    ``None`` where an annotation filter is given (its lookup leads: few tasks) or where the
    other clauses keep fewer than ``limit`` of the first :data:`NEWEST_FIRST_READS` matches.
    """
    if COMMON_TEXT_CLAUSE not in clauses or limit <= 0 or has_annotation_filter(clauses):
        return None
    at, first = _param_at(clauses, params, COMMON_TEXT_CLAUSE)
    query = params[first]
    others = clauses[:at] + clauses[at + 1 :]
    other_params = params[:first] + params[first + 1 :]
    where = " AND ".join([ROWIDS_CLAUSE, *others])
    found: list[tuple[float, str, int]] = []
    below: int | None = None
    read = 0
    chunk = max(2 * limit, 256)
    while len(found) < limit:
        if read >= NEWEST_FIRST_READS:
            return None
        chunk = min(chunk, NEWEST_FIRST_READS - read)
        bound = "" if below is None else " AND rowid < ?"
        rowids = [
            rowid
            for (rowid,) in conn.execute(
                f"SELECT rowid FROM {PROMPT_INDEX} WHERE {PROMPT_INDEX} MATCH ?{bound} "  # noqa: S608
                "ORDER BY rowid DESC LIMIT ?",
                (query, chunk) if below is None else (query, below, chunk),
            )
        ]
        if not rowids:
            below = None  # every match was read: nothing older to check
            break
        read += len(rowids)
        below = rowids[-1]
        try:
            found += conn.execute(
                f"SELECT created_at, local_id, rowid FROM tasks WHERE {where}",  # noqa: S608
                (json.dumps(rowids), *other_params),
            ).fetchall()
        except sqlite3.OperationalError:  # an SQLite built without JSON: the full plan
            return None
        chunk *= 2
    found.sort(reverse=True)
    kept = found[:limit]
    if below is not None and kept:
        newer = conn.execute(
            "SELECT 1 FROM tasks WHERE created_at >= ? AND rowid < ? LIMIT 1",
            (kept[-1][0], below),
        ).fetchone()
        if newer is not None:
            return None
    return [rowid for _, _, rowid in kept]


def rating_bounds(rating: RatingFilter) -> tuple[int, int] | None:
    """``rating=4`` (exactly 4) or ``rating=(3, None)`` (3 or more) as inclusive bounds.

    Raises:
        ValidationError: not an int 0..5 nor a pair of them (either may be ``None``).
    """
    if rating is None:
        return None
    if isinstance(rating, tuple):
        if len(rating) != 2:
            raise ValidationError(
                f"rating= is an int or a (lowest, highest) pair, not a {len(rating)}-tuple"
            )
        low, high = (check_rating(bound) for bound in rating)
        low = 0 if low is None else low
        high = 5 if high is None else high
        if low > high:
            raise ValidationError(f"rating=({low}, {high}): the lowest is above the highest")
        return low, high
    exact = check_rating(rating)
    assert exact is not None
    return exact, exact


def search_clauses(
    text: str | None,
    tags: str | Iterable[str] | None,
    rating: RatingFilter,
    *,
    indexed: bool,
) -> tuple[list[str], list[Any], str | None]:
    """SQL conditions on ``tasks`` (and their parameters) for the text, tags and rating;
    and the text left for the substring filter when the index cannot answer it."""
    clauses: list[str] = []
    params: list[Any] = []
    substring: str | None = None
    if text is not None and not isinstance(text, str):
        raise ValidationError(f"text= is a string, not {type(text).__name__}")
    if text and text.strip():
        query = fts_query(text) if indexed else None
        if query is None:
            substring = text.strip()
        else:
            clauses.append(_TEXT_CLAUSE)
            params.append(query)
    given = [] if tags is None else [tags] if isinstance(tags, str) else list(tags)
    if given:
        names = clean_tags(given)
        # Every tag must be on the task: one indexed lookup per tag.
        for tag in names:
            clauses.append("local_id IN (SELECT local_id FROM tags WHERE tag = ?)")
            params.append(tag)
    bounds = rating_bounds(rating)
    if bounds is not None:
        clauses.append(
            "local_id IN (SELECT local_id FROM annotations WHERE rating BETWEEN ? AND ?)"
        )
        params.extend(bounds)
    return clauses, params, substring
