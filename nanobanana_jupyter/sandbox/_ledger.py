"""The ledger: what the sandbox saw and charged, readable from any thread while it runs.

Tests use it to prove properties from the server's side ("exactly one POST reached the
handler", "no Authorization header ever reached the CDN", "nothing was charged twice"), and
benchmarks read completion times from it. The server writes through the underscore methods on
its loop thread; readers get copies taken under the lock, never live containers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Origin = Literal["api", "cdn"]


@dataclass
class RequestRecord:
    """One HTTP request as received.

    ``status`` is filled in when the answer is decided; it stays ``None`` while the request is
    in flight and for requests that were never answered (hang, reset). ``headers`` keys are
    lower-cased (HTTP header names are case-insensitive; this keeps checks simple).
    """

    time: float
    origin: Origin
    method: str
    path: str
    query: str
    headers: dict[str, str]
    authorized: bool
    status: int | None = None
    fault: str | None = None
    task_id: str | None = None


@dataclass(frozen=True)
class CallbackRecord:
    """One webhook delivery attempt: ``status`` is the receiver's HTTP status, or ``None`` with
    ``error`` set when no answer came (refused, timed out, skipped)."""

    task_id: str
    url: str
    time: float
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Data:
    requests: list[RequestRecord] = field(default_factory=list)
    submits_received: int = 0
    tasks: list[str] = field(default_factory=list)
    charges: dict[str, float] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)
    callbacks: list[CallbackRecord] = field(default_factory=list)
    idempotency_keys: dict[str, int] = field(default_factory=dict)
    charged_keys: dict[str, int] = field(default_factory=dict)


def _lower_headers(headers: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class Ledger:
    """Thread-safe record of requests, tasks, charges, queries, completions and callbacks.

    Read it with the properties (each returns a snapshot copy) and ``duplicate_submits()``;
    ``reset()`` forgets everything (tasks themselves stay alive in the sandbox).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._d = _Data()

    # -- readers -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received, API and CDN, in arrival order.

        The list is a copy; the records are the live ones, so the ``status`` of a request
        still in flight appears once it is answered.
        """
        with self._lock:
            return list(self._d.requests)

    @property
    def cdn_requests(self) -> list[RequestRecord]:
        """The requests that reached the CDN origin (check their headers for leaked keys)."""
        with self._lock:
            return [r for r in self._d.requests if r.origin == "cdn"]

    @property
    def submits_received(self) -> int:
        """POSTs to the generation endpoint that reached its handler, faulted or not."""
        with self._lock:
            return self._d.submits_received

    @property
    def tasks(self) -> list[str]:
        """Ids of the tasks created, in creation order."""
        with self._lock:
            return list(self._d.tasks)

    @property
    def charges(self) -> dict[str, float]:
        """Credits charged per task id."""
        with self._lock:
            return dict(self._d.charges)

    @property
    def total_charged(self) -> float:
        """Sum of all charges."""
        with self._lock:
            return sum(self._d.charges.values())

    @property
    def queries(self) -> dict[str, int]:
        """Query requests per ``task_id`` parameter (known or not, faulted or not)."""
        with self._lock:
            return dict(self._d.queries)

    @property
    def completed_at(self) -> dict[str, float]:
        """When each finished task became terminal, on the sandbox clock (real seconds)."""
        with self._lock:
            return dict(self._d.completed_at)

    @property
    def callbacks(self) -> list[CallbackRecord]:
        """Webhook deliveries, in the order they ended."""
        with self._lock:
            return list(self._d.callbacks)

    @property
    def idempotency_keys(self) -> dict[str, int]:
        """Submits received per ``Idempotency-Key`` request header (only those carrying one)."""
        with self._lock:
            return dict(self._d.idempotency_keys)

    def duplicate_submits(self) -> list[str]:
        """The ``Idempotency-Key`` values seen on more than one submit, sorted.

        An empty list proves that no logical submission reached the server twice.
        """
        with self._lock:
            return sorted(k for k, n in self._d.idempotency_keys.items() if n > 1)

    def double_charges(self) -> list[str]:
        """The ``Idempotency-Key`` values for which more than one task was created and charged.

        An empty list proves that no logical submission was paid twice (a submit refused with
        429 and sent again reaches the server twice, but is charged once).
        """
        with self._lock:
            return sorted(k for k, n in self._d.charged_keys.items() if n > 1)

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._d = _Data()

    # -- writers (server side) -----------------------------------------------------------

    def _record_request(
        self,
        *,
        time: float,
        origin: Origin,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str] | list[tuple[str, str]],
        authorized: bool,
    ) -> RequestRecord:
        record = RequestRecord(
            time=time,
            origin=origin,
            method=method,
            path=path,
            query=query,
            headers=_lower_headers(headers),
            authorized=authorized,
        )
        with self._lock:
            self._d.requests.append(record)
        return record

    def _note_submit(self, idempotency_key: str | None) -> None:
        with self._lock:
            self._d.submits_received += 1
            if idempotency_key is not None:
                keys = self._d.idempotency_keys
                keys[idempotency_key] = keys.get(idempotency_key, 0) + 1

    def _note_charge_key(self, idempotency_key: str | None) -> None:
        if idempotency_key is None:
            return
        with self._lock:
            keys = self._d.charged_keys
            keys[idempotency_key] = keys.get(idempotency_key, 0) + 1

    def _note_task(self, task_id: str, credits: float) -> None:
        with self._lock:
            self._d.tasks.append(task_id)
            self._d.charges[task_id] = credits

    def _note_query(self, task_id: str) -> None:
        with self._lock:
            self._d.queries[task_id] = self._d.queries.get(task_id, 0) + 1

    def _note_completed(self, task_id: str, at: float) -> None:
        with self._lock:
            self._d.completed_at[task_id] = at

    def _note_callback(self, record: CallbackRecord) -> None:
        with self._lock:
            self._d.callbacks.append(record)
