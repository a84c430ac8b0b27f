"""Scripted faults: what the next requests to an endpoint should suffer.

Tests and benchmarks queue faults per endpoint (``"submit"``, ``"query"``, ``"cdn"``); each
request that reaches that endpoint's handler takes the fault at the head of its queue (FIFO),
whatever the request is, and a fault with ``count=n`` applies to the next *n* requests.
``add_random`` adds occasional faults instead: a request that finds its queue empty suffers
each of them with its probability (a seeded generator, so a run can be replayed). The script
is filled from the test thread and drained on the server's loop thread, hence the lock.
"""

from __future__ import annotations

import enum
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

Endpoint = Literal["submit", "query", "cdn"]
ENDPOINTS: tuple[Endpoint, ...] = ("submit", "query", "cdn")


class Fault(enum.Enum):
    """A misbehaviour the sandbox can script, named after what the client sees.

    For the submit endpoint, names ending in ``_AFTER_ACCEPT`` / ``_AFTER_CHARGE`` and the
    malformed-answer faults (``MALFORMED_JSON``, ``NO_TASK_ID``, ``HTML_200``) first create and
    charge the task, because that is the case a client must never resubmit blindly.
    """

    #: 500 with an HTML body. On submit: before anything is created or charged.
    SERVER_ERROR_HTML = "server_error_html"
    #: Submit only: the task is created and charged, then the answer is a 500 HTML page.
    SERVER_ERROR_AFTER_CHARGE = "server_error_after_charge"
    #: 503 with ``Retry-After`` and a JSON envelope; nothing created or charged.
    SERVICE_UNAVAILABLE = "service_unavailable"
    #: 429 with ``Retry-After`` and a JSON envelope; nothing created or charged.
    RATE_LIMIT = "rate_limit"
    #: On submit the task is created and charged first; then no answer is ever sent. The
    #: request is held open until the client disconnects or the sandbox stops.
    HANG_AFTER_ACCEPT = "hang_after_accept"
    #: On submit the task is created and charged first; then the TCP connection is reset
    #: (SO_LINGER 0) without any response bytes.
    RESET_AFTER_ACCEPT = "reset_after_accept"
    #: 200 whose body is not JSON (submit: after creating and charging the task).
    MALFORMED_JSON = "malformed_json"
    #: 200 with a valid envelope whose ``data`` lacks ``task_id`` (submit: after charging).
    NO_TASK_ID = "no_task_id"
    #: 200 with an HTML page (as a captive portal or a misrouted proxy would send).
    HTML_200 = "html_200"
    #: 401 "Invalid API key" on that request, whatever key it carried (a revoked key).
    UNAUTHORIZED = "unauthorized"
    #: Query: 404 "task not found" for that one query. CDN: 404.
    NOT_FOUND = "not_found"
    #: Query only: answer ``in_progress`` with no result whatever the real state (a stale
    #: replica answering after the task finished).
    STALE_STATUS = "stale_status"
    #: Query only: answer with a status string no document lists (``"queued"``).
    UNKNOWN_STATUS = "unknown_status"
    #: CDN only: 410 Gone at once, as if the temporary URL had expired.
    EXPIRED = "expired"
    #: CDN only: ``Content-Length`` promises more bytes than are sent, then the connection
    #: closes.
    TRUNCATED = "truncated"
    #: CDN only: 200 with a ``text/html`` body instead of the image.
    NOT_AN_IMAGE = "not_an_image"


_ALL: frozenset[Endpoint] = frozenset(ENDPOINTS)
_API: frozenset[Endpoint] = frozenset(("submit", "query"))

#: Which endpoints each fault makes sense on; ``add`` refuses the rest so a typo in a test
#: fails loudly instead of silently scripting nothing.
APPLIES_TO: dict[Fault, frozenset[Endpoint]] = {
    Fault.SERVER_ERROR_HTML: _ALL,
    Fault.SERVER_ERROR_AFTER_CHARGE: frozenset(("submit",)),
    Fault.SERVICE_UNAVAILABLE: _ALL,
    Fault.RATE_LIMIT: _ALL,
    Fault.HANG_AFTER_ACCEPT: _ALL,
    Fault.RESET_AFTER_ACCEPT: _ALL,
    Fault.MALFORMED_JSON: _API,
    Fault.NO_TASK_ID: _API,
    Fault.HTML_200: _API,
    Fault.UNAUTHORIZED: _API,
    Fault.NOT_FOUND: frozenset(("query", "cdn")),
    Fault.STALE_STATUS: frozenset(("query",)),
    Fault.UNKNOWN_STATUS: frozenset(("query",)),
    Fault.EXPIRED: frozenset(("cdn",)),
    Fault.TRUNCATED: frozenset(("cdn",)),
    Fault.NOT_AN_IMAGE: frozenset(("cdn",)),
}


@dataclass(frozen=True)
class ScriptedFault:
    """One fault as applied to one request, with its parameters."""

    fault: Fault
    #: Value of the ``Retry-After`` header for 429/503; a string so that tests can serve odd
    #: values (``"abc"``, ``"-10"``, an HTTP date) as well as numbers.
    retry_after: str


@dataclass
class _Entry:
    fault: ScriptedFault
    remaining: int


class FaultScript:
    """FIFO queues of faults, one per endpoint; thread-safe.

    Example: ``sb.faults.add("submit", Fault.RATE_LIMIT, retry_after=2)`` makes the next submit
    answer 429 with ``Retry-After: 2``; the one after it is served normally.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[Endpoint, deque[_Entry]] = {e: deque() for e in ENDPOINTS}
        self._random: dict[Endpoint, list[tuple[ScriptedFault, float]]] = {e: [] for e in ENDPOINTS}
        self._rng = random.Random()

    def add(
        self,
        endpoint: Endpoint,
        fault: Fault,
        count: int = 1,
        *,
        retry_after: str | float = 1,
    ) -> None:
        """Queue ``fault`` for the next ``count`` requests to ``endpoint``.

        Raises ``ValueError`` for an unknown endpoint, a fault that does not apply to it, or a
        count below 1.
        """
        scripted = _scripted(endpoint, fault, retry_after)
        if count < 1:
            raise ValueError("count must be at least 1")
        entry = _Entry(scripted, count)
        with self._lock:
            self._queues[endpoint].append(entry)

    def add_random(
        self,
        endpoint: Endpoint,
        fault: Fault,
        probability: float,
        *,
        retry_after: str | float = 1,
        seed: int | None = None,
    ) -> None:
        """Make ``fault`` hit each request to ``endpoint`` with ``probability`` (0 < p < 1),
        for as long as the sandbox runs (or until :meth:`clear`); queued faults come first.

        ``seed`` reseeds the generator shared by every random fault of this script.
        """
        scripted = _scripted(endpoint, fault, retry_after)
        if not 0 < probability < 1:
            raise ValueError("probability must be between 0 and 1 (exclusive)")
        with self._lock:
            if seed is not None:
                self._rng.seed(seed)
            self._random[endpoint].append((scripted, probability))

    def take(self, endpoint: Endpoint) -> ScriptedFault | None:
        """Consume one application of the fault at the head of ``endpoint``'s queue, or roll
        the dice for its random faults when the queue is empty."""
        with self._lock:
            queue = self._queues[endpoint]
            if not queue:
                for scripted, probability in self._random[endpoint]:
                    if self._rng.random() < probability:
                        return scripted
                return None
            head = queue[0]
            head.remaining -= 1
            if head.remaining == 0:
                queue.popleft()
            return head.fault

    def pending(self, endpoint: Endpoint) -> list[Fault]:
        """The faults still queued for ``endpoint``, one item per remaining application."""
        with self._lock:
            return [e.fault.fault for e in self._queues[endpoint] for _ in range(e.remaining)]

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            for chances in self._random.values():
                chances.clear()


def _scripted(endpoint: Endpoint, fault: Fault, retry_after: str | float) -> ScriptedFault:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
    if not isinstance(fault, Fault):
        raise TypeError(f"expected a Fault, got {fault!r}")
    if endpoint not in APPLIES_TO[fault]:
        allowed = ", ".join(sorted(APPLIES_TO[fault]))
        raise ValueError(f"{fault.name} does not apply to {endpoint!r} (only: {allowed})")
    if isinstance(retry_after, float) and retry_after.is_integer():
        retry_after = int(retry_after)
    return ScriptedFault(fault, str(retry_after))
