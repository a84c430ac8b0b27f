"""Pure display helpers: task records to plain text, HTML and Jupyter mimebundles.

Standard library only; no IPython, no Pillow. Callers pass image bytes already read or made
(thumbnails), and get back strings and dicts. The task handles, the history and both views
render through this module, so the rules below hold in one place:

- every string from a user, the server or the disk (prompt, status reason, model, file
  path, URL, id) is redacted of key-shaped text first and HTML-escaped last; truncation
  happens between the two, so a key is never cut into a piece the redaction cannot see;
- only ``http(s):`` URLs and ``data:image/(png|jpeg|webp|gif);base64,`` ever reach a
  ``src`` or ``href`` (see :func:`safe_src`); SVG can carry script and is never embedded;
- no JavaScript, no ``<style>`` block, no external resource: inline styles with fixed
  values only, so the output reads the same in a trusted notebook, an untrusted one,
  nbconvert HTML and on GitHub (which strips styles: the structure reads without them);
- colours work in light and dark themes: text inherits the theme's colour, surfaces are
  semi-transparent grey, and status badges are solid colours with their own text colour;
- the root of every HTML fragment carries ``tex2jax_ignore mathjax_ignore``, so a prompt
  such as ``costs $5 and $6`` shows as typed instead of being typeset by MathJax.
"""

from __future__ import annotations

import base64
import html
import math
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, TypeAlias
from urllib.parse import urlsplit

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.credits import normalize_credits, usable_credits
from nanobanana_jupyter._wire.errors import redact
from nanobanana_jupyter._wire.models import RASTER_TYPES, TaskStatus

__all__ = [
    "Preview",
    "PreviewLike",
    "data_uri",
    "error_html",
    "error_text",
    "escape",
    "format_cost",
    "format_duration",
    "history_html",
    "safe_src",
    "status_label",
    "task_bundle",
    "task_html",
    "task_text",
]

# How much of a user string each place shows. The card and alt texts stay readable; the
# title attribute (a tooltip) holds the whole prompt, bounded by what a request may carry.
PROMPT_CARD_CHARS = 300
PROMPT_TITLE_CHARS = 20_000
PROMPT_TEXT_CHARS = 40
PROMPT_TABLE_CHARS = 80
PROMPT_META_CHARS = 500
REASON_CHARS = 500
MODEL_CHARS = 80
PATH_CHARS = 300
ID_CHARS = 12

# Media types a Jupyter front end, nbconvert and GitHub all show as an image output.
_BUNDLE_IMAGE_TYPES = ("image/jpeg", "image/png")
_MAX_DIMENSION = 100_000

# Only these ever reach a src attribute as data URIs: raster types, base64 alphabet only.
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|webp|gif);base64,[A-Za-z0-9+/]*={0,2}\Z")
# Anything outside printable ASCII (whitespace, controls, zero-width and bidi marks), and
# the characters that could end an attribute or smuggle an escape, disqualify a URL.
_URL_UNSAFE = re.compile(r"[^\x21-\x7e]|[\"'<>\\`]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")
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

# Badge colours: solid backgrounds with their own text colour, so the badge looks the same
# whatever the theme. (background, text)
_TONES: dict[str, tuple[str, str]] = {
    "running": ("#1a64c8", "#ffffff"),
    "success": ("#1b7f3b", "#ffffff"),
    "failed": ("#c5221f", "#ffffff"),
    "warning": ("#f2a900", "#1f1f1f"),
    "neutral": ("#5f6368", "#ffffff"),
}
_TONE_OF: dict[TaskStatus, str] = {
    TaskStatus.WAITING_TO_SEND: "running",
    TaskStatus.SUBMITTING: "running",
    TaskStatus.PENDING: "running",
    TaskStatus.SUBMITTED: "running",
    TaskStatus.IN_PROGRESS: "running",
    TaskStatus.UNRECOGNIZED: "running",
    TaskStatus.SUCCESS: "success",
    TaskStatus.FAILED: "failed",
    TaskStatus.NOT_SENT: "failed",
    TaskStatus.SUBMIT_UNKNOWN: "warning",
    TaskStatus.TIMED_OUT: "warning",
    TaskStatus.UNAVAILABLE: "warning",
    TaskStatus.ABANDONED: "neutral",
}
_LABELS: dict[TaskStatus, str] = {
    TaskStatus.WAITING_TO_SEND: "waiting to send",
    TaskStatus.SUBMITTING: "submitting",
    TaskStatus.PENDING: "queued",
    TaskStatus.SUBMITTED: "queued",
    TaskStatus.IN_PROGRESS: "generating",
    TaskStatus.UNRECOGNIZED: "waiting",
    TaskStatus.SUCCESS: "success",
    TaskStatus.FAILED: "failed",
    TaskStatus.NOT_SENT: "not sent",
    TaskStatus.SUBMIT_UNKNOWN: "submit unknown",
    TaskStatus.TIMED_OUT: "timed out",
    TaskStatus.UNAVAILABLE: "unavailable",
    TaskStatus.ABANDONED: "abandoned",
}
# The one-line explanation text/plain adds after the label (what it means for the user).
_TEXT_NOTES: dict[TaskStatus, str] = {
    TaskStatus.NOT_SENT: "nothing charged",
    TaskStatus.SUBMIT_UNKNOWN: "may have been charged; not re-sent",
    TaskStatus.TIMED_OUT: "may still finish on the server; resumable",
    TaskStatus.UNAVAILABLE: "succeeded, but no image is here yet; resumable",
    TaskStatus.ABANDONED: "the server may still finish and charge; resumable",
    TaskStatus.UNRECOGNIZED: "the server sent a status this client does not know",
}
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


class Preview(NamedTuple):
    """A small image to embed: bytes already made (a thumbnail) and their raster type."""

    data: bytes
    media_type: str
    """``image/png``, ``image/jpeg``, ``image/webp`` or ``image/gif``; others are dropped."""
    width: int | None = None
    height: int | None = None


PreviewLike: TypeAlias = Preview | tuple[bytes, str] | tuple[bytes, str, tuple[int, int] | None]
"""A :class:`Preview`, or a plain ``(bytes, media_type)`` / ``(bytes, media_type, (w, h))``."""


# -- strings -------------------------------------------------------------------------------


def _clean(value: object) -> str:
    """Text fit to show anywhere: key-shaped strings masked, lone surrogates replaced.

    Surrogates come from undecodable file names (``surrogateescape``); they would make the
    output unencodable as UTF-8 when Jupyter sends or saves it.
    """
    return redact(_SURROGATE.sub("\ufffd", str(value)), limit=None)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(value: object) -> str:
    """``str(value)`` redacted of key-shaped strings, then HTML-escaped, quotes included.

    Safe both as element text and inside a double- or single-quoted attribute. Control
    characters (ESC, NUL, ...) are shown as their Unicode pictures (``␛``, ``␀``); nothing
    else is changed (no markdown, no whitespace folding), so the text reads as given.
    """
    return html.escape(_clean(value).translate(_CONTROLS), quote=True)


def _html_text(value: object, limit: int) -> str:
    """Redact, then shorten, then escape: the only order that never leaks part of a key."""
    return html.escape(_shorten(_clean(value), limit).translate(_CONTROLS), quote=True)


def _plain(value: object, limit: int) -> str:
    """A user string for ``text/plain``: redacted, shortened, and quoted like ``repr``.

    ``repr`` escapes newlines, ANSI escapes (JupyterLab colours text/plain by them), NULs,
    and zero-width or bidi marks, so the line stays one line and shows what it contains.
    """
    return repr(_shorten(_clean(value), limit))


def _one_line(value: object) -> str:
    return _WHITESPACE.sub(" ", _clean(value)).strip()


def _short_id(record: TaskRecord) -> tuple[str, str]:
    """``("task", server id)`` once known, else ``("local task", local id)``; shortened."""
    if record.task_id:
        return "task", _shorten(_clean(record.task_id), ID_CHARS)
    return "local task", _shorten(_clean(record.local_id), ID_CHARS)


def _plain_token(text: str) -> str:
    """A short identifier as is when it is printable and has no spaces; quoted otherwise."""
    return text if text and text.isprintable() and " " not in text else repr(text)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


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


def _dimension(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_DIMENSION:
        return value
    return None


def _as_preview(item: PreviewLike) -> Preview | None:
    """Normalise the accepted preview shapes; ``None`` for anything that may not be embedded.

    Rendering never raises over a bad preview: a display call that fails shows the user a
    traceback instead of their task, so a malformed or non-raster preview is just left out.
    """
    try:
        data, kind = item[0], item[1]
    except (TypeError, IndexError):
        return None
    width: object = None
    height: object = None
    try:
        if isinstance(item, Preview) or len(item) == 4:
            width, height = item[2:4]  # (bytes, type, w, h)
        elif len(item) == 3 and item[2] is not None:
            width, height = item[2]
    except (TypeError, ValueError):
        pass  # a size that cannot be read is no reason to hide the image
    if not isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(kind, str):
        return None
    kind = kind.strip().lower()
    if kind not in RASTER_TYPES or len(data) == 0:
        return None
    return Preview(bytes(data), kind, _dimension(width), _dimension(height))


def _previews(items: Sequence[PreviewLike]) -> list[Preview]:
    return [p for p in map(_as_preview, items) if p is not None]


def _img(preview: Preview, alt: str, style: str) -> str:
    """An ``<img>`` of embedded bytes; ``alt`` is already escaped."""
    src = safe_src(data_uri(preview.data, preview.media_type))
    if src is None:  # pragma: no cover - data_uri only makes URIs safe_src accepts
        return ""
    size = ""
    if preview.width is not None and preview.height is not None:
        size = f' width="{preview.width}" height="{preview.height}"'
    return f'<img src="{src}" alt="{alt}"{size} style="{style}">'


# -- numbers --------------------------------------------------------------------------------


def format_cost(value: Decimal | None) -> str:
    """Credits as people read them: ``0.5 credits``, ``1 credit``; ``—`` when unknown.

    At most four decimal places; trailing zeros dropped; zero is ``0``, never ``-0``. A value
    that cannot be a cost (negative, infinite, beyond any real charge) is unknown.
    """
    if value is None:
        return "—"
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return "—"
    amount = usable_credits(number)
    if amount is None:
        return "—"
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        amount = amount.quantize(Decimal("0.0001"))
    amount = normalize_credits(amount)
    return f"{format(amount, 'f')} {'credit' if amount == 1 else 'credits'}"


def format_duration(seconds: float | None) -> str:
    """A duration for people: ``4.2 s``, ``12 s``, ``3 min 5 s``, ``1 h 2 min``.

    ``—`` when unknown (``None``, NaN, infinite); negative values count as zero.
    """
    if seconds is None or isinstance(seconds, bool):
        return "—"
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(value):
        return "—"
    value = max(0.0, value)
    if value < 9.95:
        return f"{value:.1f} s"
    total = round(value)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60} min"


def _format_time(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(epoch)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


# -- status ---------------------------------------------------------------------------------


def status_label(status: TaskStatus) -> str:
    """The words shown for a status: ``queued``, ``generating``, ``timed out``, ..."""
    try:
        return _LABELS[TaskStatus(status)]
    except (KeyError, ValueError):
        return "unknown status"


def _badge(status: TaskStatus) -> str:
    background, foreground = _TONES[_TONE_OF.get(status, "neutral")]
    style = _BADGE_STYLE.format(bg=background, fg=foreground)
    return f'<strong class="nanobanana-status" style="{style}">{status_label(status)}</strong>'


def _time_spent(record: TaskRecord, elapsed: float | None) -> float | None:
    """Elapsed seconds while running; the recorded duration once ended."""
    if record.is_terminal and record.duration is not None:
        return record.duration
    return elapsed


# -- a task ---------------------------------------------------------------------------------


def task_text(record: TaskRecord, *, elapsed: float | None = None) -> str:
    """One line for ``text/plain``, e.g.
    ``<NanoBanana task ta123… success: 1 image, 0.5 credits, 14 s, model google/gempix2,
    prompt 'a cat in a…'>``.

    Args:
        record: the task.
        elapsed: seconds since the task started, shown while it runs.
    """
    status = record.status
    head = status_label(status)
    note = _TEXT_NOTES.get(status)
    if note is not None:
        head = f"{head} ({note})"
    spent = _time_spent(record, elapsed)
    details: list[str] = []
    if not status.is_terminal:
        # While running, the time goes with the word: "generating 12 s".
        if spent is not None:
            head = f"{head} {format_duration(spent)}"
        spent = None
    if status is TaskStatus.SUCCESS:
        details.append(_plural(len(record.images), "image"))
        if record.texts:
            details.append(_plural(len(record.texts), "text answer"))
    if _shows_reason(record):
        details.append(f"reason {_plain(_one_line(record.error), 80)}")
    elif status is TaskStatus.FAILED:
        details.append("no reason given")
    if record.consumed is not None:
        details.append(format_cost(record.consumed))
    if spent is not None:
        details.append(format_duration(spent))
    kind, ident = _short_id(record)
    line = f"<NanoBanana {kind} {_plain_token(ident)} {head}"
    if details:
        line += ": " + ", ".join(details)
    line += f", model {_plain_token(_shorten(_clean(record.model), MODEL_CHARS))}"
    line += f", prompt {_plain(record.prompt, PROMPT_TEXT_CHARS)}>"
    return line


def _shows_reason(record: TaskRecord) -> bool:
    """An ended task that brought no image says why, when it knows."""
    return bool(record.error) and record.is_terminal and record.status is not TaskStatus.SUCCESS


def _problem(record: TaskRecord, tone: str) -> str:
    status = record.status
    hint = _HINTS.get(status)
    has_reason = _shows_reason(record)
    if hint is None and not has_reason:
        return ""
    colour = _TONES[tone][0]
    parts: list[str] = []
    if has_reason:
        reason = _html_text(record.error, REASON_CHARS)
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
    alt = _html_text(record.prompt, PROMPT_CARD_CHARS)
    paths = [image.path for image in record.images]
    width = 512 if len(previews) <= 1 else 256
    figures: list[str] = []
    for index, preview in enumerate(previews):
        img = _img(
            preview,
            alt,
            f"display:block;max-width:100%;height:auto;border-radius:4px;max-height:{width}px",
        )
        caption = ""
        if index < len(paths):
            caption = (
                f'<figcaption style="{_SMALL_STYLE};{_WRAP_STYLE}">'
                f"<code>{_html_text(paths[index], PATH_CHARS)}</code></figcaption>"
            )
        figures.append(f'<figure style="margin:0;max-width:{width}px">{img}{caption}</figure>')
    # Full-size files without a preview are still worth a pointer.
    rest = [
        f"<div><code>{_html_text(path, PATH_CHARS)}</code></div>" for path in paths[len(previews) :]
    ]
    out = ""
    if figures:
        out += (
            '<div class="nanobanana-images" style="display:flex;flex-wrap:wrap;gap:8px;'
            f'margin-top:8px">{"".join(figures)}</div>'
        )
    if rest:
        out += f'<div style="{_SMALL_STYLE};{_WRAP_STYLE};margin-top:6px">{"".join(rest)}</div>'
    return out


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
        f"<bdi>{_html_text(text, REASON_CHARS)}</bdi></div>"
        for text in record.texts[:3]
    )


def task_html(
    record: TaskRecord,
    *,
    previews: Sequence[PreviewLike] = (),
    elapsed: float | None = None,
) -> str:
    """A small self-contained card for a task: status, time, model, cost, prompt, images.

    Args:
        record: the task.
        previews: downscaled images to embed, in the order of ``record.images``; anything
            that is not a raster image is left out.
        elapsed: seconds since the task started, shown while it runs.
    """
    status = record.status
    tone = _TONE_OF.get(status, "neutral")
    facts: list[str] = []
    spent = _time_spent(record, elapsed)
    if spent is not None:
        facts.append(format_duration(spent))
    facts.append(f"<bdi>{_html_text(record.model, MODEL_CHARS)}</bdi>")
    if record.consumed is not None:
        facts.append(format_cost(record.consumed))
    if status is TaskStatus.SUCCESS or record.images:
        facts.append(_plural(len(record.images), "image"))
    header = (
        f'<div class="nanobanana-head">{_badge(status)}'
        f'<span style="{_MUTED_STYLE}"> · {" · ".join(facts)}</span></div>'
    )
    full_prompt = _html_text(record.prompt, PROMPT_TITLE_CHARS)
    shown = _html_text(record.prompt, PROMPT_CARD_CHARS) if record.prompt else "(no prompt)"
    prompt = (
        f'<div class="nanobanana-prompt" title="{full_prompt}" '
        f'style="margin-top:6px;{_WRAP_STYLE}"><bdi>{shown}</bdi></div>'
    )
    kind, ident = _short_id(record)
    footer_parts = [f"{kind} {escape(ident)}"]
    if record.task_id:
        footer_parts.append(f"local {_html_text(record.local_id, ID_CHARS)}")
    options = [o for o in (record.aspect_ratio, record.image_size) if o]
    if options:
        footer_parts.append(" ".join(_html_text(o, 20) for o in options))
    if record.references:
        footer_parts.append(_plural(len(record.references), "reference image"))
    if record.polls:
        footer_parts.append(_plural(record.polls, "poll"))
    footer = (
        f'<div style="{_SMALL_STYLE};margin-top:6px">'
        f"<bdi>{'</bdi> · <bdi>'.join(footer_parts)}</bdi></div>"
    )
    return (
        f'<div class="nanobanana-card tex2jax_ignore mathjax_ignore" style="{_CARD_STYLE}">'
        f"{header}{prompt}{_problem(record, tone)}{_texts(record)}"
        f"{_gallery(record, _previews(previews))}{_result_links(record)}{footer}</div>"
    )


def _json_number(value: Decimal | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def task_bundle(
    record: TaskRecord,
    *,
    previews: Sequence[PreviewLike] = (),
    elapsed: float | None = None,
    embed_first_image: bool = True,
) -> tuple[dict[str, object], dict[str, object]]:
    """A Jupyter mimebundle ``(data, metadata)`` for ``_repr_mimebundle_`` and display handles.

    ``data`` holds ``text/plain``, ``text/html`` and, when ``embed_first_image`` and a JPEG or
    PNG preview is given, that image as base64 under its own type, so saved notebooks,
    nbconvert and GitHub show it without any JavaScript. ``metadata["nanobanana"]`` names the
    task (ids, status, model, prompt cut to 500 characters, paths, credits) for tools that
    read notebooks; everything in it is JSON-serialisable and redacted.
    """
    usable = _previews(previews)
    data: dict[str, object] = {
        "text/plain": task_text(record, elapsed=elapsed),
        "text/html": task_html(record, previews=usable, elapsed=elapsed),
    }
    metadata: dict[str, object] = {
        "nanobanana": {
            "local_id": _clean(record.local_id),
            "task_id": None if record.task_id is None else _clean(record.task_id),
            "status": str(record.status.value),
            "model": _shorten(_clean(record.model), MODEL_CHARS),
            "prompt": _shorten(_clean(record.prompt), PROMPT_META_CHARS),
            "paths": [_clean(image.path) for image in record.images],
            "consumed": _json_number(record.consumed),
        }
    }
    if embed_first_image:
        first = next((p for p in usable if p.media_type in _BUNDLE_IMAGE_TYPES), None)
        if first is not None:
            data[first.media_type] = base64.b64encode(first.data).decode("ascii")
            if first.width is not None and first.height is not None:
                metadata[first.media_type] = {"width": first.width, "height": first.height}
    return data, metadata


# -- the history ----------------------------------------------------------------------------


def history_html(
    records: Sequence[TaskRecord],
    *,
    total: int,
    offset: int = 0,
    total_cost: Decimal | None = None,
    thumbs: Mapping[str, PreviewLike] | None = None,
) -> str:
    """One page of the history as a compact table, under a line such as
    ``57 tasks · 12.5 credits · showing 21–30``.

    Args:
        records: the tasks on this page, in the order to show.
        total: how many tasks the whole history holds.
        offset: the index of the first record of this page in the whole history.
        total_cost: credits charged over the whole history, when known.
        thumbs: tiny previews by ``local_id``; raster types only, the rest are left out.
    """
    total = max(0, int(total))
    offset = max(0, int(offset))
    summary = [_plural(total, "task")]
    if total_cost is not None:
        summary.append(format_cost(total_cost))
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
    columns = ("time", "status", "model", "prompt", "cost", "duration", "polls", "images")
    header_cells = "".join(
        f'<th style="{_CELL_STYLE};border-bottom:1px solid rgba(128,128,128,0.45)">{c}</th>'
        for c in columns
    )
    rows = [
        _history_row(record, None if thumbs is None else thumbs.get(record.local_id))
        for record in records
    ]
    table = (
        '<table style="border-collapse:collapse;margin:0;font-size:0.9em">'
        f"<thead><tr>{header_cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return f"{root}{head}{table}</div>"


def _history_row(record: TaskRecord, thumb: PreviewLike | None) -> str:
    count = len(record.images)
    images = str(count) if count else "—"
    preview = None if thumb is None else _as_preview(thumb)
    if preview is not None:
        alt = _html_text(record.prompt, PROMPT_TABLE_CHARS)
        img = _img(
            Preview(preview.data, preview.media_type),
            alt,
            "height:40px;width:auto;max-width:80px;border-radius:3px;vertical-align:middle",
        )
        images = f"{img} {images}"
    title = _html_text(record.prompt, PROMPT_META_CHARS)
    shown = _html_text(record.prompt, PROMPT_TABLE_CHARS)
    cells = (
        _format_time(record.created_at),
        _badge(record.status),
        f"<bdi>{_html_text(record.model, 40)}</bdi>",
        f'<span title="{title}"><bdi>{shown}</bdi></span>',
        format_cost(record.consumed),
        format_duration(record.duration),
        str(record.polls),
        images,
    )
    return "<tr>" + "".join(f'<td style="{_CELL_STYLE}">{c}</td>' for c in cells) + "</tr>"


# -- user errors ----------------------------------------------------------------------------


def error_html(message: str, *, hint: str | None = None) -> str:
    """A one-box user error for a notebook: the message, and what to do when known."""
    colour = _TONES["failed"][0]
    style = (
        f"border-left:3px solid {colour};padding:6px 10px;margin:2px 0;"
        "background:rgba(197,34,31,0.08);border-radius:0 6px 6px 0;text-align:left"
    )
    body = (
        f'<div style="{_WRAP_STYLE}"><strong>NanoBanana:</strong> '
        f"<bdi>{_html_text(message, 2000)}</bdi></div>"
    )
    if hint:
        body += (
            f'<div style="{_MUTED_STYLE};{_WRAP_STYLE}"><bdi>{_html_text(hint, 1000)}</bdi></div>'
        )
    return (
        f'<div class="nanobanana-error tex2jax_ignore mathjax_ignore" style="{style}">{body}</div>'
    )


def error_text(message: str, *, hint: str | None = None) -> str:
    """The same user error as one line of plain text: ``NanoBanana: message (hint)``."""
    line = f"NanoBanana: {_shorten(_one_line(message), 2000)}"
    if hint:
        line += f" ({_shorten(_one_line(hint), 1000)})"
    return line


def batch_bundle(tasks: Sequence[Any]) -> dict[str, object]:
    """A one-line progress bar for a batch of tasks, as text and escaped HTML.

    ``tasks`` are objects with ``status`` (a :class:`TaskStatus`) and ``done()``.
    """
    total = len(tasks)
    done = sum(1 for t in tasks if t.done())
    ok = sum(1 for t in tasks if t.status is TaskStatus.SUCCESS)
    counts: dict[str, int] = {}
    for t in tasks:
        if not t.done():
            label = status_label(t.status)
            counts[label] = counts.get(label, 0) + 1
    running = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    failed = done - ok
    parts = [f"{done}/{total} done"]
    if failed:
        parts.append(f"{failed} without images")
    if running:
        parts.append(running)
    summary = " · ".join(parts)
    width = 20
    filled = round(width * done / total) if total else width
    text = f"[{'#' * filled}{'.' * (width - filled)}] {summary}"
    percent = round(100 * done / total) if total else 100
    html_text = (
        '<div class="tex2jax_ignore mathjax_ignore" style="font-size:0.9em;margin:2px 0">'
        '<div style="display:inline-block;vertical-align:middle;width:12em;height:0.6em;'
        'background:rgba(128,128,128,0.2);border-radius:3px;overflow:hidden">'
        f'<div style="width:{percent}%;height:100%;background:#1a64c8"></div></div> '
        f"<span>{escape(summary)}</span></div>"
    )
    return {"text/plain": text, "text/html": html_text}
