"""The words every view shows: status words and tones, cost, duration and time text, counts,
and the shortening and cleaning of untrusted text (for HTML, ``text/plain`` and terminals).

Standard library only. One table gives each status its tone and one each tone its colours;
the card's badge, the error box and the panel's status line all read them (:func:`tone_of`,
:data:`TONE_COLOURS`, :func:`tone_colour`, :func:`tone_text_colour`). Coloured text is mixed
with the theme's own text colour (:func:`on_theme`), so it reads on light and dark themes.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.credits import normalize_credits, usable_credits
from nanobanana_jupyter._wire.errors import redact
from nanobanana_jupyter._wire.models import TaskStatus

__all__ = [
    "FULL_ID_CHARS",
    "ID_CHARS",
    "MODEL_CHARS",
    "PATH_CHARS",
    "PROMPT_CARD_CHARS",
    "PROMPT_META_CHARS",
    "PROMPT_TABLE_CHARS",
    "PROMPT_TEXT_CHARS",
    "PROMPT_TITLE_CHARS",
    "REASON_CHARS",
    "REUSED",
    "STAR_COLOUR",
    "STAR_TEXT",
    "THEMED_SHARE",
    "TONES",
    "TONE_COLOURS",
    "ToneColours",
    "clean",
    "coarse_elapsed",
    "credits_words",
    "elapsed_step",
    "format_cost",
    "format_duration",
    "format_time",
    "on_theme",
    "one_line",
    "plain",
    "plain_token",
    "plural",
    "reuse_words",
    "short_id",
    "shorten",
    "shows_reason",
    "status_label",
    "status_note",
    "task_text",
    "terminal_text",
    "time_spent",
    "tone_colour",
    "tone_of",
    "tone_text_colour",
    "unknown_option",
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
FULL_ID_CHARS = 128
"""A whole id as shown to be copied (server ids are far shorter; the cap bounds a hostile one)."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")

# -- status: one table of tones, one of colours --------------------------------------------

TONES = ("running", "success", "failed", "warning", "neutral")


THEMED_SHARE = 60
"""Percent of a tone's own colour in its text colour; the rest is the theme's text colour."""


def on_theme(colour: str) -> str:
    """``colour`` as a CSS text colour that reads on light and dark themes alike.

    A fixed colour cannot: JupyterLab Dark's green ``#1b7f3b`` text on its ``#111`` is 3.7:1,
    under WCAG's 4.5:1. Mixed (``color-mix``) with ``currentColor``, the text colour the
    element inherits, it darkens on a light theme and lightens on a dark one, and keeps its
    hue; it needs no Jupyter CSS variable, so saved HTML (nbconvert, GitHub) reads too. A
    browser without ``color-mix`` drops the declaration and shows the theme's text colour.
    """
    return f"color-mix(in srgb, {colour} {THEMED_SHARE}%, currentColor)"


class ToneColours(NamedTuple):
    """The colours of one tone, for light and dark themes alike."""

    background: str
    """A badge's solid background (also a problem box's border), a hex colour."""
    foreground: str
    """The text on that background, a hex colour."""
    text: str
    """Coloured text on the theme's own background (the panel's status line): a CSS
    expression (:func:`on_theme`), not a hex colour."""
    hue: str
    """The hex colour ``text`` is mixed from."""


def _tone(background: str, foreground: str, text: str | None = None) -> ToneColours:
    hue = text or background
    return ToneColours(background, foreground, on_theme(hue), hue)


TONE_COLOURS: dict[str, ToneColours] = {
    "running": _tone("#1a64c8", "#ffffff"),
    "success": _tone("#1b7f3b", "#ffffff"),
    "failed": _tone("#c5221f", "#ffffff"),
    # Amber reads as a background with dark text; as text it starts from a darker amber.
    "warning": _tone("#f2a900", "#1f1f1f", "#b06f00"),
    "neutral": _tone("#5f6368", "#ffffff"),
}
STAR_COLOUR = "#c98a00"
"""The stars' amber; as text it is :data:`STAR_TEXT` (plain, it is 2.9:1 on white)."""
STAR_TEXT = on_theme(STAR_COLOUR)
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


def tone_of(status: TaskStatus) -> str:
    """The tone of a status: ``running``, ``success``, ``failed``, ``warning`` or ``neutral``."""
    return _TONE_OF.get(status, "neutral")


def tone_colour(tone: str) -> str:
    """The main colour of a tone: a badge's background, a problem box's border."""
    return TONE_COLOURS.get(tone, TONE_COLOURS["neutral"]).background


def tone_text_colour(tone: str) -> str:
    """The colour of a tone's text on the theme's background (a status line, a warning)."""
    return TONE_COLOURS.get(tone, TONE_COLOURS["neutral"]).text


def status_label(status: TaskStatus) -> str:
    """The words shown for a status: ``queued``, ``generating``, ``timed out``, ..."""
    try:
        return _LABELS[TaskStatus(status)]
    except (KeyError, ValueError):
        return "unknown status"


def status_note(status: TaskStatus) -> str | None:
    """What a status means for the user, in a few words (``nothing charged``), if anything."""
    return _TEXT_NOTES.get(status)


# -- untrusted text -------------------------------------------------------------------------


def clean(value: object) -> str:
    """Text fit to show anywhere: key-shaped strings masked, lone surrogates replaced.

    Surrogates come from undecodable file names (``surrogateescape``); they would make the
    output unencodable as UTF-8 when Jupyter sends or saves it.
    """
    return redact(_SURROGATE.sub("\ufffd", str(value)), limit=None)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(value: object, limit: int) -> str:
    """A user string for ``text/plain``: redacted, shortened, and quoted like ``repr``.

    ``repr`` escapes newlines, ANSI escapes (JupyterLab colours text/plain by them), NULs,
    and zero-width or bidi marks, so the line stays one line and shows what it contains.
    """
    return repr(shorten(clean(value), limit))


def one_line(value: object) -> str:
    """Redacted, every run of whitespace one space, stripped."""
    return _WHITESPACE.sub(" ", clean(value)).strip()


def plain_token(text: str) -> str:
    """A short identifier as is when it is printable and has no spaces; quoted otherwise."""
    return text if text and text.isprintable() and " " not in text else repr(text)


def short_id(record: TaskRecord) -> tuple[str, str]:
    """``("task", server id)`` once known, else ``("local task", local id)``; shortened."""
    if record.task_id:
        return "task", shorten(clean(record.task_id), ID_CHARS)
    return "local task", shorten(clean(record.local_id), ID_CHARS)


def plural(count: int, word: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def unknown_option(
    token: str, options: Iterable[str], *, help_hint: str, nothing_sent: bool = True
) -> str:
    """The one-line refusal of an option nobody defined, naming the closest one defined.

    ``unknown option --sise; did you mean --size? nothing was sent``; with nothing close,
    ``unknown option --bogus; nothing was sent (<help_hint>)``. ``token`` is what was typed
    (``--limt=3`` is read as ``--limt``); a long option is compared with long options only.
    """
    name = token.split("=", 1)[0]
    known = list(options)
    pool = [o for o in known if o.startswith("--")] if name.startswith("--") else known
    # Compared without the dashes, which every option shares (else --bogus reads as --out).
    bare = {option.lstrip("-"): option for option in pool}
    close = difflib.get_close_matches(name.lstrip("-"), list(bare), n=1, cutoff=0.6)
    if close:
        text = f"unknown option {name}; did you mean {bare[close[0]]}?"
        return f"{text} nothing was sent" if nothing_sent else text
    text = f"unknown option {name}; nothing was sent" if nothing_sent else f"unknown option {name}"
    return f"{text} ({help_hint})"


# Escape sequences a terminal acts on: CSI (ESC [ or the C1 byte 0x9b), strings ended by BEL
# or ST (OSC, DCS, SOS, PM, APC: ESC ] P X ^ _ or their C1 bytes), and two-character escapes.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -~]"
)
# Whatever control is left (C0, DEL, C1) and the bidirectional overrides (which reorder what
# is shown); line breaks and tabs become spaces, so one message stays one line.
_WHITESPACE_CONTROL = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: object) -> str:
    """``text`` fit for a terminal: no escape sequence, no control character, one line."""
    cleaned = _ESCAPE_SEQUENCE.sub("", str(text))
    return _CONTROL.sub("", _WHITESPACE_CONTROL.sub(" ", cleaned))


# -- numbers --------------------------------------------------------------------------------


REUSED = "reused, no new charge"
"""What a task handed back for an identical earlier request says instead of a new charge."""


def format_cost(value: Decimal | None, *, pretend: bool = False) -> str:
    """Credits as people read them: ``0.5 credits``, ``1 credit``; ``—`` when unknown.

    ``pretend`` (a sandbox's charges): ``0.5 pretend credits``.

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
    unit = "credit" if amount == 1 else "credits"
    return f"{format(amount, 'f')} {'pretend ' if pretend else ''}{unit}"


def reuse_words(count: int, saved: Decimal | None, *, pretend: bool = False) -> str | None:
    """What hand-backs saved, for a total line: ``reused 3 times (1.5 credits not charged
    again)``; ``None`` when nothing was reused."""
    if count <= 0:
        return None
    times = "once" if count == 1 else f"{count} times"
    if saved is None or not saved:
        return f"reused {times}, no new charge"
    return f"reused {times} ({format_cost(saved, pretend=pretend)} not charged again)"


def credits_words(
    spent: Decimal, submitted: int, reused: Decimal, reuses: int, *, pretend: bool = False
) -> str:
    """A session's credits, paid and reused apart: ``spent 1 credit on 2 tasks; reused
    once (0.5 credits not charged again)``."""
    line = f"spent {format_cost(spent, pretend=pretend)} on {plural(submitted, 'task')}"
    again = reuse_words(reuses, reused, pretend=pretend)
    return f"{line}; {again}" if again else line


def elapsed_step(seconds: float) -> float:
    """How finely a running task's elapsed time is shown at ``seconds``, and so how often its
    card needs a refresh: every second in the first minute, then 10 s, 1 min, 5 min."""
    if seconds < 60:
        return 1.0
    if seconds < 600:
        return 10.0
    if seconds < 3600:
        return 60.0
    return 300.0


def coarse_elapsed(seconds: float) -> float:
    """``seconds`` as a running card shows it: as is under a minute, then down to its
    :func:`elapsed_step` (``1 min 10 s``, ``12 min``, ``1 h 5 min``)."""
    if seconds < 60:
        return seconds
    step = elapsed_step(seconds)
    return math.floor(seconds / step) * step


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


def format_time(epoch: float | None) -> str:
    """A local date and time to the minute, ``2026-01-31 14:05``; ``—`` when unknown."""
    if epoch is None:
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(epoch)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def time_spent(record: TaskRecord, elapsed: float | None) -> float | None:
    """Elapsed seconds while running; the recorded duration once ended."""
    if record.is_terminal and record.duration is not None:
        return record.duration
    return elapsed


# -- a task as one line -----------------------------------------------------------------------


def task_text(
    record: TaskRecord,
    *,
    elapsed: float | None = None,
    reused: bool = False,
    pretend: bool = False,
) -> str:
    """One line for ``text/plain``, e.g.
    ``<NanoBanana task ta123… success: 1 image, 0.5 credits, 14 s, model google/gempix2,
    prompt 'a cat in a…'>``.

    Args:
        record: the task.
        elapsed: seconds since the task started, shown while it runs.
        reused: handed back for an identical request: says no new charge instead of the cost.
        pretend: a sandbox's task: its cost is in pretend credits.
    """
    status = record.status
    head = status_label(status)
    note = status_note(status)
    if note is not None:
        head = f"{head} ({note})"
    spent = time_spent(record, elapsed)
    details: list[str] = []
    if not status.is_terminal:
        # While running, the time goes with the word: "generating 12 s".
        if spent is not None:
            head = f"{head} {format_duration(spent)}"
        spent = None
    if status is TaskStatus.SUCCESS:
        if record.images or not record.texts:
            details.append(plural(len(record.images), "image"))
        if record.texts:
            details.append(plural(len(record.texts), "text answer"))
    if shows_reason(record):
        details.append(f"reason {plain(one_line(record.error), 80)}")
    elif status is TaskStatus.FAILED:
        details.append("no reason given")
    if reused:
        details.append(REUSED)
    elif record.consumed is not None:
        details.append(format_cost(record.consumed, pretend=pretend))
    if spent is not None:
        details.append(format_duration(spent))
    kind, ident = short_id(record)
    line = f"<NanoBanana {kind} {plain_token(ident)} {head}"
    if details:
        line += ": " + ", ".join(details)
    line += f", model {plain_token(shorten(clean(record.model), MODEL_CHARS))}"
    line += f", prompt {plain(record.prompt, PROMPT_TEXT_CHARS)}>"
    return line


def shows_reason(record: TaskRecord) -> bool:
    """An ended task that brought no image says why, when it knows."""
    return bool(record.error) and record.is_terminal and record.status is not TaskStatus.SUCCESS
