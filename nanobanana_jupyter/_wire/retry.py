"""Retry rules: which failures are sent again, and how long to wait first. Pure, no I/O.

The rules of design.md section 4: a submit costs credits and has no idempotency key on the
server, so it is retried only when it provably never reached the server (the connection
could not be made) or on a 429 with a short Retry-After; any failure after the request may
have arrived raises :class:`SubmitOutcomeUnknownError` instead. Queries and downloads are
GETs and are retried with capped, jittered backoff that honours Retry-After.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import time
from collections.abc import Callable

from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    CertificateError,
    ConnectionLostError,
    ConnectionsBusyError,
    ProtocolError,
    RateLimitError,
    ServerError,
    SubmitOutcomeUnknownError,
)

__all__ = [
    "BUSY_PAUSE",
    "MAX_BUSY_WAITS",
    "RequestKind",
    "RetryPolicy",
    "backoff_delay",
    "counts_as_attempt",
    "parse_retry_after",
    "retry_delay",
    "retry_or_raise",
]


class RequestKind(enum.Enum):
    """The three kinds of request, which differ in what may be sent again."""

    SUBMIT = "submit"
    QUERY = "query"
    DOWNLOAD = "download"


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one kind of request.

    The delay before retry ``n`` (0-based) is ``min(cap, base * 2**n)`` scaled by a random
    factor in ``[1 - jitter, 1]``, unless the server sent a Retry-After, which is honoured
    when it is at most ``max_retry_after`` seconds. A longer requested wait means: do not
    retry, tell the caller how long the server asked for.
    """

    max_retries: int = 4
    base: float = 0.5
    cap: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or not (0 <= self.jitter <= 1):
            raise ValueError("max_retries must be >= 0 and jitter within [0, 1]")
        if not (0 < self.base <= self.cap < math.inf) or not (0 <= self.max_retry_after < math.inf):
            raise ValueError("delays must be finite, with 0 < base <= cap")


# A submit is retried only when it provably never reached the server, or on a short 429.
SUBMIT_POLICY = RetryPolicy(max_retries=2, base=0.5, cap=8.0, max_retry_after=60.0)
# Queries and downloads are idempotent GETs.
QUERY_POLICY = RetryPolicy(max_retries=4, base=0.5, cap=8.0, max_retry_after=60.0)
DOWNLOAD_POLICY = RetryPolicy(max_retries=3, base=0.5, cap=8.0, max_retry_after=30.0)


# A request that waited behind this client's own requests for a connection (httpx's pool
# timeout, ConnectionsBusyError) never started: it is sent again after a short pause without
# counting as an attempt, however many others were queued. Only a pool that frees no
# connection at all for this many waits in a row (each as long as the connect timeout: ten
# minutes by default) gives up; that is a fault of this machine, said as such.
MAX_BUSY_WAITS = 120
BUSY_PAUSE = 0.05


def counts_as_attempt(error: APIError) -> bool:
    """False for a failure that says nothing of the request or the server: it only waited
    its turn (:class:`ConnectionsBusyError`)."""
    return not isinstance(error, ConnectionsBusyError)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Read a Retry-After header: seconds or an HTTP date. ``None`` when unusable.

    The result is always finite and >= 0: "inf", "nan", "1e309", negative numbers and
    garbage give ``None``; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    import email.utils  # only for HTTP-date hints; costs ~10 ms at import

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    try:
        delta = when.timestamp() - now()
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, delta) if math.isfinite(delta) else None


def backoff_delay(
    attempt: int, policy: RetryPolicy, *, rand: Callable[[], float] = random.random
) -> float:
    """Delay before retry number ``attempt`` (0-based): capped exponential with jitter."""
    # Bound the exponent first: 2**attempt must not overflow for silly attempt numbers.
    ceiling = min(policy.cap, policy.base * 2.0 ** min(max(attempt, 0), 62))
    return ceiling * (1.0 - policy.jitter * min(max(rand(), 0.0), 1.0))


def retry_delay(
    attempt: int,
    policy: RetryPolicy,
    retry_after: float | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """The delay before retry ``attempt``, or ``None`` when no retry should happen.

    ``None`` when the attempts are used up, or when the server asked for a longer wait than
    ``policy.max_retry_after``.
    """
    if attempt >= policy.max_retries:
        return None
    if retry_after is not None:
        if retry_after > policy.max_retry_after:
            return None
        return retry_after
    return backoff_delay(attempt, policy, rand=rand)


def retry_or_raise(
    kind: RequestKind,
    attempt: int,
    error: APIError,
    policy: RetryPolicy,
    *,
    rand: Callable[[], float] = random.random,
    busy_waits: int = 0,
) -> float:
    """How long to wait before sending a failed request again; or raise to give up.

    Raises ``error`` when it is not retried (or the attempts are used up), and
    :class:`SubmitOutcomeUnknownError` for a submit that may have reached the server. A
    request that only waited its turn (:func:`counts_as_attempt` is False) is always sent
    again, whatever ``attempt`` is, unless it has waited ``MAX_BUSY_WAITS`` times in a row
    (``busy_waits``, counted by the caller).
    """
    if not counts_as_attempt(error):
        if busy_waits >= MAX_BUSY_WAITS:
            raise error
        return BUSY_PAUSE * (1.0 - 0.5 * min(max(rand(), 0.0), 1.0))
    if isinstance(error, CertificateError):
        raise error  # the same certificate fails the same way every time
    retry_after = error.retry_after if isinstance(error, RateLimitError) else None
    if kind is RequestKind.SUBMIT:
        if isinstance(error, APIConnectionError):
            retryable = True
        elif isinstance(error, RateLimitError):
            retryable = retry_after is not None
        elif isinstance(error, (APITimeoutError, ConnectionLostError, ServerError, ProtocolError)):
            raise SubmitOutcomeUnknownError(
                f"the submit may have reached the server ({error.message}); the task may "
                "exist and may have been charged, so it was not sent again",
                cause=error,
            ) from error
        else:
            retryable = False
    elif isinstance(error, (APIConnectionError, APITimeoutError, ConnectionLostError)):
        retryable = True
    elif isinstance(error, APIStatusError):
        retryable = error.status_code in (408, 429) or error.status_code >= 500
    else:
        retryable = False
    delay = retry_delay(attempt, policy, retry_after, rand=rand) if retryable else None
    if delay is None:
        raise error
    return delay
