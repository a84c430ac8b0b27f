"""A search of the history as the views show it: the history's table (thumbnails, stars,
tags) under a line saying what was matched, and the same as lines of text.

The magic shows :func:`search_bundle` as its cell's one output; the terminal prints
:func:`search_lines`. Both read the same records and annotations, found by
``History.search``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nanobanana_jupyter._core.curation import SearchRequest
from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.search import RatingFilter

from .annotations import stars
from .html import history_html
from .previews import PreviewLike
from .words import format_time, one_line, shorten

__all__ = ["search_bundle", "search_lines", "search_summary"]

_PROMPT_CHARS = 50


def _rating_words(rating: RatingFilter) -> str | None:
    if rating is None:
        return None
    if isinstance(rating, int):
        return f"rated {rating}"
    low, high = rating
    if low is None and high is None:
        return "rated"
    if high is None or high == 5:
        return f"rated {0 if low is None else low} or more"
    if low is None or low == 0:
        return f"rated {high} or less"
    return f"rated {low}–{high}"


def search_summary(request: SearchRequest, count: int) -> list[str]:
    """The words of the line above the results: ``3 matches for 'fox'``, ``tag best``,
    ``rated 4 or more``, ... and, when the limit cut the list, how to see more."""
    head = f"{count} match" if count == 1 else f"{count} matches"
    if request.text:
        head += f" for {shorten(one_line(request.text), 60)!r}"
    words = [head]
    words += [f"tag {one_line(tag)}" for tag in request.tags]
    for part in (
        None if request.model is None else f"model {request.model}",
        None if request.status is None else f"status {request.status}",
        _rating_words(request.rating),
        None if request.since_word is None else f"since {request.since_word}",
        None if request.until_word is None else f"until {request.until_word}",
    ):
        if part is not None:
            words.append(shorten(one_line(part), 80))
    if count >= request.limit:
        words.append(f"the newest {request.limit} (--limit for more)")
    return words


def search_bundle(
    records: Sequence[TaskRecord],
    summary: Sequence[str],
    *,
    annotations: Mapping[str, Annotation],
    thumbs: Mapping[str, PreviewLike] | None = None,
    pretend: bool = False,
) -> dict[str, str]:
    """The results as a static mimebundle: the history's table (escaped HTML), and text."""
    lines = [" · ".join(summary), *search_lines(records, annotations)]
    return {
        "text/plain": "\n".join(lines),
        "text/html": history_html(
            records,
            total=len(records),
            thumbs=thumbs,
            pretend=pretend,
            annotations=annotations,
            summary=summary,
        ),
    }


def search_lines(records: Sequence[TaskRecord], annotations: Mapping[str, Annotation]) -> list[str]:
    """One line a task, newest first: time, status, stars, id, prompt, tags (not yet
    cleaned for a terminal: the terminal passes each through ``terminal_text``)."""
    lines: list[str] = []
    for record in records:
        annotation = annotations.get(record.local_id)
        rating = ""
        if annotation is not None and annotation.rating is not None:
            rating = stars(annotation.rating)
        tags = ""
        if annotation is not None and annotation.tags:
            tags = " [" + ", ".join(annotation.tags) + "]"
        prompt = shorten(one_line(record.prompt), _PROMPT_CHARS)
        ident = one_line(record.task_id or record.local_id)
        lines.append(
            f"{format_time(record.created_at)}  {record.status.value:<14} {rating:<5}  "
            f"{ident:<40} {prompt}{tags}"
        )
    return lines
