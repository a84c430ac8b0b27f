"""Every error the package raises on purpose, in one tree.

```
NanoBananaError
├── ConfigurationError            settings are missing or wrong (also a ValueError)
│   └── MissingAPIKeyError        no API key anywhere: says where to put one
├── ValidationError               a request is refused before sending (also a ValueError)
├── APIError                      one HTTP exchange with the API or an image host went wrong
│   ├── APIConnectionError        cannot connect: the request never left this machine
│   │   └── CertificateError      TLS verification failed: never retried, nothing sent
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
└── TaskError                     a task ended badly; carries ``task_id``
    ├── TaskFailedError           the server says the task failed: carries ``reason``
    ├── TaskTimeoutError          the local deadline passed; the server may still finish
    ├── TaskUnavailableError      succeeded, but its images could not be fetched
    └── TaskAbandonedError        cancelled locally; the server may still charge
```

Errors from the API never contain the API key: messages and server text pass through
:func:`redact` before they are stored. Developer misuse (a closed client, a wrong type)
raises the built-in ``RuntimeError``/``TypeError`` instead, and waiting with a timeout of
your own raises the built-in ``TimeoutError``.
"""

from __future__ import annotations

import re

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CertificateError",
    "ConfigurationError",
    "ConnectionLostError",
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
    "TaskTimeoutError",
    "TaskUnavailableError",
    "ValidationError",
    "redact",
]

# Anything shaped like a defapi key, wherever it appears (a server may echo a key back).
_KEY_PATTERN = re.compile(r"dk-[A-Za-z0-9_\-]{4,}")
# Server text is shown to people; a page of HTML is not a message.
MAX_SERVER_TEXT = 500


def redact(text: str, limit: int | None = MAX_SERVER_TEXT) -> str:
    """Return ``text`` with anything shaped like an API key masked, cut to ``limit`` chars."""
    cleaned = _KEY_PATTERN.sub("dk-***", text)
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


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
