"""Escaped HTML for notebooks: the task card, the history table, error boxes, safe URLs.

Standard library only; no IPython, no Pillow. Callers pass image bytes already read or made
(thumbnails, :mod:`.previews`), and get back strings. The rules below hold in one place:

- every string from a user, the server or the disk (prompt, status reason, model, file
  path, URL, id) is redacted of key-shaped text first and HTML-escaped last; truncation
  happens between the two, so a key is never cut into a piece the redaction cannot see;
- only ``http(s):`` URLs and ``data:image/(png|jpeg|webp|gif);base64,`` ever reach a
  ``src`` or ``href`` (see :func:`safe_src`); SVG can carry script and is never embedded;
- no JavaScript, no ``<style>`` block, no external resource: inline styles with fixed
  values only, so the output reads the same in a trusted notebook, an untrusted one,
  nbconvert HTML and on GitHub (which strips styles: the structure reads without them);
- colours work in light and dark themes: text inherits the theme's colour, surfaces are
  semi-transparent grey, and status badges are solid colours with their own text colour
  (:data:`.words.TONE_COLOURS`);
- the root of every HTML fragment carries ``tex2jax_ignore mathjax_ignore``, so a prompt
  such as ``costs $5 and $6`` shows as typed instead of being typeset by MathJax.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from urllib.parse import urlsplit

from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import redact
from nanobanana_jupyter._wire.models import RASTER_TYPES, TaskStatus

from .annotations import annotation_html, stars
from .previews import Preview, PreviewLike, as_preview, usable_previews
from .words import (
    FULL_ID_CHARS,
    MODEL_CHARS,
    PATH_CHARS,
    PROMPT_CARD_CHARS,
    PROMPT_META_CHARS,
    PROMPT_TABLE_CHARS,
    PROMPT_TITLE_CHARS,
    REASON_CHARS,
    REUSED,
    STAR_TEXT,
    TONE_COLOURS,
    clean,
    format_cost,
    format_duration,
    format_time,
    one_line,
    plural,
    reuse_words,
    shorten,
    shows_reason,
    status_label,
    time_spent,
    tone_colour,
    tone_of,
)

__all__ = [
    "HISTORY_COLUMNS",
    "badge",
    "cost_words",
    "data_uri",
    "error_html",
    "error_text",
    "escape",
    "history_html",
    "html_text",
    "img_tag",
    "safe_src",
    "task_html",
]

# Only these ever reach a src attribute as data URIs: raster types, base64 alphabet only.
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|webp|gif);base64,[A-Za-z0-9+/]*={0,2}\Z")
# Anything outside printable ASCII (whitespace, controls, zero-width and bidi marks), and
# the characters that could end an attribute or smuggle an escape, disqualify a URL.
_URL_UNSAFE = re.compile(r"[^\x21-\x7e]|[\"'<>\\`]")
# C0 controls other than tab, newline and carriage return, and DEL: shown as their Unicode
# control pictures (ESC as U+241B), never sent raw into a page (reliability.md P7).
_CONTROLS = {code: 0x2400 + code for code in range(0x20) if chr(code) not in "\t\n\r"}
_CONTROLS[0x7F] = 0x2421

# Theme-neutral surfaces: grey at low opacity reads on white and on near-black alike.
_CARD_STYLE = (
    "border:1px solid rgba(128,128,128,0.35);border-radius:8px;padding:8px 10px;"
    "margin:2px 0;background:rgba(128,128,128,0.06);max-width:100%;"
    "box-sizing:border-box;line-height:1.45;text-align:left"
)
_MUTED_STYLE = "opacity:0.72"
_SMALL_STYLE = "opacity:0.65;font-size:0.85em"
_BADGE_STYLE = "padding:1px 7px;border-radius:9px;font-size:0.85em;background:{bg};color:{fg}"
_WRAP_STYLE = "white-space:pre-wrap;overflow-wrap:anywhere"
# JupyterLab right-aligns table cells by default; prompts read better left-aligned.
_CELL_STYLE = "text-align:left;padding:2px 6px"
# What to do next, shown under the reason in the card. Constant, trusted markup.
_RESUME = "<code>session.resume()</code> or <code>%nanobanana resume</code>"
_HINTS: dict[TaskStatus, str] = {
    TaskStatus.FAILED: (
        "The server ended the task without an image. Adjust the prompt or options and "
        "generate again; the history shows what it cost."
    ),
    TaskStatus.NOT_SENT: (
        "The request never reached the server, so nothing was charged. Fix the cause and run "
        "it again."
    ),
    TaskStatus.SUBMIT_UNKNOWN: (
        "The submit may have reached the server and may have been charged, so it was not "
        "re-sent. Check <code>%nanobanana history</code> and your defapi.org dashboard before "
        "generating again."
    ),
    TaskStatus.TIMED_OUT: (
        "Polling stopped before the server gave a final answer (the reason is above); the task "
        f"may still be running on the server. Resume it with {_RESUME}."
    ),
    TaskStatus.ABANDONED: (
        "Cancelled here; the API has no cancel, so the server may still finish and charge. "
        f"Pick it up again with {_RESUME}."
    ),
    TaskStatus.UNAVAILABLE: (
        "The server reported success, but no image is here yet (the reason is above; result "
        f"URLs expire). Try {_RESUME} soon: it looks again at no cost."
    ),
    TaskStatus.UNRECOGNIZED: (
        "The server sent a status this client does not know; it keeps waiting until the deadline."
    ),
}


# -- strings -------------------------------------------------------------------------------


def escape(value: object) -> str:
    """``str(value)`` redacted of key-shaped strings, then HTML-escaped, quotes included.

    Safe both as element text and inside a double- or single-quoted attribute. Control
    characters (ESC, NUL, ...) are shown as their Unicode pictures (``␛``, ``␀``); nothing
    else is changed (no markdown, no whitespace folding), so the text reads as given.
    """
    return html.escape(clean(value).translate(_CONTROLS), quote=True)


def html_text(value: object, limit: int) -> str:
    """User text for HTML, shortened to ``limit``: redacted, then shortened, then escaped
    (the only order that never leaks part of a key)."""
    return html.escape(shorten(clean(value), limit).translate(_CONTROLS), quote=True)


# -- URLs and images ------------------------------------------------------------------------


def safe_src(url: str | None) -> str | None:
    """Return ``url`` escaped for an ``src``/``href`` attribute, or ``None`` if it may not go there.

    Allowed: ``http://`` and ``https://`` URLs with a host, made of printable ASCII without
    quotes, angle brackets, backticks, backslashes or whitespace, with no user info and no
    key-shaped text (it would be saved in the notebook); and
    ``data:image/(png|jpeg|webp|gif);base64,`` followed by base64 characters only. Refused:
    every other scheme (``javascript:``, ``vbscript:``, ``data:text/html``,
    ``data:image/svg+xml``, ...), relative and protocol-relative URLs, and anything with
    embedded whitespace, newlines or NULs, which browsers strip and so let a refused scheme
    hide (``java\\nscript:``).
    """
    if not isinstance(url, str) or not url:
        return None
    if _DATA_IMAGE.match(url):
        return url  # the pattern admits base64 characters only: nothing to escape
    if _URL_UNSAFE.search(url) or redact(url, limit=None) != url:
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not url[len(scheme) + 1 :].startswith("//"):
        return None
    if not parts.hostname or not port_ok or "@" in parts.netloc:
        return None
    return html.escape(url, quote=True)


def data_uri(data: bytes, media_type: str) -> str:
    """A ``data:`` URI of raster image bytes, for an ``<img src>``.

    Raises:
        ValueError: if ``media_type`` is not PNG, JPEG, WebP or GIF. SVG in particular is
            refused: it is a document that can carry script.
    """
    kind = media_type.strip().lower() if isinstance(media_type, str) else ""
    if kind not in RASTER_TYPES:
        raise ValueError(
            f"cannot embed {media_type!r}: only {', '.join(RASTER_TYPES)} are embedded"
        )
    return f"data:{kind};base64,{base64.b64encode(bytes(data)).decode('ascii')}"


def img_tag(preview: Preview, alt: str, style: str) -> str:
    """An ``<img>`` of embedded bytes; ``alt`` is already escaped."""
    src = safe_src(data_uri(preview.data, preview.media_type))
    if src is None:  # pragma: no cover - data_uri only makes URIs safe_src accepts
        return ""
    size = ""
    if preview.width is not None and preview.height is not None:
        size = f' width="{preview.width}" height="{preview.height}"'
    return f'<img src="{src}" alt="{alt}"{size} style="{style}">'


def badge(status: TaskStatus) -> str:
    """The status words on a solid badge of the status's tone."""
    colours = TONE_COLOURS[tone_of(status)]
    style = _BADGE_STYLE.format(bg=colours.background, fg=colours.foreground)
    return f'<strong class="nanobanana-status" style="{style}">{status_label(status)}</strong>'


def _problem(record: TaskRecord, tone: str) -> str:
    status = record.status
    hint = _HINTS.get(status)
    has_reason = shows_reason(record)
    if hint is None and not has_reason:
        return ""
    colour = tone_colour(tone)
    parts: list[str] = []
    if has_reason:
        reason = html_text(record.error, REASON_CHARS)
        parts.append(
            f'<div style="{_WRAP_STYLE}"><strong>Reason:</strong> <bdi>{reason}</bdi></div>'
        )
    elif status is TaskStatus.FAILED:
        parts.append("<div><strong>Reason:</strong> the server gave none.</div>")
    if hint is not None:
        parts.append(f'<div style="{_MUTED_STYLE}">{hint}</div>')
    style = (
        f"border-left:3px solid {colour};padding:4px 8px;margin-top:6px;"
        "background:rgba(128,128,128,0.08);border-radius:0 4px 4px 0"
    )
    return f'<div class="nanobanana-problem" style="{style}">{"".join(parts)}</div>'


def _gallery(record: TaskRecord, previews: list[Preview]) -> str:
    alt = html_text(record.prompt, PROMPT_CARD_CHARS)
    paths = [image.path for image in record.images]
    width = 512 if len(previews) <= 1 else 256
    figures: list[str] = []
    for index, preview in enumerate(previews):
        img = img_tag(
            preview,
            alt,
            f"display:block;max-width:100%;height:auto;border-radius:4px;max-height:{width}px",
        )
        caption = ""
        if index < len(paths):
            caption = f'<figcaption style="{_SMALL_STYLE}">{_path(paths[index])}</figcaption>'
        figures.append(f'<figure style="margin:0;max-width:{width}px">{img}{caption}</figure>')
    # Full-size files without a preview are still worth a pointer.
    rest = [f"<div>{_path(path)}</div>" for path in paths[len(previews) :]]
    out = ""
    if figures:
        out += (
            '<div class="nanobanana-images" style="display:flex;flex-wrap:wrap;gap:8px;'
            f'margin-top:8px">{"".join(figures)}</div>'
        )
    if rest:
        out += f'<div style="{_SMALL_STYLE};margin-top:6px">{"".join(rest)}</div>'
    return out


def _path(path: str) -> str:
    """A file path on one line: cut at the end with an ellipsis when narrow, never broken
    mid-hash; the whole path in the tooltip and selected whole with one click."""
    full = html_text(path, PATH_CHARS)
    return (
        f'<code title="{full}" style="display:block;max-width:100%;white-space:nowrap;'
        f'overflow:hidden;text-overflow:ellipsis;user-select:all">{full}</code>'
    )


def _result_links(record: TaskRecord) -> str:
    """Links to result URLs that were never stored locally (only safe ones)."""
    if record.images or not record.result_urls:
        return ""
    links = []
    for number, url in enumerate(record.result_urls, 1):
        href = safe_src(url)
        if href is not None and not href.startswith("data:"):
            links.append(
                f'<a href="{href}" rel="noopener noreferrer nofollow" target="_blank">'
                f"result {number}</a>"
            )
    if not links:
        return ""
    return (
        f'<div style="{_SMALL_STYLE};margin-top:6px">Not stored locally (these URLs expire): '
        f"{' · '.join(links)}</div>"
    )


def _texts(record: TaskRecord) -> str:
    return "".join(
        f'<div style="{_WRAP_STYLE};margin-top:6px"><strong>Model reply:</strong> '
        f"<bdi>{html_text(text, REASON_CHARS)}</bdi></div>"
        for text in record.texts[:3]
    )


def _full_id(label: str, ident: str | None) -> str:
    """``label <id>`` with the whole id, selected whole with one click (no JavaScript)."""
    shown = html_text(ident, FULL_ID_CHARS)
    return (
        f'{label} <code class="nanobanana-id" title="{shown}" '
        f'style="user-select:all;white-space:nowrap">{shown}</code>'
    )


def cost_words(record: TaskRecord, *, reused: bool = False, pretend: bool = False) -> str:
    """What a task cost, for a card or a line: ``0.5 credits``; a task handed back for an
    identical request says so (``reused, no new charge``); a sandbox's are pretend credits."""
    if reused:
        return REUSED
    return format_cost(record.consumed, pretend=pretend)


def task_html(
    record: TaskRecord,
    *,
    previews: Sequence[PreviewLike] = (),
    elapsed: float | None = None,
    reused: bool = False,
    pretend: bool = False,
    annotation: Annotation | None = None,
) -> str:
    """A small self-contained card for a task: status, time, model, cost, prompt, images.

    Args:
        record: the task.
        previews: downscaled images to embed, in the order of ``record.images``; anything
            that is not a raster image is left out.
        elapsed: seconds since the task started, shown while it runs.
        reused: the task was handed back for an identical request: the card says nothing
            new was charged (the first charge is in the cost's tooltip).
        pretend: a sandbox's task: its costs are pretend credits.
        annotation: its rating, tags and note, shown under the prompt when set.
    """
    status = record.status
    tone = tone_of(status)
    facts: list[str] = []
    spent = time_spent(record, elapsed)
    if spent is not None:
        facts.append(format_duration(spent))
    facts.append(f"<bdi>{html_text(record.model, MODEL_CHARS)}</bdi>")
    if reused:
        first = format_cost(record.consumed, pretend=pretend)
        facts.append(
            f'<span class="nanobanana-reused" title="first made for {first}">{REUSED}</span>'
        )
    elif record.consumed is not None:
        facts.append(format_cost(record.consumed, pretend=pretend))
    if record.images:
        facts.append(plural(len(record.images), "image"))
    elif status is TaskStatus.SUCCESS:
        facts.append("answered in words" if record.texts else plural(0, "image"))
    header = (
        f'<div class="nanobanana-head">{badge(status)}'
        f'<span style="{_MUTED_STYLE}"> · {" · ".join(facts)}</span></div>'
    )
    full_prompt = html_text(record.prompt, PROMPT_TITLE_CHARS)
    shown = html_text(record.prompt, PROMPT_CARD_CHARS) if record.prompt else "(no prompt)"
    prompt = (
        f'<div class="nanobanana-prompt" title="{full_prompt}" '
        f'style="margin-top:6px;{_WRAP_STYLE}"><bdi>{shown}</bdi></div>'
    )
    if record.task_id:
        footer_parts = [_full_id("task", record.task_id), _full_id("local", record.local_id)]
    else:
        footer_parts = [_full_id("local task", record.local_id)]
    options = [o for o in (record.aspect_ratio, record.image_size) if o]
    if options:
        footer_parts.append(" ".join(html_text(o, 20) for o in options))
    if record.references:
        footer_parts.append(plural(len(record.references), "reference image"))
    footer = (
        f'<div style="{_SMALL_STYLE};margin-top:6px;overflow-wrap:anywhere">'
        f"<bdi>{'</bdi> · <bdi>'.join(footer_parts)}</bdi></div>"
    )
    return (
        f'<div class="nanobanana-card tex2jax_ignore mathjax_ignore" style="{_CARD_STYLE}">'
        f"{header}{prompt}{annotation_html(annotation)}{_problem(record, tone)}{_texts(record)}"
        f"{_gallery(record, usable_previews(previews))}{_result_links(record)}{footer}</div>"
    )


# -- the history ----------------------------------------------------------------------------


def history_html(
    records: Sequence[TaskRecord],
    *,
    total: int,
    offset: int = 0,
    total_cost: Decimal | None = None,
    thumbs: Mapping[str, PreviewLike] | None = None,
    pretend: bool = False,
    reused: tuple[int, Decimal] | None = None,
    annotations: Mapping[str, Annotation] | None = None,
    summary: Sequence[str] | None = None,
) -> str:
    """One page of the history as a compact table, under a line such as
    ``57 tasks · 12.5 credits · reused 3 times (1.5 credits not charged again) ·
    showing 21–30``.

    Args:
        records: the tasks on this page, in the order to show.
        total: how many tasks the whole history holds.
        offset: the index of the first record of this page in the whole history.
        total_cost: credits charged over the whole history, when known.
        thumbs: tiny previews by ``local_id``; raster types only, the rest are left out.
        pretend: a sandbox's history: its costs are pretend credits.
        reused: how many hand-backs of its tasks, and the credits they were not charged.
        annotations: ratings and tags by ``local_id`` (``History.annotations``), shown in
            the rating and tags columns.
        summary: the words of the line above the table instead of the task count (a search
            says what it matched); the cost and "showing" parts follow as usual.
    """
    total = max(0, int(total))
    offset = max(0, int(offset))
    summary = [plural(total, "task")] if summary is None else [html_text(w, 200) for w in summary]
    if total_cost is not None:
        summary.append(format_cost(total_cost, pretend=pretend))
    again = None if reused is None else reuse_words(*reused, pretend=pretend)
    if again is not None:
        summary.append(again)
    if records:
        summary.append(f"showing {offset + 1}–{offset + len(records)}")
    elif total:
        summary.append(f"showing 0 of {total}")
    root = (
        '<div class="nanobanana-history tex2jax_ignore mathjax_ignore" '
        'style="max-width:100%;overflow-x:auto;text-align:left">'
    )
    head = f'<div style="{_MUTED_STYLE};margin:2px 0 6px">{" · ".join(summary)}</div>'
    if not records:
        empty = "" if total else f'<div style="{_SMALL_STYLE}">No tasks yet.</div>'
        return f"{root}{head}{empty}</div>"
    columns = HISTORY_COLUMNS
    header_cells = "".join(
        f'<th style="{_CELL_STYLE};border-bottom:1px solid rgba(128,128,128,0.45)">{c}</th>'
        for c in columns
    )
    notes = annotations or {}
    rows = [
        _history_row(
            record,
            None if thumbs is None else thumbs.get(record.local_id),
            pretend,
            notes.get(record.local_id),
        )
        for record in records
    ]
    table = (
        '<table style="border-collapse:collapse;margin:0;font-size:0.9em">'
        f"<thead><tr>{header_cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return f"{root}{head}{table}</div>"


HISTORY_COLUMNS = (
    "time", "status", "id", "model", "prompt", "rating", "tags", "cost", "reused", "duration",
    "polls", "images",
)  # fmt: skip
"""The columns of the history table, in order."""
# Cells that must never wrap ("0.5 / credits", a date over two lines, stars).
_NOWRAP = frozenset(
    {"time", "status", "id", "rating", "cost", "reused", "duration", "polls", "images"}
)
# A tags cell names at most this many tags (the rest as "+N"), each cut to this length.
_TAGS_SHOWN = 3
_TAG_CHARS = 16


def _rating_cell(annotation: Annotation | None) -> str:
    if annotation is None or annotation.rating is None:
        return "—"
    rating = annotation.rating
    return (
        f'<span class="nanobanana-rating" title="rated {rating} of 5" '
        f'style="color:{STAR_TEXT};letter-spacing:1px">{stars(rating)}</span>'
    )


def _tags_cell(annotation: Annotation | None) -> str:
    if annotation is None or not annotation.tags:
        return "—"
    tags = annotation.tags
    every = html_text(", ".join(tags), PROMPT_META_CHARS)
    shown = ", ".join(html_text(tag, _TAG_CHARS) for tag in tags[:_TAGS_SHOWN])
    more = f" +{len(tags) - _TAGS_SHOWN}" if len(tags) > _TAGS_SHOWN else ""
    return f'<span class="nanobanana-tags" title="{every}"><bdi>{shown}</bdi>{more}</span>'


def _history_id(record: TaskRecord) -> str:
    """The id cell: the server id (or the local id before it), shown cut, copied whole."""
    full = html_text(record.task_id or record.local_id, FULL_ID_CHARS)
    return (
        f'<code class="nanobanana-id" title="{full}" style="user-select:all;white-space:nowrap;'
        f'display:inline-block;max-width:9em;overflow:hidden;text-overflow:ellipsis;vertical-align:bottom">{full}</code>'
    )


def _history_row(
    record: TaskRecord,
    thumb: PreviewLike | None,
    pretend: bool = False,
    annotation: Annotation | None = None,
) -> str:
    count = len(record.images)
    images = str(count) if count else "—"
    preview = None if thumb is None else as_preview(thumb)
    if preview is not None:
        alt = html_text(record.prompt, PROMPT_TABLE_CHARS)
        img = img_tag(
            Preview(preview.data, preview.media_type),
            alt,
            "height:40px;width:auto;max-width:80px;border-radius:3px;vertical-align:middle",
        )
        images = f"{img} {images}"
    title = html_text(record.prompt, PROMPT_META_CHARS)
    shown = html_text(record.prompt, PROMPT_TABLE_CHARS)
    cells = (
        format_time(record.created_at),
        badge(record.status),
        _history_id(record),
        f"<bdi>{html_text(record.model, 40)}</bdi>",
        f'<span title="{title}"><bdi>{shown}</bdi></span>',
        _rating_cell(annotation),
        _tags_cell(annotation),
        format_cost(record.consumed, pretend=pretend),
        f"{record.reuses}×" if record.reuses else "—",
        format_duration(record.duration),
        str(record.polls),
        images,
    )
    return (
        "<tr>"
        + "".join(
            f'<td style="{_CELL_STYLE}{";white-space:nowrap" if name in _NOWRAP else ""}">{c}</td>'
            for name, c in zip(HISTORY_COLUMNS, cells, strict=True)
        )
        + "</tr>"
    )


# -- user errors ----------------------------------------------------------------------------


def error_html(message: str, *, hint: str | None = None) -> str:
    """A one-box user error for a notebook: the message, and what to do when known."""
    colour = tone_colour("failed")
    style = (
        f"border-left:3px solid {colour};padding:6px 10px;margin:2px 0;"
        "background:rgba(197,34,31,0.08);border-radius:0 6px 6px 0;text-align:left"
    )
    body = (
        f'<div style="{_WRAP_STYLE}"><strong>NanoBanana:</strong> '
        f"<bdi>{html_text(message, 2000)}</bdi></div>"
    )
    if hint:
        body += (
            f'<div style="{_MUTED_STYLE};{_WRAP_STYLE}"><bdi>{html_text(hint, 1000)}</bdi></div>'
        )
    return (
        f'<div class="nanobanana-error tex2jax_ignore mathjax_ignore" style="{style}">{body}</div>'
    )


def error_text(message: str, *, hint: str | None = None) -> str:
    """The same user error as one line of plain text: ``NanoBanana: message (hint)``."""
    line = f"NanoBanana: {shorten(one_line(message), 2000)}"
    if hint:
        line += f" ({shorten(one_line(hint), 1000)})"
    return line
