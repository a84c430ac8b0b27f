"""Every error the package raises on purpose, in one tree.

```
NanoBananaError
├── ConfigurationError            settings are missing or wrong (also a ValueError)
│   └── MissingAPIKeyError        no API key anywhere: says where to put one
├── ValidationError               a request is refused before sending (also a ValueError)
├── APIError                      one HTTP exchange with the API or an image host went wrong
│   ├── APIConnectionError        cannot connect: the request never left this machine
│   │   ├── CertificateError      TLS verification failed: never retried, nothing sent
│   │   └── ConnectionsBusyError  every connection of the client's pool was in use: not started
│   ├── APITimeoutError           timed out after the request may have been sent
│   ├── ConnectionLostError       the connection broke after the request may have been sent
│   ├── ProtocolError             the answer could not be understood
│   └── APIStatusError            the server answered with an error status
│       ├── BadRequestError       400: carries the server's ``detail``
│       ├── AuthenticationError   401/403: the key was refused
│       ├── NotFoundError         404: unknown task, endpoint or expired result URL
│       ├── RateLimitError        429: carries ``retry_after`` (seconds) when known
│       └── ServerError           5xx
├── SubmitOutcomeUnknownError     a submit may have reached the server: maybe charged, never re-sent
├── BudgetExceededError           a request would pass the session's budget: nothing was sent
├── TaskLookupError               no single task has this id (also a KeyError)
│   ├── UnknownTaskError          no task has this id or id prefix: says where it looked
│   └── AmbiguousTaskError        several tasks start with this prefix: lists a few of them
└── TaskError                     a task ended badly; carries ``task_id``
    ├── TaskFailedError           the server says the task failed: carries ``reason``
    ├── TaskTimeoutError          the local deadline passed; the server may still finish
    ├── TaskUnavailableError      succeeded, but its images could not be fetched
    └── TaskAbandonedError        cancelled locally; the server may still charge
```

Errors from the API never contain the API key: messages and server text pass through
:func:`redact` before they are stored. :func:`redact` knows every key this process was given
(:class:`~nanobanana_jupyter.SecretKey` registers its value, whatever its shape), masks
anything shaped like a defapi key besides, and hides the credentials of URLs
(``https://user:pass@host`` becomes ``https://***@host``). Developer misuse (a closed
client, a wrong type) raises the built-in ``RuntimeError``/``TypeError`` instead, and
waiting with a timeout of your own raises the built-in ``TimeoutError``.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from decimal import Decimal
from urllib.parse import quote, quote_plus, urlsplit

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousTaskError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CertificateError",
    "ConfigurationError",
    "ConnectionLostError",
    "ConnectionsBusyError",
    "MissingAPIKeyError",
    "NanoBananaError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "SubmitOutcomeUnknownError",
    "TaskAbandonedError",
    "TaskError",
    "TaskFailedError",
    "TaskLookupError",
    "TaskTimeoutError",
    "TaskUnavailableError",
    "UnknownTaskError",
    "ValidationError",
    "redact",
    "redact_texts",
    "safe_url",
]

# Anything shaped like a defapi key, wherever it appears (a server may echo a key back):
# the second line of defence, after the keys themselves. Dots, slashes, plus signs and
# padding inside the key are part of it ("dk-ab.cd" is masked whole, not up to the dot).
_KEY_PATTERN = re.compile(r"dk-[A-Za-z0-9_\-]{4,}(?:[.+/~][A-Za-z0-9_\-]+)*=*")
# The user information of a URL (``scheme://user:pass@``): credentials, never shown.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@\[\]]+@")
# Server text is shown to people; a page of HTML is not a message.
MAX_SERVER_TEXT = 500
MIN_SECRET_CHARS = 8
"""Keys shorter than this are not masked by value: masking a 3-character key would mangle
every word that contains those letters. Real keys are far longer (``dk-`` and 32 hex); a
short key still never shows in a repr (:class:`SecretKey` shows a fingerprint)."""

_secrets_lock = threading.Lock()
_secrets: dict[str, str] = {}
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Mask ``value`` in everything :func:`redact` sees from now on, in this process.

    :class:`~nanobanana_jupyter.SecretKey` calls this for every key it holds, so a key of
    any shape (``sk-live-...``, a bare token, base64 with ``/`` and ``+``) is masked by value.
    Its JSON-, URL- and HTML-escaped forms are masked too (a server may quote the key back
    in any of them). Values shorter than :data:`MIN_SECRET_CHARS` are ignored.
    """
    global _secret_pattern
    if len(value) < MIN_SECRET_CHARS:
        return
    mask = "dk-***" if value.startswith("dk-") else "***"
    forms = {
        value,
        json.dumps(value)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        html.escape(value, quote=True),
    }
    with _secrets_lock:
        if all(form in _secrets for form in forms):
            return
        for form in forms:
            _secrets[form] = mask
        # Longest first, so a key that contains another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(form) for form in ordered))


def _mask_secret(match: re.Match[str]) -> str:
    return _secrets.get(match.group(0), "***")


def redact(text: str, limit: int | None = MAX_SERVER_TEXT) -> str:
    """Return ``text`` with secrets masked, cut to ``limit`` characters.

    Masked, in this order: every key this process was given (by value, see
    :func:`register_secret`), anything shaped like a defapi key (``dk-***``), and URL
    credentials (``https://***@host/...``). Masking happens before cutting, so a key is never
    cut into a piece that no longer matches. Masking twice changes nothing.
    """
    pattern = _secret_pattern
    cleaned = text if pattern is None else pattern.sub(_mask_secret, text)
    cleaned = _KEY_PATTERN.sub("dk-***", cleaned)
    if "@" in cleaned:
        cleaned = _URL_CREDENTIALS.sub(r"\1***@", cleaned)
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


def redact_texts(texts: list[str | None]) -> list[str | None]:
    """``redact(text, limit=None)`` of each text (``None`` stays), for a whole column.

    One search of the texts joined tells whether any of them holds something to mask (a
    text with no match is returned unchanged by :func:`redact`); only then is each one
    masked. The same list comes back when nothing needs masking.
    """
    joined = "\x00".join(text for text in texts if text)
    pattern = _secret_pattern
    if (
        (pattern is None or pattern.search(joined) is None)
        and _KEY_PATTERN.search(joined) is None
        and ("@" not in joined or _URL_CREDENTIALS.search(joined) is None)
    ):
        return texts
    return [redact(text, limit=None) if text else text for text in texts]


def safe_url(url: object) -> str:
    """A URL (text or ``httpx.URL``) fit for messages and logs: no query string (it may hold
    tokens), no userinfo."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record through :func:`redact`.

    Installed on the package's logger, so text a log call formats in (a server's words, an
    exception's message, a traceback) never carries a key into a log file or a notebook.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, limit=None)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, limit=None)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, limit=None)
        return True


logging.getLogger("nanobanana_jupyter").addFilter(RedactingFilter())


class NanoBananaError(Exception):
    """Base of every error raised on purpose by nanobanana_jupyter."""

    def __init__(self, message: str) -> None:
        self.message = redact(message, limit=None)
        super().__init__(self.message)


class ConfigurationError(NanoBananaError, ValueError):
    """A setting is missing or has a value that cannot work."""


class MissingAPIKeyError(ConfigurationError):
    """No API key was found in any of the places that are searched."""


class ValidationError(NanoBananaError, ValueError):
    """A request was refused before sending, so nothing was charged."""


class APIError(NanoBananaError):
    """One HTTP exchange failed. ``url`` never holds credentials."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class APIConnectionError(APIError):
    """The connection could not be made: the request provably never reached the server."""


class CertificateError(APIConnectionError):
    """The server's TLS certificate could not be verified, so nothing was sent.

    Never retried: the same certificate fails the same way. Fix the trust store (for a
    corporate proxy, ``SSL_CERT_FILE``) or the base URL; verification is never switched off.
    """


class ConnectionsBusyError(APIConnectionError):
    """No connection of this client's own pool came free in time (httpx's ``PoolTimeout``):
    the request waited behind this client's other requests and never started.

    It says nothing of the server or of what was asked for, so it never counts as one of a
    request's attempts: the request waits its turn and is sent (:mod:`.retry`).
    """


class APITimeoutError(APIError):
    """No answer in time, after the request may have reached the server."""


class ConnectionLostError(APIError):
    """The connection broke (reset, closed early) after the request may have reached the server."""


class ProtocolError(APIError):
    """The server answered something the client cannot understand (not JSON, wrong shape)."""


class APIStatusError(APIError):
    """The server answered with an error status.

    Attributes:
        status_code: the HTTP status.
        detail: the server's explanation (``detail`` or ``message`` of the body), redacted
            and cut short, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        detail: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status_code = status_code
        self.detail = None if detail is None else redact(detail)


class BadRequestError(APIStatusError):
    """400: the server refused the parameters; ``detail`` says which."""


class AuthenticationError(APIStatusError):
    """401 or 403: the API key is missing, invalid or expired."""


class NotFoundError(APIStatusError):
    """404: unknown task or endpoint, or an expired result URL."""


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` is the server's wait in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        detail: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, detail=detail, url=url)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the server failed."""


class SubmitOutcomeUnknownError(NanoBananaError):
    """A submit may have reached the server, but no task id came back.

    The task may exist and may have been charged. It is never re-sent automatically,
    since a second submit is paid twice. ``cause`` is the error that hid the outcome;
    ``task_id`` is the task the server's answer named, when it named one.
    """

    def __init__(
        self, message: str, *, cause: BaseException | None = None, task_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.task_id = task_id


class BudgetExceededError(NanoBananaError):
    """A request would take the session past its budget, so it was refused: nothing was
    written as sent, nothing was sent, nothing was charged.

    Attributes (credits, ``Decimal``):
        budget: the session's budget.
        spent: what this session's tasks cost so far, as far as the server has said.
        in_flight: the estimated cost of its tasks that may still be charged.
        estimate: the estimated cost of the refused request(s), or ``None`` when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: Decimal,
        spent: Decimal,
        in_flight: Decimal,
        estimate: Decimal | None,
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.spent = spent
        self.in_flight = in_flight
        self.estimate = estimate


class TaskLookupError(NanoBananaError, KeyError):
    """No single task has the id given (also a ``KeyError``, so ``except KeyError`` works).

    ``query`` is the id or id prefix that was looked up.
    """

    def __init__(self, message: str, *, query: str) -> None:
        super().__init__(message)
        self.query = query

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class UnknownTaskError(TaskLookupError):
    """No task's server id or local id is, or starts with, the id given."""


class AmbiguousTaskError(TaskLookupError):
    """Several tasks' ids start with the prefix given; ``candidates`` holds their local ids
    (the first few, newest first) and ``count`` how many matched in all."""

    def __init__(
        self, message: str, *, query: str, candidates: tuple[str, ...], count: int
    ) -> None:
        super().__init__(message, query=query)
        self.candidates = candidates
        self.count = count


class TaskError(NanoBananaError):
    """A task ended without images. ``task_id`` is the server's id (or the local id)."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskFailedError(TaskError):
    """The server reports the task failed; ``reason`` is its explanation, if any."""

    def __init__(
        self, message: str, *, task_id: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.reason = None if reason is None else redact(reason)


class TaskTimeoutError(TaskError):
    """The local deadline passed. The server may still finish; ``resume()`` picks it up."""


class TaskUnavailableError(TaskError):
    """The task succeeded but its images could not be fetched (expired URL, bad bytes)."""


class TaskAbandonedError(TaskError):
    """The task was cancelled locally. The API has no cancel: the server may still charge."""
