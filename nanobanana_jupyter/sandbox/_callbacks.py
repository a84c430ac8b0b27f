"""Webhook delivery: one best-effort POST of a finished task's state to its ``callback_url``.

Like the service, the sandbox does not sign payloads and does not retry. Unlike it, the sandbox
is an offline tool, so it only calls loopback addresses; anything else is recorded as skipped,
which keeps a test or a demo from ever reaching the network by accident.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ._ledger import CallbackRecord, Ledger

#: Whole-delivery time limit (seconds): a slow receiver must not hold sandbox resources.
DELIVERY_TIMEOUT = 2.0


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is ``localhost`` or a loopback IP literal."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CallbackSender:
    """Sends webhooks from the server loop and records each outcome in the ledger."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float]) -> None:
        self._ledger = ledger
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    def send(
        self, task_id: str, url: str, payload: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        """Start delivering the payload to ``url``.

        ``payload`` is a factory, called inside the delivery job: the body may need a drawn
        image, and a coroutine created outside a job that gets cancelled would never be awaited.
        """
        if self._closed:
            # A task settled by a request that was still running while the sandbox stopped.
            error = "not delivered: the sandbox was stopping"
            self._ledger._note_callback(CallbackRecord(task_id, url, self._clock(), None, error))
            return
        job = asyncio.ensure_future(self._deliver(task_id, url, payload))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def _deliver(
        self, task_id: str, url: str, payload: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        status: int | None = None
        error: str | None = None
        try:
            body = await payload()
            if not is_loopback_url(url):
                error = "not delivered: the sandbox only calls loopback addresses"
            else:
                if self._session is None:
                    self._session = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
                    )
                async with self._session.post(url, json=body) as response:
                    await response.read()
                    status = response.status
        except asyncio.CancelledError:
            error = "cancelled: the sandbox stopped"
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            record = CallbackRecord(task_id, url, self._clock(), status, error)
            self._ledger._note_callback(record)

    async def close(self) -> None:
        """Cancel deliveries in flight and close the HTTP session; later sends are skipped."""
        self._closed = True
        for job in list(self._pending):
            job.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
