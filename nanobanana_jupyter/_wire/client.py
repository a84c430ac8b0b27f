"""HTTP clients for the API: :class:`Client` (blocking) and :class:`AsyncClient`.

Both only send, read and sleep. Everything that is not I/O is written once, in
:class:`~nanobanana_jupyter._wire.protocol.BaseClient` (building requests, reading answers,
mapping failures); which failures are sent again is :mod:`.retry`'s rule (design.md section
4), and where images may be fetched from is :mod:`.download_guard`'s.

The API key is sent only in requests to the API origin. Result images are fetched with a
second HTTP client that has no credentials at all, guarded at the connection.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from .download_guard import image_transport
from .errors import APIError, APITimeoutError, ProtocolError, safe_url
from .models import GenerationRequest, as_request, parse_data_uri
from .protocol import (
    MAX_API_BODY,
    MAX_REDIRECTS,
    BaseClient,
    BodyLimit,
    HeadLimit,
    exchange_timeout,
    total_time,
)
from .retry import (
    DOWNLOAD_POLICY,
    QUERY_POLICY,
    SUBMIT_POLICY,
    RequestKind,
    RetryPolicy,
    counts_as_attempt,
)
from .settings import SecretKey, Settings
from .snapshot import TaskSnapshot
from .timeouts import time_limit

__all__ = ["IMAGE_CONNECTIONS", "AsyncClient", "Client", "DownloadSink"]

logger = logging.getLogger("nanobanana_jupyter")

_T = TypeVar("_T")


class DownloadSink(Protocol):
    """Where :meth:`AsyncClient.download_to` writes: any binary file open for writing."""

    def write(self, data: bytes, /) -> object: ...

    def seek(self, offset: int, /) -> object: ...

    def truncate(self) -> object: ...


# Connections of the image client's pool. Downloads take a turn of a gate this wide before
# they ask the pool for a connection, so a burst of them queues in the gate, with no
# deadline, and none waits on the pool (whose wait has one: httpx's pool timeout).
IMAGE_CONNECTIONS = 64


def _limits() -> httpx.Limits:
    # Short keep-alive: an idle connection the server is about to close is the classic
    # way to lose a submit's answer (reliability.md S12).
    return httpx.Limits(
        max_connections=IMAGE_CONNECTIONS, max_keepalive_connections=32, keepalive_expiry=4.0
    )


class Client(BaseClient):
    """A blocking client: submit a generation, query a task, download a result image.

    Args:
        api_key: the key; default from the environment (see :class:`Settings`).
        base_url: the API origin; default ``https://api.defapi.org``.
        settings: resolved settings to use instead of reading the environment.
        transport: an httpx transport for API and image requests (tests pass a mock).
        sleep: how to wait between retries (tests pass a fake clock's sleep).

    Each exchange runs in a short-lived worker thread while the calling thread waits for it
    at most the whole-exchange limit (connect plus two read timeouts for API calls, as in
    :class:`AsyncClient`), so a server that dribbles bytes cannot hold a call forever.
    """

    def __init__(
        self,
        api_key: str | SecretKey | None = None,
        *,
        base_url: str | None = None,
        settings: Settings | None = None,
        transport: httpx.BaseTransport | None = None,
        submit_policy: RetryPolicy = SUBMIT_POLICY,
        query_policy: RetryPolicy = QUERY_POLICY,
        download_policy: RetryPolicy = DOWNLOAD_POLICY,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] | None = None,
        on_retry: Callable[[APIError, float], None] | None = None,
    ) -> None:
        super().__init__(
            settings,
            api_key,
            base_url,
            submit_policy=submit_policy,
            query_policy=query_policy,
            download_policy=download_policy,
            rand=rand,
            on_retry=on_retry,
        )
        self._sleep = sleep
        self._http = httpx.Client(transport=transport, limits=_limits(), follow_redirects=False)
        # A separate client with no credentials, for image hosts, guarded at the connection.
        cdn = image_transport(self.settings, transport, _limits(), blocking=True)
        self._cdn = httpx.Client(transport=cdn, limits=_limits(), follow_redirects=False)
        # Downloads take their turn here, not in the pool (see IMAGE_CONNECTIONS).
        self._download_turns = threading.BoundedSemaphore(IMAGE_CONNECTIONS)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections. Safe to call twice."""
        self._closed = True
        self._http.close()
        self._cdn.close()

    def _send(
        self,
        http: httpx.Client,
        request: httpx.Request,
        limit: int,
    ) -> tuple[int, bytes, httpx.Headers, httpx.URL]:
        url = safe_url(request.url)
        total = total_time(request, limit)
        gave_up = threading.Event()
        outcome: list[tuple[int, bytes, httpx.Headers, httpx.URL] | BaseException] = []

        def exchange() -> None:
            try:
                outcome.append(self._exchange(http, request, limit, url, total, gave_up))
            except BaseException as exc:  # handed to the caller's thread as it is
                outcome.append(exc)

        # Headers or a body that dribble in never trip the read timeout, and a blocking read
        # cannot be cut short from outside: the exchange runs in a worker thread and the
        # caller waits for it at most ``total`` seconds, as AsyncClient does with asyncio.timeout.
        # Past this, the request may have been received (a submit is not re-sent).
        worker = threading.Thread(target=exchange, name="nanobanana-exchange", daemon=True)
        worker.start()
        worker.join(total)
        if not outcome:
            gave_up.set()  # the worker stops reading as soon as it can, and closes
            raise exchange_timeout(total, url)
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _exchange(
        self,
        http: httpx.Client,
        request: httpx.Request,
        limit: int,
        url: str,
        total: float,
        gave_up: threading.Event,
    ) -> tuple[int, bytes, httpx.Headers, httpx.URL]:
        try:
            response = http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._map_transport_error(exc, url) from exc
        try:
            body = BodyLimit(response, limit, url, total)
            for chunk in response.iter_bytes():
                if gave_up.is_set():
                    raise exchange_timeout(total, url)
                body.add(chunk)
        except httpx.TransportError as exc:
            raise self._map_transport_error(exc, url) from exc
        finally:
            response.close()
        return response.status_code, body.value(), response.headers, response.url

    def _with_retries(self, kind: RequestKind, attempt_once: Callable[[], _T]) -> _T:
        attempt = busy = 0
        while True:
            try:
                return attempt_once()
            except APIError as error:
                delay = self._retry_or_raise(kind, attempt, error, busy)
                counted = counts_as_attempt(error)
            self._sleep(delay)
            # Waiting for a free connection is not an attempt (retry.py).
            attempt, busy = (attempt + 1, 0) if counted else (attempt, busy + 1)

    def submit(
        self,
        prompt: str | GenerationRequest,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> str:
        """Submit a generation and return its task id. Costs credits.

        ``options`` are the fields of :class:`GenerationRequest` (``model``, ``images``,
        ``aspect_ratio``, ``image_size``, ``callback_url``).

        Raises:
            ValidationError: the request is wrong; nothing was sent.
            SubmitOutcomeUnknownError: the request may have been received and charged.
            APIStatusError: the server refused it (nothing charged), e.g. a bad key.
            APIConnectionError: the server could not be reached (nothing sent).
        """
        self._check_open()
        request = as_request(prompt, options, self.settings.model)
        build = self._build_submit(request, idempotency_key)

        def once() -> str:
            req = build()
            status, body, headers, _ = self._send(self._http, req, MAX_API_BODY)
            return self._parse_submit(status, body, headers, safe_url(req.url))

        task_id = self._with_retries(RequestKind.SUBMIT, once)
        logger.debug("submitted task %s", task_id)
        return task_id

    def query(self, task_id: str) -> TaskSnapshot:
        """Ask the server where a task is. Retries transient failures."""
        self._check_open()
        build = self._build_query(task_id)

        def once() -> TaskSnapshot:
            req = build()
            status, body, headers, _ = self._send(self._http, req, MAX_API_BODY)
            return self._parse_query(task_id, status, body, headers, safe_url(req.url))

        return self._with_retries(RequestKind.QUERY, once)

    def balance(self) -> Decimal:
        """The account's remaining credits (``GET /api/user``), retried as a query.

        Raises:
            ProtocolError: the answer carries no usable ``credit``.
            AuthenticationError: the key was refused.
        """
        self._check_open()
        build = self._build_balance()

        def once() -> Decimal:
            req = build()
            status, body, headers, _ = self._send(self._http, req, MAX_API_BODY)
            return self._parse_balance(status, body, headers, safe_url(req.url))

        return self._with_retries(RequestKind.QUERY, once)

    def download(self, url_or_data_uri: str) -> tuple[bytes, str]:
        """Fetch a result image (or decode a data URI): ``(bytes, media type)``.

        Never sends the API key. Follows at most 3 redirects, each checked again.
        """
        self._check_open()
        limit = self.settings.max_download_bytes
        if url_or_data_uri.startswith("data:"):
            return _decode_data_uri(url_or_data_uri, limit)

        def once() -> tuple[bytes, str]:
            url = url_or_data_uri
            for _ in range(MAX_REDIRECTS + 1):
                req = self._build_download(url)
                with self._download_turns:
                    status, body, headers, _ = self._send(self._cdn, req, limit)
                target = self._redirect_target(url, status, headers)
                if target is None:
                    return self._parse_download(status, body, headers, safe_url(url))
                url = target
            raise ProtocolError("too many redirects for a result URL", url=safe_url(url))

        return self._with_retries(RequestKind.DOWNLOAD, once)


class AsyncClient(BaseClient):
    """The asyncio twin of :class:`Client`: same methods, awaited.

    It belongs to the event loop it is first used on; objects bound to a loop never
    cross loops.
    """

    def __init__(
        self,
        api_key: str | SecretKey | None = None,
        *,
        base_url: str | None = None,
        settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        submit_policy: RetryPolicy = SUBMIT_POLICY,
        query_policy: RetryPolicy = QUERY_POLICY,
        download_policy: RetryPolicy = DOWNLOAD_POLICY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] | None = None,
        on_retry: Callable[[APIError, float], None] | None = None,
        max_connections: int = 64,
    ) -> None:
        super().__init__(
            settings,
            api_key,
            base_url,
            submit_policy=submit_policy,
            query_policy=query_policy,
            download_policy=download_policy,
            rand=rand,
            on_retry=on_retry,
        )
        self._sleep = sleep
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=4.0,
        )
        self._http = httpx.AsyncClient(transport=transport, limits=limits, follow_redirects=False)
        cdn = image_transport(self.settings, transport, _limits(), blocking=False)
        self._cdn = httpx.AsyncClient(transport=cdn, limits=_limits(), follow_redirects=False)
        # Downloads take their turn here, not in the pool (see IMAGE_CONNECTIONS); made on
        # first use, on the loop this client belongs to.
        self._download_turns: asyncio.Semaphore | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections. Safe to call twice."""
        self._closed = True
        await self._http.aclose()
        await self._cdn.aclose()

    async def _send(
        self,
        http: httpx.AsyncClient,
        request: httpx.Request,
        limit: int,
    ) -> tuple[int, bytes, httpx.Headers, httpx.URL]:
        url = safe_url(request.url)
        total = total_time(request, limit)

        async def exchange() -> tuple[int, bytes, httpx.Headers, httpx.URL]:
            try:
                response = await http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise self._map_transport_error(exc, url) from exc
            try:
                body = BodyLimit(response, limit, url)
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
            except httpx.TransportError as exc:
                raise self._map_transport_error(exc, url) from exc
            finally:
                await response.aclose()
            return response.status_code, body.value(), response.headers, response.url

        # Headers or a body that dribble in never trip the read timeout: bound the whole
        # exchange. Past this, the request may have been received (a submit is not re-sent).
        try:
            async with time_limit(total):
                return await exchange()
        except asyncio.TimeoutError:
            raise exchange_timeout(total, url) from None

    async def _with_retries(
        self, kind: RequestKind, attempt_once: Callable[[], Awaitable[_T]]
    ) -> _T:
        attempt = busy = 0
        while True:
            try:
                return await attempt_once()
            except APIError as error:
                delay = self._retry_or_raise(kind, attempt, error, busy)
                counted = counts_as_attempt(error)
            await self._sleep(delay)
            # Waiting for a free connection is not an attempt (retry.py).
            attempt, busy = (attempt + 1, 0) if counted else (attempt, busy + 1)

    async def submit(
        self,
        prompt: str | GenerationRequest,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> str:
        """Submit a generation and return its task id. See :meth:`Client.submit`."""
        self._check_open()
        request = as_request(prompt, options, self.settings.model)
        build = self._build_submit(request, idempotency_key)

        async def once() -> str:
            req = build()
            status, body, headers, _ = await self._send(self._http, req, MAX_API_BODY)
            return self._parse_submit(status, body, headers, safe_url(req.url))

        task_id = await self._with_retries(RequestKind.SUBMIT, once)
        logger.debug("submitted task %s", task_id)
        return task_id

    async def query(self, task_id: str) -> TaskSnapshot:
        """Ask the server where a task is. See :meth:`Client.query`."""
        self._check_open()
        build = self._build_query(task_id)

        async def once() -> TaskSnapshot:
            req = build()
            status, body, headers, _ = await self._send(self._http, req, MAX_API_BODY)
            return self._parse_query(task_id, status, body, headers, safe_url(req.url))

        return await self._with_retries(RequestKind.QUERY, once)

    async def balance(self) -> Decimal:
        """The account's remaining credits. See :meth:`Client.balance`."""
        self._check_open()
        build = self._build_balance()

        async def once() -> Decimal:
            req = build()
            status, body, headers, _ = await self._send(self._http, req, MAX_API_BODY)
            return self._parse_balance(status, body, headers, safe_url(req.url))

        return await self._with_retries(RequestKind.QUERY, once)

    async def download(self, url_or_data_uri: str) -> tuple[bytes, str]:
        """Fetch a result image or decode a data URI. See :meth:`Client.download`."""
        buffer = io.BytesIO()
        media_type = await self.download_to(url_or_data_uri, buffer)
        return buffer.getvalue(), media_type

    async def download_to(self, url_or_data_uri: str, sink: DownloadSink) -> str:
        """Stream a result image (or a decoded data URI) into ``sink``; return its media type.

        The bytes are written as they arrive, so a large image never sits in memory whole;
        more than ``settings.max_download_bytes`` is refused while streaming. ``sink`` is a
        binary file open for writing; before a retry it is rewound with ``seek(0)`` and
        emptied with ``truncate()``. Never sends the API key; follows at most 3 redirects,
        each checked again.
        """
        self._check_open()
        limit = self.settings.max_download_bytes
        if url_or_data_uri.startswith("data:"):
            data, media_type = _decode_data_uri(url_or_data_uri, limit)
            sink.write(data)
            return media_type

        async def once() -> str:
            sink.seek(0)
            sink.truncate()
            url = url_or_data_uri
            for _ in range(MAX_REDIRECTS + 1):
                req = self._build_download(url)
                media_type, target = await self._stream_download(req, url, limit, sink)
                if target is None:
                    return media_type
                url = target
            raise ProtocolError("too many redirects for a result URL", url=safe_url(url))

        return await self._with_retries(RequestKind.DOWNLOAD, once)

    async def _stream_download(
        self, request: httpx.Request, url: str, limit: int, sink: DownloadSink
    ) -> tuple[str, str | None]:
        """One download exchange: ``(media type, None)`` with the body in ``sink``, or
        ``("", target)`` for a redirect. Error answers are read (bounded) and raised."""
        safe = safe_url(request.url)
        total = total_time(request, limit)

        async def exchange() -> tuple[str, str | None]:
            try:
                response = await self._cdn.send(request, stream=True)
            except httpx.TransportError as exc:
                raise self._map_transport_error(exc, safe) from exc
            try:
                status, headers = response.status_code, response.headers
                target = self._redirect_target(url, status, headers)
                if target is not None:
                    return "", target
                if not 200 <= status < 300:
                    body = BodyLimit(response, MAX_API_BODY, safe)
                    async for chunk in response.aiter_bytes():
                        body.add(chunk)
                    self._parse_download(status, body.value(), headers, safe)
                    raise ProtocolError(f"unexpected answer ({status}) for an image", url=safe)
                head = HeadLimit(response, limit, safe)
                async for chunk in response.aiter_bytes():
                    head.add(chunk)
                    sink.write(chunk)
                _, media_type = self._parse_download(status, head.value(), headers, safe)
                return media_type, None
            except httpx.TransportError as exc:
                raise self._map_transport_error(exc, safe) from exc
            finally:
                await response.aclose()

        if self._download_turns is None:
            self._download_turns = asyncio.Semaphore(IMAGE_CONNECTIONS)
        # Its turn first, as long as the others ahead take: the image's own time starts
        # once a connection is surely free.
        async with self._download_turns:
            # A body that dribbles in never trips the read timeout: bound the whole exchange.
            try:
                async with time_limit(total):
                    return await exchange()
            except asyncio.TimeoutError:
                raise APITimeoutError(
                    f"no complete image within {total:g} s from {urlsplit(safe).netloc}",
                    url=safe,
                ) from None


def _decode_data_uri(uri: str, limit: int) -> tuple[bytes, str]:
    try:
        return parse_data_uri(uri, max_bytes=limit)
    except ValueError as exc:
        raise ProtocolError(f"the result image is unusable: {exc}") from None
