"""The API's request and statuses: what is sent, and what a task's status means.

Data only, no I/O, standard library only. What comes back is read in :mod:`.snapshot`, and
what it costs in :mod:`.credits`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
import inspect
import json
import logging
import os
import re
import threading
import warnings
from typing import Any
from urllib.parse import urlsplit

from .errors import ValidationError, redact
from .settings import DEFAULT_MODEL

logger = logging.getLogger("nanobanana_jupyter")

__all__ = [
    "ASPECT_RATIOS",
    "IMAGE_SIZES",
    "KNOWN_MODELS",
    "MAX_REFERENCE_IMAGES",
    "GenerationRequest",
    "TaskStatus",
    "UnknownModelWarning",
    "as_request",
    "check_prompt",
    "parse_data_uri",
    "sniff_image_type",
]

KNOWN_MODELS: tuple[str, ...] = (
    DEFAULT_MODEL,
    "google/gemini-2.5-flash-image",
    "google/nano-banana",
    "google/nano-banana-pro",
    "google/nano-banana-2",
    "google/gemini-3.1-flash-image-preview",
)
ASPECT_RATIOS: tuple[str, ...] = (
    "auto", "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
)  # fmt: skip
IMAGE_SIZES: tuple[str, ...] = ("1K", "2K", "4K")
MAX_REFERENCE_IMAGES = 4
MAX_PROMPT_CHARS = 20_000
# Raster types only: SVG can carry script and is never accepted as an image.
RASTER_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp", "image/gif")
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*),", re.ASCII)


class TaskStatus(str, enum.Enum):
    """Where a task is: the API's five states plus the states only this client knows."""

    # The API's states.
    PENDING = "pending"
    SUBMITTED = "submitted"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILED = "failed"
    # Local states (design.md section 4).
    WAITING_TO_SEND = "waiting_to_send"
    """Stored, waiting for its turn under the session's submit caps: nothing has left this
    machine yet."""
    SUBMITTING = "submitting"
    """The submit is being sent; no task id yet."""
    SUBMIT_UNKNOWN = "submit_unknown"
    """The submit may have reached the server (maybe charged); never re-sent silently."""
    NOT_SENT = "not_sent"
    """The submit was refused or never left this machine: nothing charged."""
    TIMED_OUT = "timed_out"
    """The local deadline passed; the server may still finish; resumable."""
    ABANDONED = "abandoned"
    """Cancelled locally; the API has no cancel, so the server may still charge."""
    UNAVAILABLE = "unavailable"
    """Succeeded on the server, but the images could not be fetched, or the answer still
    carried no image after a few more looks; resumable."""
    UNRECOGNIZED = "unrecognized"
    """The server sent a status this client does not know: treated as not finished."""

    @property
    def is_terminal(self) -> bool:
        """True when nothing more will happen without the user asking (no more polling)."""
        return self in _TERMINAL

    @property
    def is_active(self) -> bool:
        """True while the server is (or may be) working and the client should poll."""
        return self in _ACTIVE

    @property
    def is_local(self) -> bool:
        """True before the server has answered the submit: no task id, nothing to cancel."""
        return self in (TaskStatus.WAITING_TO_SEND, TaskStatus.SUBMITTING)

    @property
    def is_resumable(self) -> bool:
        """True for ended states that ``resume()`` can pick up again by polling."""
        return self in {TaskStatus.TIMED_OUT, TaskStatus.ABANDONED, TaskStatus.UNAVAILABLE}

    @classmethod
    def from_api(cls, value: object) -> TaskStatus:
        """Map the API's status text to a status; anything unknown is ``UNRECOGNIZED``."""
        if isinstance(value, str):
            member = _API_STATUSES.get(value.strip().lower().replace("-", "_").replace(" ", "_"))
            if member is not None:
                return member
        return cls.UNRECOGNIZED

    def __str__(self) -> str:
        return self.value


_API_STATUSES = {
    s.value: s
    for s in (
        TaskStatus.PENDING,
        TaskStatus.SUBMITTED,
        TaskStatus.IN_PROGRESS,
        TaskStatus.SUCCESS,
        TaskStatus.FAILED,
    )
}
_TERMINAL = frozenset(
    {
        TaskStatus.SUCCESS,
        TaskStatus.FAILED,
        TaskStatus.SUBMIT_UNKNOWN,
        TaskStatus.NOT_SENT,
        TaskStatus.TIMED_OUT,
        TaskStatus.ABANDONED,
        TaskStatus.UNAVAILABLE,
    }
)
_ACTIVE = frozenset(
    {
        TaskStatus.PENDING,
        TaskStatus.SUBMITTED,
        TaskStatus.IN_PROGRESS,
        TaskStatus.UNRECOGNIZED,
    }
)


def sniff_image_type(data: bytes) -> str | None:
    """Return the raster media type the bytes really are, from their magic numbers."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def parse_data_uri(uri: str, *, max_bytes: int) -> tuple[bytes, str]:
    """Decode a ``data:image/...;base64,`` URI into ``(bytes, media type)``.

    The size is checked before decoding. The media type returned is the one the bytes
    really have; a URI whose bytes are no raster image (SVG, HTML, garbage) is refused.

    Raises:
        ValueError: with a message fit to show, for any URI that is not a usable image.
    """
    if not isinstance(uri, str):
        raise ValueError("a data URI must be a string")
    match = _DATA_URI.match(uri[:300])
    if match is None:
        raise ValueError("not a data URI of the form data:image/<type>;base64,<data>")
    declared = match.group("type").lower()
    if not declared.startswith("image/"):
        raise ValueError(f"data URI holds {declared!r}, not an image")
    if declared not in RASTER_TYPES:
        raise ValueError(f"data URI type {declared!r} is not an accepted raster image type")
    if ";base64" not in match.group("params").lower():
        raise ValueError("only base64 data URIs are accepted")
    payload = uri[match.end() :]
    # 4 base64 characters carry 3 bytes: refuse before decoding anything large.
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise ValueError(f"data URI image is larger than the {max_bytes} byte limit")
    payload = "".join(payload.split())
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data URI holds invalid base64") from None
    if len(raw) > max_bytes:
        raise ValueError(f"data URI image is larger than the {max_bytes} byte limit")
    actual = sniff_image_type(raw)
    if actual is None:
        raise ValueError("data URI bytes are not a PNG, JPEG, WebP or GIF image")
    return raw, actual


def normalize_image_size(value: str) -> str:
    """An image size in the documented form: ``" 2k "`` is ``"2K"`` (some clients send
    sizes in lower case). Whether it is one of :data:`IMAGE_SIZES` is checked by the caller."""
    return value.strip().upper()


# The attribute marking a request :meth:`GenerationRequest.validated` returned (not a field:
# ``dataclasses.replace`` makes an unmarked copy, which is checked again).
_VALIDATED = "_nanobanana_validated"


def with_callback_url(request: GenerationRequest, url: str) -> GenerationRequest:
    """``request`` sending its callback to ``url`` (a session's webhook receiver), still
    validated if it was: only the new URL is checked."""
    _check_sendable(url, "the callback URL")
    if not is_http_url(url):
        raise ValidationError(f"callback URL {url!r} is not an http(s) URL")
    changed = dataclasses.replace(request, callback_url=url)
    if vars(request).get(_VALIDATED):
        object.__setattr__(changed, _VALIDATED, True)
    return changed


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_prompt(prompt: object) -> None:
    """Refuse a prompt that is not text, is blank, cannot be sent as UTF-8 or is too long."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("the prompt is empty: describe the image to generate")
    _check_sendable(prompt, "the prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are sent"
        )


def _check_sendable(text: str, what: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (a lone surrogate, e.g. half an emoji)."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise ValidationError(
            f"{what} holds a lone surrogate (U+{ord(found.group()):04X}) at character "
            f"{found.start() + 1}, which cannot be sent as UTF-8 (usually half of an emoji "
            "broken by a copy or a text slice): remove or replace that character and try again"
        )


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One generation as sent to ``POST /api/image/gen``.

    Build it with keyword arguments and call :meth:`validated` (the clients do) before
    sending: every mistake is caught here, where nothing has been charged.
    """

    prompt: str
    """What to draw, or the edit to make to the reference images."""
    model: str = DEFAULT_MODEL
    """The model id; unknown ids are allowed (the list changes) with a warning."""
    images: tuple[str, ...] = ()
    """Up to 4 reference images: http(s) URLs or ``data:image/...;base64,`` URIs."""
    aspect_ratio: str | None = None
    """One of :data:`ASPECT_RATIOS`, or ``None`` for the model's default."""
    image_size: str | None = None
    """``1K``, ``2K`` or ``4K`` (Pro models; any case, sent upper-case), or ``None``."""
    callback_url: str | None = None
    """An http(s) URL the service POSTs the final state to."""

    def validated(self) -> GenerationRequest:
        """Return a normalised copy, or raise :class:`ValidationError` saying what to fix.

        A copy this returned is not checked again (nor warned about again): the clients
        call this on what they send, and a session's requests were checked on the caller's
        thread already.
        """
        if vars(self).get(_VALIDATED):
            return self
        check_prompt(self.prompt)
        if isinstance(self.model, str):
            _check_sendable(self.model, "the model")
        for i, image in enumerate(self.images, 1):
            if isinstance(image, str):
                _check_sendable(image, f"reference image {i}")
        if isinstance(self.callback_url, str):
            _check_sendable(self.callback_url, "the callback URL")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValidationError("the model is empty; e.g. model='google/gempix2'")
        model = self.model.strip()
        if model not in KNOWN_MODELS:
            tell_unknown_model(model)
        images = tuple(self.images)
        if len(images) > MAX_REFERENCE_IMAGES:
            raise ValidationError(
                f"{len(images)} reference images given; "
                f"the API takes at most {MAX_REFERENCE_IMAGES}"
            )
        for i, image in enumerate(images, 1):
            if not isinstance(image, str):
                raise ValidationError(
                    f"reference image {i} is a {type(image).__name__}; pass an http(s) URL or "
                    "a data:image/ URI (the magic and Session convert files and PIL images)"
                )
            if not (image.startswith("data:image/") or is_http_url(image)):
                raise ValidationError(
                    f"reference image {i} ({redact(image, 60)!r}) is neither an http(s) URL "
                    "nor a data:image/ URI"
                )
        aspect = self.aspect_ratio
        if aspect is not None and aspect not in ASPECT_RATIOS:
            raise ValidationError(
                f"aspect ratio {aspect!r} is not one of {', '.join(ASPECT_RATIOS)}"
            )
        size = self.image_size
        if size is not None:
            size = normalize_image_size(size) if isinstance(size, str) else size
            if size not in IMAGE_SIZES:
                raise ValidationError(
                    f"image size {self.image_size!r} is not one of {', '.join(IMAGE_SIZES)}"
                )
        if self.callback_url is not None and not is_http_url(self.callback_url):
            raise ValidationError(f"callback URL {self.callback_url!r} is not an http(s) URL")
        checked = dataclasses.replace(
            self, prompt=self.prompt, model=model, images=images, image_size=size
        )
        object.__setattr__(checked, _VALIDATED, True)  # frozen: the mark is no field
        return checked

    def with_prompt(self, prompt: str) -> GenerationRequest:
        """This request with another prompt, validated.

        On a validated request only the new prompt is checked (a batch of prompts with one
        set of options checks the options once: ``Session.map`` of 10,000 prompts).
        """
        if not vars(self).get(_VALIDATED):
            return dataclasses.replace(self, prompt=prompt).validated()
        check_prompt(prompt)
        changed = object.__new__(GenerationRequest)
        vars(changed).update(vars(self))  # the fields and the mark: frozen, no __init__
        object.__setattr__(changed, "prompt", prompt)
        return changed

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the submit, leaving out what is unset."""
        body: dict[str, Any] = {"model": self.model, "prompt": self.prompt}
        if self.images:
            body["images"] = list(self.images)
        if self.aspect_ratio is not None:
            body["aspect_ratio"] = self.aspect_ratio
        if self.image_size is not None:
            body["image_size"] = self.image_size
        if self.callback_url is not None:
            body["callback_url"] = self.callback_url
        return body

    def fingerprint(self, variant: int = 0) -> str:
        """A hash of what determines the result: model, prompt, reference images, options.

        Identical requests share a fingerprint, so a re-run cell can reuse a finished result
        instead of paying again. The callback URL does not change the image and is left out.
        ``variant`` tells apart deliberate repeats of one request (``-n 4``: four samples).
        """
        canonical: dict[str, object] = {
            "model": self.model,
            "prompt": self.prompt,
            "images": [hashlib.sha256(i.encode()).hexdigest() for i in self.images],
            "aspect_ratio": self.aspect_ratio,
            "image_size": self.image_size,
        }
        if variant:
            canonical["variant"] = variant
        text = json.dumps(canonical, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


class UnknownModelWarning(UserWarning):
    """The model id is not among those known to work; it is sent anyway.

    Told once per model id per process, as one line on the ``nanobanana_jupyter`` logger
    (on stderr when logging is not set up), not through ``warnings.showwarning``: Python's
    own display adds this package's file and source line, and shows it again after anything
    changes the warning filters. The warning filters still apply to this category:
    ``warnings.filterwarnings("ignore", category=UnknownModelWarning)`` silences it and
    ``"error"`` raises it before anything is sent.
    """


_told_models: set[str] = set()
_told_lock = threading.Lock()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tell_unknown_model(model: str) -> None:
    """Say once per process that ``model`` is unknown and is sent anyway.

    Raises:
        UnknownModelWarning: when the warning filters turn this category into an error.
    """
    text = (
        f"nanobanana: unknown model {redact(model, 80)!r}; sending it anyway "
        f"(known: {', '.join(KNOWN_MODELS)})"
    )
    action = _filter_action(text, UnknownModelWarning)
    if action == "ignore":
        return  # not counted: the next unfiltered use still tells it
    if action == "error":
        raise UnknownModelWarning(text)
    with _told_lock:
        if model in _told_models:
            return
        _told_models.add(model)
    logger.warning("%s", text)


def _forget_told_models() -> None:
    """Tell every unknown model again (for tests: the memory is per process)."""
    with _told_lock:
        _told_models.clear()


def _filter_action(text: str, category: type[Warning]) -> str:
    """The action the warning filters give ``category`` raised from the caller's code (the
    first frame outside this package), matched as ``warnings.warn_explicit`` matches."""
    module, lineno = "__main__", 0
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if not os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
                module, lineno = str(frame.f_globals.get("__name__", "__main__")), frame.f_lineno
                break
            frame = frame.f_back
    finally:
        del frame  # no reference cycle through this frame
    for action, message, kind, mod, line in list(getattr(warnings, "filters", ())):
        if (
            (message is None or message.match(text))
            and issubclass(category, kind)
            and (mod is None or mod.match(module))
            and (line == 0 or line == lineno)
        ):
            return str(action)
    return str(getattr(warnings, "defaultaction", "default"))


def as_request(
    prompt: str | GenerationRequest, options: dict[str, Any], default_model: str
) -> GenerationRequest:
    """The validated request for a prompt and keyword options (or a request as it is).

    What the clients' ``submit`` takes, checked before anything is sent or written.
    """
    if isinstance(prompt, GenerationRequest):
        if options:
            raise TypeError("pass either a GenerationRequest or keyword options, not both")
        return prompt.validated()
    unknown = set(options) - {"model", "images", "aspect_ratio", "image_size", "callback_url"}
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    if options.get("model") is None:
        options["model"] = default_model
    if isinstance(options.get("images"), str):
        options["images"] = (options["images"],)
    options["images"] = tuple(options.get("images") or ())
    return GenerationRequest(prompt=prompt, **options).validated()
