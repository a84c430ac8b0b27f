"""The API's protocol without I/O: the requests to build and the answers to read.

:class:`BaseClient` holds everything :class:`~nanobanana_jupyter.Client` and
:class:`~nanobanana_jupyter.AsyncClient` share, written once: building requests, reading
answers, mapping failures to the error tree, and asking :mod:`.retry` whether to send again.
The two clients only send, read and sleep. The API key is sent only in requests to the API
origin; result images are fetched by a second HTTP client with no credentials at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from nanobanana_jupyter._version import __version__

from .credits import parse_balance
from .download_guard import check_image_url
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CertificateError,
    ConnectionLostError,
    ConnectionsBusyError,
    NanoBananaError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    SubmitOutcomeUnknownError,
    redact,
)
from .models import GenerationRequest, sniff_image_type
from .retry import (
    RequestKind,
    RetryPolicy,
    counts_as_attempt,
    parse_retry_after,
    retry_or_raise,
)
from .settings import SecretKey, Settings
from .snapshot import TaskSnapshot

__all__ = [
    "MAX_API_BODY",
    "MAX_REDIRECTS",
    "SANDBOX_HEADER",
    "BaseClient",
    "BodyLimit",
    "HeadLimit",
    "exchange_timeout",
    "total_time",
]

logger = logging.getLogger("nanobanana_jupyter")

SUBMIT_PATH = "/api/image/gen"
QUERY_PATH = "/api/task/query"
USER_PATH = "/api/user"
# API answers are small JSON envelopes; a huge body is a fault, not data.
MAX_API_BODY = 1024 * 1024
MAX_REDIRECTS = 3
#: The header a sandbox puts on its API answers (``nanobanana_jupyter.sandbox`` sets it; the
#: real service does not): a session reached it by URL then knows its credits are pretend.
SANDBOX_HEADER = "X-Nanobanana-Sandbox"
_REDIRECTS = (301, 302, 303, 307, 308)


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


class BodyLimit:
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


class HeadLimit(BodyLimit):
    """Counts a streamed body against ``limit`` but keeps only its first bytes (to sniff)."""

    _KEEP = 64

    def add(self, chunk: bytes) -> None:
        kept = sum(len(c) for c in self._chunks)
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large()
        if kept < self._KEEP:
            self._chunks.append(chunk[: self._KEEP - kept])


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


def total_time(request: httpx.Request, limit: int) -> float:
    """The most one exchange may take, start to end.

    Connect plus twice the read timeout for API calls (35 s by default); an image may be
    megabytes on a slow link, so a download gets eight read timeouts (125 s by default).
    """
    limits = request.extensions.get("timeout", {})
    reads = 8 if limit > MAX_API_BODY else 2
    return float(limits.get("connect") or 5.0) + reads * float(limits.get("read") or 30.0)


def exchange_timeout(total: float, url: str) -> APITimeoutError:
    return APITimeoutError(
        f"no complete answer within {total:g} s from {urlsplit(url).netloc}", url=url
    )


class BaseClient:
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
            RequestKind.SUBMIT: submit_policy,
            RequestKind.QUERY: query_policy,
            RequestKind.DOWNLOAD: download_policy,
        }
        self._rand = rand if rand is not None else random.random
        self._on_retry = on_retry
        self._closed = False
        self.sandbox_seen = settings.sandbox
        """True once the backend is known to be a sandbox (told so, or it said so)."""

    def __repr__(self) -> str:
        key = "none" if self.settings.api_key is None else self.settings.api_key.fingerprint
        return f"<{type(self).__name__} base_url={self.settings.base_url!r} key={key}>"

    # -- building requests ---------------------------------------------------------

    def _timeout(self, kind: RequestKind) -> httpx.Timeout:
        s = self.settings
        read = s.submit_timeout if kind is RequestKind.SUBMIT else s.read_timeout
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
        timeout = self._timeout(RequestKind.SUBMIT)

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
        timeout = self._timeout(RequestKind.QUERY)

        def build() -> httpx.Request:
            return httpx.Request(
                "GET",
                url,
                params={"task_id": task_id},
                headers=headers,
                extensions={"timeout": timeout.as_dict()},
            )

        return build

    def _build_balance(self) -> Callable[[], httpx.Request]:
        """``GET /api/user``, authorised as the other calls, timed and retried as a query."""
        headers = self._api_headers()
        url = self.settings.base_url + USER_PATH
        timeout = self._timeout(RequestKind.QUERY)

        def build() -> httpx.Request:
            return httpx.Request(
                "GET", url, headers=headers, extensions={"timeout": timeout.as_dict()}
            )

        return build

    def _build_download(self, url: str) -> httpx.Request:
        check_image_url(url, allow_local=self.settings.allow_local_urls)
        timeout = self._timeout(RequestKind.DOWNLOAD)
        return httpx.Request(
            "GET",
            url,
            headers={"Accept": "image/*", "User-Agent": f"nanobanana-jupyter/{__version__}"},
            extensions={"timeout": timeout.as_dict()},
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
        if not self.sandbox_seen and headers.get(SANDBOX_HEADER):
            self._found_sandbox()
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

    def _found_sandbox(self) -> None:
        self.sandbox_seen = True
        where = self.settings.data_dir or "the per-user data directory"
        # INFO, not a warning: this runs on the engine thread, and a line printed from there
        # lands in whichever cell happens to be running. The views say "sandbox" themselves.
        logger.info(
            "%s is a sandbox (it says so): its credits are pretend. Its tasks are kept in "
            "%s with any real ones; set NANOBANANA_SANDBOX=1 to keep them apart "
            "(in <data dir>/sandbox)",
            self.settings.base_url,
            where,
        )

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

    def _parse_balance(self, status: int, body: bytes, headers: httpx.Headers, url: str) -> Decimal:
        """The account's credits from ``{"data": {"credit": "100.50000000"}}``."""
        with _answer_guard("balance", url):
            data = self._read_envelope(status, body, headers, url, what="balance")
            value = data.get("credit") if isinstance(data, dict) else None
            balance = parse_balance(value)
        if balance is None:
            shown = "no credit field" if value is None else f"credit {redact(repr(value), 40)}"
            raise ProtocolError(
                f"the balance answer carries no usable credit ({shown}); expected "
                'data.credit as a decimal number such as "100.5"',
                url=url,
            )
        return balance

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
        if isinstance(exc, httpx.PoolTimeout):
            # Waiting behind this client's own requests: not started, and no fault of the
            # server or of the request (retried without counting, see retry.py).
            return ConnectionsBusyError(
                f"every connection to {urlsplit(url).netloc} was in use; the request waited "
                "its turn and did not start",
                url=url,
            )
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
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

    def _retry_or_raise(
        self, kind: RequestKind, attempt: int, error: APIError, busy_waits: int = 0
    ) -> float:
        """Return how long to wait before retrying, or raise the error to give up."""
        delay = retry_or_raise(
            kind, attempt, error, self._policies[kind], rand=self._rand, busy_waits=busy_waits
        )
        if not counts_as_attempt(error):
            logger.debug("%s waited for a free connection; again in %.2f s", kind.value, delay)
            return delay  # only its turn: no retry counted, nothing for on_retry to slow
        logger.info(
            "%s failed (%s); retry %d in %.2f s", kind.value, error.message, attempt + 1, delay
        )
        if self._on_retry is not None:
            self._on_retry(error, delay)
        return delay

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")
