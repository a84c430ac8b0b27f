"""What the server says about a task: a :class:`TaskSnapshot` and its result items.

Data only, no I/O, standard library only. Parsing is liberal in what it accepts (the live
service adds fields, drops optional ones, sends numbers as strings, writes ``result`` in
several shapes) and strict in what it returns: a snapshot is always well-formed, or
:class:`ProtocolError` is raised.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal

from .credits import parse_credits
from .errors import ProtocolError, redact
from .models import TaskStatus, is_http_url

__all__ = ["RAW_RESULT_CHARS", "ResultItem", "TaskSnapshot"]


@dataclasses.dataclass(frozen=True)
class ResultItem:
    """One entry of a task's result: an image (URL or data URI) or, rarely, text."""

    image: str | None = None
    text: str | None = None

    @property
    def is_data_uri(self) -> bool:
        return self.image is not None and self.image.startswith("data:")


def _parse_reason(value: object) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("message")
    if isinstance(value, str) and value.strip():
        return redact(value, limit=2000)
    return None


# Where an entry's image may be: the documented key first, then what other model families
# of this service send (api-reference.md, "More that public clients show").
_IMAGE_KEYS = ("image", "url", "big_image_url", "image_url")
RAW_RESULT_CHARS = 500
"""The most of a raw result kept for the user when a success carries no image."""


def _image_ref(value: object) -> str | None:
    """The value as an image reference, if it is an http(s) URL or a ``data:image/`` URI.

    Anything else (``javascript:``, ``file:``, relative paths, other data types) is never
    put where an image URL goes.
    """
    if not isinstance(value, str):
        return None
    ref = value.strip()
    if ref[:11].lower() == "data:image/":
        return "data:" + ref[5:]
    return ref if is_http_url(ref) else None


def _parse_entry(entry: object, *, nested: bool = False) -> list[ResultItem]:
    if isinstance(entry, str):
        ref = _image_ref(entry)
        return [ResultItem(image=ref)] if ref else []
    if not isinstance(entry, Mapping):
        return []
    for key in _IMAGE_KEYS:
        ref = _image_ref(entry.get(key))
        if ref is not None:
            return [ResultItem(image=ref)]
    text = entry.get("text")
    if isinstance(text, str) and text.strip():
        return [ResultItem(text=text)]
    inner = entry.get("images")
    if not nested and isinstance(inner, Sequence) and not isinstance(inner, (str, bytes)):
        return [item for sub in inner for item in _parse_entry(sub, nested=True)]
    return []


def _parse_results(value: object) -> tuple[ResultItem, ...]:
    """Read ``result`` in every shape the service is seen to send.

    A list of entries (documented), a single entry object (Wan, Midjourney), or a bare
    string; an entry is an object with an image under one of :data:`_IMAGE_KEYS` (the
    first usable one wins, so ``{"image": null, "url": ...}`` gives the URL), an object
    with ``text``, an object holding an ``images`` list, or a string.
    """
    if isinstance(value, (str, Mapping)):
        entries: Sequence[object] = (value,)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        entries = value
    else:
        return ()
    return tuple(item for entry in entries for item in _parse_entry(entry))


def _shorten(value: object, depth: int = 0) -> object:
    """A small copy of a JSON value: strings redacted then cut, containers cut (for text)."""
    if isinstance(value, str):
        return redact(value, limit=120)
    if depth >= 4:
        return "…"
    if isinstance(value, Mapping):
        return {
            redact(str(k), limit=40): _shorten(v, depth + 1) for k, v in list(value.items())[:10]
        }
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_shorten(v, depth + 1) for v in list(value[:10])]
    return value if isinstance(value, (int, float, bool)) or value is None else repr(value)[:40]


def _raw_result(value: object) -> str:
    """The server's ``result`` as short, key-free JSON text, for the user to read."""
    try:
        text = json.dumps(_shorten(value), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(type(value))
    return redact(text, limit=RAW_RESULT_CHARS)


@dataclasses.dataclass(frozen=True)
class TaskSnapshot:
    """A task as the server last described it (a query answer or a callback payload)."""

    task_id: str
    status: TaskStatus
    raw_status: str
    """The status exactly as sent (for logs, when it was not recognised)."""
    results: tuple[ResultItem, ...] = ()
    consumed: Decimal | None = None
    """Credits charged, when the server says."""
    reason: str | None = None
    """``status_reason.message``: why it failed, redacted."""
    created_at: str | None = None
    raw_result: str | None = None
    """Only for a success that carries no image or text: the server's ``result`` as short
    (at most 500 characters), key-free JSON text, so the user can see what came back."""

    @property
    def images(self) -> tuple[str, ...]:
        """The image URLs and data URIs of the result, in order."""
        return tuple(item.image for item in self.results if item.image is not None)

    @property
    def texts(self) -> tuple[str, ...]:
        """Text entries of the result (when the model answered in words)."""
        return tuple(item.text for item in self.results if item.text is not None)

    @classmethod
    def from_data(cls, data: object, *, task_id: str | None = None) -> TaskSnapshot:
        """Parse the ``data`` of a query answer, or a callback payload (same fields).

        Args:
            data: the decoded JSON object.
            task_id: the id that was asked for, used when the answer leaves it out.

        Raises:
            ProtocolError: when ``data`` is not an object or names no task at all.
        """
        if not isinstance(data, Mapping):
            raise ProtocolError(f"the task answer is a {type(data).__name__}, not an object")
        raw_id = data.get("task_id", data.get("id"))
        if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip():
            found_id = str(raw_id).strip()
        elif task_id is not None:
            found_id = task_id
        else:
            raise ProtocolError("the task answer carries no task_id")
        raw = data.get("status")
        raw_status = raw if isinstance(raw, str) else json.dumps(raw, default=str)[:100]
        status = TaskStatus.from_api(raw)
        results = _parse_results(data.get("result"))
        return cls(
            task_id=found_id,
            status=status,
            raw_status=redact(raw_status, limit=100),
            results=results,
            raw_result=(
                _raw_result(data.get("result"))
                if status is TaskStatus.SUCCESS and not results
                else None
            ),
            consumed=parse_credits(data.get("consumed")),
            reason=_parse_reason(data.get("status_reason")),
            created_at=(
                str(data["created_at"])[:64]
                if isinstance(data.get("created_at"), (str, int, float))
                else None
            ),
        )
