"""HTTP clients for the API: :class:`Client` (blocking) and :class:`AsyncClient`.

Everything that is not I/O lives in :class:`_BaseClient`, written once: building requests,
reading answers, mapping failures to the error tree, and deciding whether to retry. The two
clients only send, read and sleep.

Retry rules (design.md section 4): a submit costs credits and has no idempotency key on the
server, so it is retried only when it provably never reached the server (the connection
could not be made) or on a 429 with a short Retry-After. Any failure after the request may
have arrived (timeout, reset, 5xx, an answer that cannot be read) raises
:class:`SubmitOutcomeUnknownError` instead. Queries and downloads are GETs and are retried
with capped, jittered backoff that honours Retry-After.

The API key is sent only in requests to the API origin. Result images are fetched with a
second HTTP client that has no credentials at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import ipaddress
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from nanobanana_jupyter._version import __version__

from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CertificateError,
    ConnectionLostError,
    NanoBananaError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    SubmitOutcomeUnknownError,
    redact,
)
from .models import GenerationRequest, TaskSnapshot, parse_data_uri, sniff_image_type
from .retry import (
    DOWNLOAD_POLICY,
    QUERY_POLICY,
    SUBMIT_POLICY,
    RetryPolicy,
    parse_retry_after,
    retry_delay,
)
from .settings import SecretKey, Settings, is_loopback_host

__all__ = ["AsyncClient", "Client"]

logger = logging.getLogger("nanobanana_jupyter")

SUBMIT_PATH = "/api/image/gen"
QUERY_PATH = "/api/task/query"
# API answers are small JSON envelopes; a huge body is a fault, not data.
MAX_API_BODY = 1024 * 1024
MAX_REDIRECTS = 3
_T = TypeVar("_T")


class DownloadSink(Protocol):
    """Where :meth:`AsyncClient.download_to` writes: any binary file open for writing."""

    def write(self, data: bytes, /) -> object: ...

    def seek(self, offset: int, /) -> object: ...

    def truncate(self) -> object: ...


class _Kind(enum.Enum):
    SUBMIT = "submit"
    QUERY = "query"
    DOWNLOAD = "download"


def _status_error(status: int, detail: str | None, url: str, *, what: str) -> APIStatusError:
    """Map an HTTP error status to the error tree, with a message that says what to do."""
    tail = f": {detail}" if detail else ""
    if status == 400:
        return BadRequestError(
            f"the API refused the {what} (400){tail}", status_code=status, detail=detail, url=url
        )
    if status in (401, 403):
        return AuthenticationError(
            f"the API key was refused ({status}){tail}; check NANOBANANA_API_KEY "
            "(or use the sandbox to try offline)",
            status_code=status,
            detail=detail,
            url=url,
        )
    if status == 404:
        return NotFoundError(
            f"not found (404) for the {what}{tail}", status_code=status, detail=detail, url=url
        )
    if status >= 500:
        return ServerError(
            f"the server failed ({status}) on the {what}{tail}",
            status_code=status,
            detail=detail,
            url=url,
        )
    return APIStatusError(
        f"the API answered {status} to the {what}{tail}", status_code=status, detail=detail, url=url
    )


def _describe_body(body: bytes, content_type: str) -> str | None:
    """The server's explanation in an error body: ``detail``/``message`` of JSON, else text."""
    if not body:
        return None
    obj = _json_or_none(body)
    if isinstance(obj, dict):
        for key in ("detail", "message", "error"):
            value = obj.get(key)
            if isinstance(value, str) and value.strip():
                return redact(value.strip(), limit=300)
        return None
    text = body[:2000].decode("utf-8", "replace").strip()
    if "html" in content_type.lower() or text.startswith("<"):
        return "(the server answered with an HTML page)"
    return redact(" ".join(text.split()), limit=200) or None


def _json_or_none(body: bytes) -> Any:
    """The decoded JSON of an answer, or ``None`` when it is no JSON this code can read.

    JSON nested too deeply for the parser (a few kilobytes of ``[``) is unreadable too.
    """
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _usable_task_id(value: object) -> str | None:
    """A task id as an answer writes it (a string, or a number), or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        return None
    return value.strip()


def _named_task(body: bytes) -> str | None:
    """The task id an answer names (``data.task_id``, else ``task_id``), whatever its code."""
    obj = _json_or_none(body)
    if not isinstance(obj, dict):
        return None
    data = obj.get("data")
    named = _usable_task_id(data.get("task_id")) if isinstance(data, dict) else None
    return named if named is not None else _usable_task_id(obj.get("task_id"))


def _safe_url(url: httpx.URL | str) -> str:
    """A URL fit for messages and logs: no query string (it may hold tokens), no userinfo."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Body:
    """Collects a streamed response body, refusing more than ``limit`` bytes.

    The declared length is checked before reading anything, and the running total while
    reading, so a huge or endless body costs at most ``limit`` bytes of memory.
    """

    def __init__(
        self, response: httpx.Response, limit: int, url: str, total: float | None = None
    ) -> None:
        self._limit = limit
        self._url = url
        # A body that keeps dribbling in never trips the read timeout: bound the whole read.
        self._ends = None if total is None else time.monotonic() + total
        self._total = total
        self._chunks: list[bytes] = []
        self._size = 0
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large()

    def _too_large(self) -> ProtocolError:
        return ProtocolError(f"the answer is larger than {self._limit} bytes", url=self._url)

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large()
        self._chunks.append(chunk)
        if self._ends is not None and time.monotonic() > self._ends:
            raise APITimeoutError(
                f"the answer did not arrive whole within {self._total:g} s", url=self._url
            )

    def value(self) -> bytes:
        return b"".join(self._chunks)


_REDIRECTS = (301, 302, 303, 307, 308)


@contextlib.contextmanager
def _answer_guard(what: str, url: str) -> Iterator[None]:
    """Whatever fails while reading an API answer makes it an unreadable answer.

    Parsing is written to raise only :class:`ProtocolError`; this keeps that promise for
    anything it missed (a number no arithmetic can hold, nesting too deep), so only the
    documented errors ever leave the client, and a submit stays "outcome unknown".
    """
    try:
        yield
    except NanoBananaError:
        raise
    except Exception as exc:
        logger.debug("the %s answer could not be read", what, exc_info=True)
        raise ProtocolError(
            f"the {what} answer could not be read ({type(exc).__name__})", url=url
        ) from exc


class _BaseClient:
    """Everything the two clients share: requests, answers, errors and retry decisions."""

    def __init__(
        self,
        settings: Settings | None,
        api_key: str | SecretKey | None,
        base_url: str | None,
        *,
        submit_policy: RetryPolicy,
        query_policy: RetryPolicy,
        download_policy: RetryPolicy,
        rand: Callable[[], float] | None,
        on_retry: Callable[[APIError, float], None] | None = None,
    ) -> None:
        if settings is None:
            settings = Settings.resolve(api_key=api_key, base_url=base_url)
        elif api_key is not None or base_url is not None:
            settings = settings.replace(
                **({"api_key": SecretKey(api_key) if isinstance(api_key, str) else api_key}
                   if api_key is not None else {}),
                **({"base_url": base_url} if base_url is not None else {}),
            )  # fmt: skip
        self.settings = settings
        self._policies = {
            _Kind.SUBMIT: submit_policy,
            _Kind.QUERY: query_policy,
            _Kind.DOWNLOAD: download_policy,
        }
        self._rand = rand if rand is not None else random.random
        self._on_retry = on_retry
        self._closed = False

    def __repr__(self) -> str:
        key = "none" if self.settings.api_key is None else self.settings.api_key.fingerprint
        return f"<{type(self).__name__} base_url={self.settings.base_url!r} key={key}>"

    # -- building requests ---------------------------------------------------------

    def _timeout(self, kind: _Kind) -> httpx.Timeout:
        s = self.settings
        read = s.submit_timeout if kind is _Kind.SUBMIT else s.read_timeout
        return httpx.Timeout(
            connect=s.connect_timeout, read=read, write=read, pool=s.connect_timeout
        )

    def _api_headers(self) -> dict[str, str]:
        key = self.settings.require_key()
        return {
            "Authorization": f"Bearer {key.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"nanobanana-jupyter/{__version__} httpx/{httpx.__version__}",
        }

    def _build_submit(
        self, request: GenerationRequest, idempotency_key: str | None
    ) -> Callable[[], httpx.Request]:
        headers = self._api_headers()
        # One key per logical submit, the same on each of its retries. The service does not
        # (yet) honour it; it costs nothing and lets a server, a proxy or the sandbox's
        # ledger recognise a repeated submission.
        headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        body = json.dumps(request.to_payload(), ensure_ascii=False).encode()
        url = self.settings.base_url + SUBMIT_PATH
        headers["Content-Type"] = "application/json"
        timeout = self._timeout(_Kind.SUBMIT)

        def build() -> httpx.Request:
            return httpx.Request(
                "POST",
                url,
                headers=headers,
                content=body,
                extensions={"timeout": timeout.as_dict()},
            )

        return build

    def _build_query(self, task_id: str) -> Callable[[], httpx.Request]:
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError("task_id must be a non-empty string")
        headers = self._api_headers()
        url = self.settings.base_url + QUERY_PATH
        timeout = self._timeout(_Kind.QUERY)

        def build() -> httpx.Request:
            return httpx.Request(
                "GET",
                url,
                params={"task_id": task_id},
                headers=headers,
                extensions={"timeout": timeout.as_dict()},
            )

        return build

    def _build_download(self, url: str) -> httpx.Request:
        self._check_image_url(url)
        timeout = self._timeout(_Kind.DOWNLOAD)
        return httpx.Request(
            "GET",
            url,
            headers={"Accept": "image/*", "User-Agent": f"nanobanana-jupyter/{__version__}"},
            extensions={"timeout": timeout.as_dict()},
        )

    def _check_image_url(self, url: str) -> None:
        """Refuse result URLs that could reach into this machine or its network (SSRF).

        This is the early, name-level check (a clear message before anything is sent). The
        binding one is at the connection: :class:`_GuardedSyncBackend` and
        :class:`_GuardedAsyncBackend` resolve the host, check every address, and connect to
        the address they checked. Whether local hosts are allowed depends on
        ``settings.allow_local_urls`` alone (the sandbox sets it), never on the base URL: a
        local proxy in front of the API says nothing about where images may come from.
        """
        parts = urlsplit(url)
        allow_local = self.settings.allow_local_urls
        if parts.scheme not in ({"https", "http"} if allow_local else {"https"}):
            raise ProtocolError(
                f"refusing to fetch an image from {parts.scheme or '(no scheme)'}: URL; "
                "only https is allowed",
                url=_safe_url(url),
            )
        host = parts.hostname
        if not host:
            raise ProtocolError("refusing to fetch an image from a URL with no host")
        if _is_non_canonical_ipv4(host):
            # 2130706433, 127.1, 0x7f000001, 017700000001: resolvers read these as IPv4
            # addresses; no real image host is written so. Refused whatever the settings.
            raise ProtocolError(
                f"refusing to fetch an image from host {host!r}: not a canonical dotted-quad "
                "IPv4 address (decimal, octal, hex and shortened forms are refused)",
                url=_safe_url(url),
            )
        if allow_local:
            return
        if is_loopback_host(host) or host.lower().rstrip(".").endswith(".localhost"):
            raise ProtocolError(
                f"refusing to fetch an image from this machine{LOCAL_HINT}", url=_safe_url(url)
            )
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return  # a name: checked on every address it resolves to, at the connection
        if _local_reason(address) is not None:
            raise ProtocolError(
                f"refusing to fetch an image from a private, link-local or reserved address"
                f"{LOCAL_HINT}",
                url=_safe_url(url),
            )

    # -- reading answers -----------------------------------------------------------

    def _error_from_response(
        self, status: int, body: bytes, headers: httpx.Headers, url: str, *, what: str
    ) -> APIStatusError:
        detail = _describe_body(body, headers.get("content-type", ""))
        if status == 429:
            wait = parse_retry_after(headers.get("retry-after"))
            hint = f"; the server asks to wait {wait:g} s" if wait is not None else ""
            return RateLimitError(
                f"rate limited (429) on the {what}{hint}",
                detail=detail,
                url=url,
                retry_after=wait,
            )
        return _status_error(status, detail, url, what=what)

    def _read_envelope(
        self, status: int, body: bytes, headers: httpx.Headers, url: str, *, what: str
    ) -> Any:
        """Return the ``data`` of a successful envelope, or raise the matching error."""
        if status >= 400:
            raise self._error_from_response(status, body, headers, url, what=what)
        if status >= 300:
            raise ProtocolError(f"unexpected redirect ({status}) from the API", url=url)
        obj = _json_or_none(body)
        if obj is None and body.strip() != b"null":
            raise ProtocolError(
                f"the {what} answer is not JSON this client can read "
                f"({_describe_body(body, '') or 'empty'})",
                url=url,
            )
        if not isinstance(obj, dict):
            raise ProtocolError(f"the {what} answer is not a JSON object", url=url)
        code = obj.get("code", 0)
        if code not in (0, "0", None):
            message = obj.get("detail") or obj.get("message") or f"code {code}"
            detail = redact(str(message), limit=300)
            code_status = code if isinstance(code, int) and 400 <= code < 600 else 400
            raise _status_error(code_status, detail, url, what=what)
        if "data" not in obj:
            raise ProtocolError(f"the {what} answer has no data", url=url)
        return obj["data"]

    def _parse_submit(self, status: int, body: bytes, headers: httpx.Headers, url: str) -> str:
        try:
            with _answer_guard("submit", url):
                data = self._read_envelope(status, body, headers, url, what="submit")
                task_id = _usable_task_id(data.get("task_id") if isinstance(data, dict) else None)
        except APIError as error:
            # An answer that names a task says the task exists, whatever else it says (an
            # error code, a 5xx): it may have been charged, so it is never sent again.
            named = _named_task(body)
            if named is None:
                raise
            raise SubmitOutcomeUnknownError(
                f"the submit's answer was an error ({error.message}) yet it names task "
                f"{redact(named, 100)}; that task may exist and may have been charged, so it "
                "was not sent again",
                cause=error,
                task_id=named,
            ) from error
        if task_id is None:
            raise ProtocolError("the submit answer carries no usable task_id", url=url)
        return task_id

    def _parse_query(
        self, task_id: str, status: int, body: bytes, headers: httpx.Headers, url: str
    ) -> TaskSnapshot:
        with _answer_guard("query", url):
            data = self._read_envelope(status, body, headers, url, what="query")
            snapshot = TaskSnapshot.from_data(data, task_id=task_id)
        if snapshot.task_id != task_id.strip():
            # Never this task's result: a proxy's mix-up, a cache, or a server bug.
            raise ProtocolError(
                f"the query for task {task_id} answered about task "
                f"{redact(snapshot.task_id, 100)}; the answer was ignored",
                url=url,
            )
        return snapshot

    @staticmethod
    def _redirect_target(url: str, status: int, headers: httpx.Headers) -> str | None:
        """Where a download redirect points (checked again before following), or None."""
        location = headers.get("location")
        return urljoin(url, location) if status in _REDIRECTS and location else None

    def _parse_download(
        self, status: int, body: bytes, headers: httpx.Headers, url: str
    ) -> tuple[bytes, str]:
        if status in (403, 404, 410):
            raise NotFoundError(
                f"the result URL has expired or is gone ({status})", status_code=status, url=url
            )
        if status >= 400:
            raise self._error_from_response(status, body, headers, url, what="download")
        media_type = sniff_image_type(body)
        if media_type is None:
            declared = headers.get("content-type", "unknown type")
            raise ProtocolError(
                f"the result URL did not return a PNG, JPEG, WebP or GIF image ({declared})",
                url=url,
            )
        return body, media_type

    # -- failures and retries ------------------------------------------------------

    @staticmethod
    def _map_transport_error(exc: httpx.TransportError, url: str) -> APIError:
        """Translate httpx's transport errors, keeping "never sent" apart from "maybe sent"."""
        tls = _tls_failure(exc)
        if tls is not None:
            return CertificateError(
                f"the TLS certificate of {urlsplit(url).netloc} could not be verified ({tls}); "
                "nothing was sent. Check the base URL, or point SSL_CERT_FILE at your "
                "organisation's CA bundle",
                url=url,
            )
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return APIConnectionError(
                f"cannot connect to {urlsplit(url).netloc}: {type(exc).__name__}", url=url
            )
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(f"no answer in time from {urlsplit(url).netloc}", url=url)
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ProtocolError(f"unsupported URL: {url}", url=url)
        return ConnectionLostError(
            f"the connection to {urlsplit(url).netloc} broke ({type(exc).__name__})", url=url
        )

    def _retry_or_raise(self, kind: _Kind, attempt: int, error: APIError) -> float:
        """Return how long to wait before retrying, or raise the error to give up."""
        policy = self._policies[kind]
        if isinstance(error, CertificateError):
            raise error  # the same certificate fails the same way every time
        retry_after = error.retry_after if isinstance(error, RateLimitError) else None
        if kind is _Kind.SUBMIT:
            if isinstance(error, APIConnectionError):
                retryable = True
            elif isinstance(error, RateLimitError):
                retryable = retry_after is not None
            elif isinstance(
                error, (APITimeoutError, ConnectionLostError, ServerError, ProtocolError)
            ):
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
        delay = retry_delay(attempt, policy, retry_after, rand=self._rand) if retryable else None
        if delay is None:
            raise error
        logger.info(
            "%s failed (%s); retry %d in %.2f s", kind.value, error.message, attempt + 1, delay
        )
        if self._on_retry is not None:
            self._on_retry(error, delay)
        return delay

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")


def _tls_failure(exc: BaseException) -> str | None:
    """The reason TLS verification failed somewhere in ``exc``'s causes, or ``None``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or "certificate verify failed"
        if isinstance(cause, ssl.CertificateError):
            return str(cause) or "certificate mismatch"
        cause = cause.__cause__ or cause.__context__
    return None


def _total_time(request: httpx.Request, limit: int) -> float:
    """The most one exchange may take, start to end.

    Connect plus twice the read timeout for API calls (35 s by default); an image may be
    megabytes on a slow link, so a download gets eight read timeouts (125 s by default).
    """
    limits = request.extensions.get("timeout", {})
    reads = 8 if limit > MAX_API_BODY else 2
    return float(limits.get("connect") or 5.0) + reads * float(limits.get("read") or 30.0)


def _exchange_timeout(total: float, url: str) -> APITimeoutError:
    return APITimeoutError(
        f"no complete answer within {total:g} s from {urlsplit(url).netloc}", url=url
    )


def _limits() -> httpx.Limits:
    # Short keep-alive: an idle connection the server is about to close is the classic
    # way to lose a submit's answer (reliability.md S12).
    return httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=4.0)


_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_non_canonical_ipv4(host: str) -> bool:
    """True for a host that resolvers read as IPv4 but that is not written ``a.b.c.d``.

    As the URL standard does, a host whose last label is a number is an IPv4 address; it
    must then be canonical (four decimal parts, no leading zeros) or it is refused.
    """
    labels = host.rstrip(".").split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return False
    try:
        ipaddress.IPv4Address(host.rstrip("."))
    except ValueError:
        return True
    return host.endswith(".")


def _local_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an image may not be fetched from ``address`` (not a public address), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded:
            reason = _local_reason(inner)
            if reason is not None:
                return f"{reason} (inside {address})"
    if address.is_loopback:
        return f"{address} is this machine"
    if not address.is_global or address.is_multicast:
        return f"{address} is a private, link-local or reserved address"
    return None


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (a test seam)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


LOCAL_HINT = (
    " (your own server on this machine or network? Settings(allow_local_urls=True) or "
    "NANOBANANA_ALLOW_LOCAL_URLS=1 allows it; Session.sandbox() does so for the sandbox)"
)
"""Appended to a refusal of a local image address: the setting that allows it."""


def _checked_addresses(host: str, addresses: list[str]) -> list[str]:
    """``addresses`` when every one is public; else refuse. One bad answer refuses them all."""
    if not addresses:
        raise httpcore.ConnectError(f"{host} resolves to no address")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise ProtocolError(
                f"refusing to fetch an image from {host}: it resolves to {text!r}"
            ) from None
        reason = _local_reason(address)
        if reason is not None:
            raise ProtocolError(f"refusing to fetch an image from {host}: {reason}{LOCAL_HINT}")
    return addresses


class _GuardedSyncBackend(httpcore.NetworkBackend):
    """Connects image downloads only to public addresses, checked at the connection.

    The host is resolved once, every address is checked, and the socket is opened to an
    address that was checked, so a name that answers a public address to a first lookup
    and a loopback one to a second (DNS rebinding) gets no second lookup. TLS still
    verifies the certificate against the host name (httpcore passes the origin's name as
    ``server_hostname``), and the Host header is the URL's.
    """

    def __init__(
        self,
        inner: httpcore.NetworkBackend | None = None,
        *,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        resolve = self._resolve or _resolve
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        error: Exception | None = None
        for address in _checked_addresses(host, addresses):
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise ProtocolError("refusing to fetch an image over a Unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """The asyncio twin of :class:`_GuardedSyncBackend` (the lookup runs in a thread)."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend | None = None,
        *,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        resolve = self._resolve or _resolve
        loop = asyncio.get_running_loop()
        try:
            addresses = await asyncio.wait_for(
                loop.run_in_executor(None, resolve, host, port), timeout
            )
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(
                f"resolving {host} took longer than {timeout} s"
            ) from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        error: Exception | None = None
        for address in _checked_addresses(host, addresses):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise ProtocolError("refusing to fetch an image over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _env_proxies() -> bool:
    """True when the environment routes http(s) through a proxy (which resolves names)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def _install_backend(
    transport: Any, backend: httpcore.NetworkBackend | httpcore.AsyncNetworkBackend
) -> Any:
    """Put ``backend`` under an httpx transport's connection pool.

    httpx (up to 0.28) takes no network backend; its pool (httpcore) does, as the attribute
    set here. Should a future httpx change that shape, this fails at construction (closed)
    rather than downloading without the guard.
    """
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, (httpcore.ConnectionPool, httpcore.AsyncConnectionPool)) or not (
        hasattr(pool, "_network_backend")
    ):
        raise RuntimeError("this httpx version hides its connection pool; cannot guard downloads")
    pool._network_backend = backend
    return transport


def _image_transport(
    settings: Settings, transport: Any, limits: httpx.Limits, *, blocking: bool
) -> Any:
    """The transport for image hosts: the caller's, or one that refuses local addresses.

    None (httpx's default, with environment proxies) when local URLs are allowed, or when an
    environment proxy is set: a proxy resolves the names itself, so only the URL check
    applies there.
    """
    if transport is not None or settings.allow_local_urls or _env_proxies():
        return transport
    if blocking:
        return _install_backend(httpx.HTTPTransport(limits=limits), _GuardedSyncBackend())
    return _install_backend(httpx.AsyncHTTPTransport(limits=limits), _GuardedAsyncBackend())


class Client(_BaseClient):
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
        cdn = _image_transport(self.settings, transport, _limits(), blocking=True)
        self._cdn = httpx.Client(transport=cdn, limits=_limits(), follow_redirects=False)

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
        url = _safe_url(request.url)
        total = _total_time(request, limit)
        gave_up = threading.Event()
        outcome: list[tuple[int, bytes, httpx.Headers, httpx.URL] | BaseException] = []

        def exchange() -> None:
            try:
                outcome.append(self._exchange(http, request, limit, url, total, gave_up))
            except BaseException as exc:  # handed to the caller's thread as it is
                outcome.append(exc)

        # Headers or a body that dribble in never trip the read timeout, and a blocking read
        # cannot be cut short from outside: the exchange runs in a worker thread and the
        # caller waits for it at most ``total`` seconds, as AsyncClient does with wait_for.
        # Past this, the request may have been received (a submit is not re-sent).
        worker = threading.Thread(target=exchange, name="nanobanana-exchange", daemon=True)
        worker.start()
        worker.join(total)
        if not outcome:
            gave_up.set()  # the worker stops reading as soon as it can, and closes
            raise _exchange_timeout(total, url)
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
            body = _Body(response, limit, url, total)
            for chunk in response.iter_bytes():
                if gave_up.is_set():
                    raise _exchange_timeout(total, url)
                body.add(chunk)
        except httpx.TransportError as exc:
            raise self._map_transport_error(exc, url) from exc
        finally:
            response.close()
        return response.status_code, body.value(), response.headers, response.url

    def _with_retries(self, kind: _Kind, attempt_once: Callable[[], _T]) -> _T:
        attempt = 0
        while True:
            try:
                return attempt_once()
            except APIError as error:
                delay = self._retry_or_raise(kind, attempt, error)
            self._sleep(delay)
            attempt += 1

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
        request = _as_request(prompt, options, self.settings.model)
        build = self._build_submit(request, idempotency_key)

        def once() -> str:
            req = build()
            status, body, headers, _ = self._send(self._http, req, MAX_API_BODY)
            return self._parse_submit(status, body, headers, _safe_url(req.url))

        task_id = self._with_retries(_Kind.SUBMIT, once)
        logger.debug("submitted task %s", task_id)
        return task_id

    def query(self, task_id: str) -> TaskSnapshot:
        """Ask the server where a task is. Retries transient failures."""
        self._check_open()
        build = self._build_query(task_id)

        def once() -> TaskSnapshot:
            req = build()
            status, body, headers, _ = self._send(self._http, req, MAX_API_BODY)
            return self._parse_query(task_id, status, body, headers, _safe_url(req.url))

        return self._with_retries(_Kind.QUERY, once)

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
                status, body, headers, _ = self._send(self._cdn, req, limit)
                target = self._redirect_target(url, status, headers)
                if target is None:
                    return self._parse_download(status, body, headers, _safe_url(url))
                url = target
            raise ProtocolError("too many redirects for a result URL", url=_safe_url(url))

        return self._with_retries(_Kind.DOWNLOAD, once)


class AsyncClient(_BaseClient):
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
        cdn = _image_transport(self.settings, transport, _limits(), blocking=False)
        self._cdn = httpx.AsyncClient(transport=cdn, limits=_limits(), follow_redirects=False)

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
        url = _safe_url(request.url)
        total = _total_time(request, limit)

        async def exchange() -> tuple[int, bytes, httpx.Headers, httpx.URL]:
            try:
                response = await http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise self._map_transport_error(exc, url) from exc
            try:
                body = _Body(response, limit, url)
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
            return await asyncio.wait_for(exchange(), total)
        except asyncio.TimeoutError:
            raise _exchange_timeout(total, url) from None

    async def _with_retries(self, kind: _Kind, attempt_once: Callable[[], Awaitable[_T]]) -> _T:
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except APIError as error:
                delay = self._retry_or_raise(kind, attempt, error)
            await self._sleep(delay)
            attempt += 1

    async def submit(
        self,
        prompt: str | GenerationRequest,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> str:
        """Submit a generation and return its task id. See :meth:`Client.submit`."""
        self._check_open()
        request = _as_request(prompt, options, self.settings.model)
        build = self._build_submit(request, idempotency_key)

        async def once() -> str:
            req = build()
            status, body, headers, _ = await self._send(self._http, req, MAX_API_BODY)
            return self._parse_submit(status, body, headers, _safe_url(req.url))

        task_id = await self._with_retries(_Kind.SUBMIT, once)
        logger.debug("submitted task %s", task_id)
        return task_id

    async def query(self, task_id: str) -> TaskSnapshot:
        """Ask the server where a task is. See :meth:`Client.query`."""
        self._check_open()
        build = self._build_query(task_id)

        async def once() -> TaskSnapshot:
            req = build()
            status, body, headers, _ = await self._send(self._http, req, MAX_API_BODY)
            return self._parse_query(task_id, status, body, headers, _safe_url(req.url))

        return await self._with_retries(_Kind.QUERY, once)

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
            raise ProtocolError("too many redirects for a result URL", url=_safe_url(url))

        return await self._with_retries(_Kind.DOWNLOAD, once)

    async def _stream_download(
        self, request: httpx.Request, url: str, limit: int, sink: DownloadSink
    ) -> tuple[str, str | None]:
        """One download exchange: ``(media type, None)`` with the body in ``sink``, or
        ``("", target)`` for a redirect. Error answers are read (bounded) and raised."""
        safe = _safe_url(request.url)
        total = _total_time(request, limit)

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
                    body = _Body(response, MAX_API_BODY, safe)
                    async for chunk in response.aiter_bytes():
                        body.add(chunk)
                    self._parse_download(status, body.value(), headers, safe)
                    raise ProtocolError(f"unexpected answer ({status}) for an image", url=safe)
                head = _Head(response, limit, safe)
                async for chunk in response.aiter_bytes():
                    head.add(chunk)
                    sink.write(chunk)
                _, media_type = self._parse_download(status, head.value(), headers, safe)
                return media_type, None
            except httpx.TransportError as exc:
                raise self._map_transport_error(exc, safe) from exc
            finally:
                await response.aclose()

        # A body that dribbles in never trips the read timeout: bound the whole exchange.
        try:
            return await asyncio.wait_for(exchange(), total)
        except asyncio.TimeoutError:
            raise APITimeoutError(
                f"no complete image within {total:g} s from {urlsplit(safe).netloc}", url=safe
            ) from None


class _Head(_Body):
    """Counts a streamed body against ``limit`` but keeps only its first bytes (to sniff)."""

    _KEEP = 64

    def add(self, chunk: bytes) -> None:
        kept = sum(len(c) for c in self._chunks)
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large()
        if kept < self._KEEP:
            self._chunks.append(chunk[: self._KEEP - kept])


def _as_request(
    prompt: str | GenerationRequest, options: dict[str, Any], default_model: str
) -> GenerationRequest:
    """Build and validate the request (before anything is sent or written)."""
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


def _decode_data_uri(uri: str, limit: int) -> tuple[bytes, str]:
    try:
        return parse_data_uri(uri, max_bytes=limit)
    except ValueError as exc:
        raise ProtocolError(f"the result image is unusable: {exc}") from None
