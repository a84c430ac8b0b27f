"""A task's rating, tags and note on its card: stars, tag chips and the note, static and
escaped (readable in a saved notebook), and the same as a line of text."""

from __future__ import annotations

import html

from nanobanana_jupyter._display.words import STAR_TEXT
from nanobanana_jupyter._store.annotations import Annotation

__all__ = ["annotation_html", "annotation_text", "stars"]

_NOTE_CHARS = 200
_CHIP_STYLE = (
    "display:inline-block;padding:0 6px;margin:0 4px 2px 0;border-radius:8px;"
    "background:rgba(128,128,128,0.18);font-size:0.85em"
)


def stars(rating: int) -> str:
    """``★★★★☆`` for 4 of 5."""
    rating = max(0, min(5, rating))
    return "★" * rating + "☆" * (5 - rating)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def annotation_html(annotation: Annotation | None) -> str:
    """The card's line of stars, tags and note; empty when there is none of them."""
    if annotation is None or annotation.is_empty:
        return ""
    parts: list[str] = []
    if annotation.rating is not None:
        parts.append(
            f'<span class="nanobanana-rating" title="rated {annotation.rating} of 5" '
            f'style="color:{STAR_TEXT};letter-spacing:1px">{stars(annotation.rating)}</span>'
        )
    for tag in annotation.tags:
        parts.append(
            f'<span class="nanobanana-tag" style="{_CHIP_STYLE}"><bdi>'
            f"{html.escape(tag)}</bdi></span>"
        )
    line = f'<div class="nanobanana-annotation" style="margin-top:6px">{" ".join(parts)}</div>'
    if annotation.note:
        note = html.escape(annotation.note)
        shown = html.escape(_cut(annotation.note, _NOTE_CHARS))
        line += (
            f'<div class="nanobanana-note" title="{note}" style="margin-top:4px;'
            f'font-style:italic;overflow-wrap:anywhere"><bdi>{shown}</bdi></div>'
        )
    return line if parts else line.replace('<div class="nanobanana-annotation"', "<div", 1)


def annotation_text(annotation: Annotation | None) -> str:
    """``rated ★★★★☆ (4/5), tags cover, print, note 'use for the poster'``, or ``""``."""
    if annotation is None or annotation.is_empty:
        return ""
    parts: list[str] = []
    if annotation.rating is not None:
        parts.append(f"rated {stars(annotation.rating)} ({annotation.rating}/5)")
    if annotation.tags:
        parts.append("tags " + ", ".join(annotation.tags))
    if annotation.note:
        parts.append(f"note {_cut(annotation.note, 80)!r}")
    return ", ".join(parts)
