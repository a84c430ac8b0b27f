"""HTTP routes, envelopes and fault application for the API and the CDN origins.

Two aiohttp applications share one ``Service``: the API (submit, query, user) and the "CDN" that
serves result images on a second port, so result URLs are a different origin, as on the real
service, and a client that leaks its Authorization header to image hosts is caught.

Each app has one catch-all route and dispatches by path itself: every request, including
unknown paths and wrong methods, is then recorded in the ledger in one place, and error
bodies keep the service's JSON envelope shape.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ._callbacks import CallbackSender
from ._faults import Endpoint, Fault, FaultScript, ScriptedFault
from ._images import LocalResolver, Renderer
from ._ledger import Ledger, Origin, RequestRecord
from ._state import Task, TaskStore
from ._validate import Invalid, parse_submit

SUBMIT_PATH = "/api/image/gen"
QUERY_PATH = "/api/task/query"
USER_PATH = "/api/user"
CDN_PREFIX = "/cdn/"
#: On every API answer: a client pointed here by URL can tell it is not the real service
#: (its credits are pretend). The client reads the same name (its wire protocol module).
SANDBOX_HEADER = "X-Nanobanana-Sandbox"
#: Reference images arrive as data URIs inside the JSON body: allow a few large ones.
MAX_BODY_BYTES = 64 * 1024 * 1024

_HTML_ERROR = (
    "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n"
    "<body><h1>Internal Server Error</h1><p>The server encountered an internal error.</p>"
    "</body></html>\n"
)
_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Welcome</title></head>\n"
    "<body><h1>It works!</h1><p>This is not the API you are looking for.</p></body></html>\n"
)
_WEBHOOK_FIELDS = ("result", "status", "task_id", "consumed", "status_reason")
# A JSON document cut short: what a proxy that truncates bodies produces.
_BROKEN_JSON = '{"code": 0, "message": "ok", "data": {"task_'

# ``None`` from a handler means no answer was sent (hang, reset): nothing to record.
_Handler = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse | None]]


def envelope(status: int, code: int, message: str, **extra: Any) -> web.Response:
    """A JSON response in the service's envelope shape."""
    return web.json_response({"code": code, "message": message, **extra}, status=status)


def ok(data: dict[str, Any]) -> web.Response:
    """A success envelope."""
    return web.json_response({"code": 0, "message": "ok", "data": data})


def bad_request(detail: str) -> web.Response:
    """The documented 400 envelope."""
    return envelope(400, 1, "failed", detail=detail)


def html(status: int, body: str) -> web.Response:
    """An HTML response (error pages from proxies and crashed servers look like this)."""
    return web.Response(status=status, text=body, content_type="text/html")


class KeyCheck:
    """Decides whether an Authorization header carries a key the sandbox accepts."""

    def __init__(self, api_key: str, accept_any_key: bool) -> None:
        self.api_key = api_key
        self.accept_any_key = accept_any_key

    def accepts(self, header: str | None) -> bool:
        """True for ``Bearer <the key>``, or any ``Bearer dk-...`` in accept-any mode."""
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if self.accept_any_key:
            return token.startswith("dk-")
        return hmac.compare_digest(token.encode(), self.api_key.encode())


async def _mark_as_sandbox(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SANDBOX_HEADER] = "1"


class Service:
    """The sandbox's request handling, shared by the API and CDN applications."""

    def __init__(
        self,
        *,
        store: TaskStore,
        ledger: Ledger,
        faults: FaultScript,
        renderer_factory: Callable[[LocalResolver], Renderer],
        callbacks: CallbackSender,
        keys: KeyCheck,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.faults = faults
        self.callbacks = callbacks
        self.keys = keys
        self.renderer = renderer_factory(self.resolve_local)
        #: Base URL of the CDN origin; set once its socket is bound.
        self.cdn_base = ""
        self._cdn_netloc = ""
        self._stopping = asyncio.Event()
        store.on_terminal = self._on_terminal

    def set_cdn_base(self, base: str) -> None:
        """Record where the CDN listens (result URLs and local reference resolution use it)."""
        self.cdn_base = base
        self._cdn_netloc = urlsplit(base).netloc

    # -- applications --------------------------------------------------------------------

    def make_apps(self) -> tuple[web.Application, web.Application]:
        """The API and CDN applications."""
        api = web.Application(client_max_size=MAX_BODY_BYTES)
        api.on_response_prepare.append(_mark_as_sandbox)
        api.router.add_route("*", "/{tail:.*}", self._api_entry)
        cdn = web.Application()
        cdn.router.add_route("*", "/{tail:.*}", self._cdn_entry)
        return api, cdn

    def _record(self, request: web.Request, origin: Origin) -> RequestRecord:
        return self.ledger._record_request(
            time=self.store.now(),
            origin=origin,
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=list(request.headers.items()),
            authorized=self.keys.accepts(request.headers.get("Authorization")),
        )

    async def _run(
        self, request: web.Request, record: RequestRecord, handler: _Handler
    ) -> web.StreamResponse:
        response = await handler(request, record)
        if response is None:
            # The connection was hung up or reset; aiohttp needs a return value but nothing
            # can be written to the closed transport any more.
            return web.Response(status=499)
        record.status = response.status
        return response

    async def _api_entry(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request, "api")
        path, method = request.path, request.method
        if path == SUBMIT_PATH:
            if method == "POST":
                return await self._run(request, record, self._submit)
            return self._finish(record, envelope(405, 1, "method not allowed"))
        if path == QUERY_PATH:
            if method in ("GET", "HEAD"):
                return await self._run(request, record, self._query)
            return self._finish(record, envelope(405, 1, "method not allowed"))
        if path == USER_PATH:
            if method in ("GET", "HEAD"):
                return await self._run(request, record, self._user)
            return self._finish(record, envelope(405, 1, "method not allowed"))
        return self._finish(record, envelope(404, 1, "not found"))

    async def _cdn_entry(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request, "cdn")
        if not request.path.startswith(CDN_PREFIX):
            return self._finish(record, web.Response(status=404, text="not found"))
        if request.method not in ("GET", "HEAD"):
            return self._finish(record, web.Response(status=405, text="method not allowed"))
        return await self._run(request, record, self._cdn)

    @staticmethod
    def _finish(record: RequestRecord, response: web.Response) -> web.Response:
        record.status = response.status
        return response

    # -- faults ----------------------------------------------------------------------------

    def _take(self, endpoint: Endpoint, record: RequestRecord) -> ScriptedFault | None:
        fault = self.faults.take(endpoint)
        if fault is not None:
            record.fault = fault.fault.name
        return fault

    @staticmethod
    def _throttled(fault: ScriptedFault) -> web.Response:
        status, message = (
            (429, "Too many requests")
            if fault.fault is Fault.RATE_LIMIT
            else (503, "Service temporarily unavailable")
        )
        response = envelope(status, 1, message)
        response.headers["Retry-After"] = fault.retry_after
        return response

    async def _hang(self, request: web.Request) -> None:
        """Hold the request open, answering nothing, until the sandbox stops.

        If the client gives up first, aiohttp cancels this handler (handler cancellation is
        on), so hung requests do not pile up during long runs.
        """
        try:
            await self._stopping.wait()
        finally:
            self._reset(request)

    @staticmethod
    def _reset(request: web.Request) -> None:
        """Drop the connection with a TCP RST and no response bytes."""
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close() into an RST: the client sees "connection reset".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    # -- API handlers ----------------------------------------------------------------------

    async def _submit(self, request: web.Request, record: RequestRecord) -> web.Response | None:
        self.ledger._note_submit(request.headers.get("Idempotency-Key"))
        scripted = self._take("submit", record)
        fault = scripted.fault if scripted else None
        if fault is Fault.SERVER_ERROR_HTML:
            return html(500, _HTML_ERROR)
        if scripted is not None and fault in (Fault.RATE_LIMIT, Fault.SERVICE_UNAVAILABLE):
            return self._throttled(scripted)
        if fault is Fault.UNAUTHORIZED or not record.authorized:
            return envelope(401, 1, "Invalid API key")
        try:
            submit = parse_submit(await request.read())
        except Invalid as exc:
            return bad_request(exc.detail)

        task = self.store.create(submit)
        record.task_id = task.task_id
        self.ledger._note_charge_key(request.headers.get("Idempotency-Key"))
        self._arm(task)

        if fault is Fault.SERVER_ERROR_AFTER_CHARGE:
            return html(500, _HTML_ERROR)
        if fault is Fault.HANG_AFTER_ACCEPT:
            await self._hang(request)
            return None
        if fault is Fault.RESET_AFTER_ACCEPT:
            self._reset(request)
            return None
        if fault is Fault.MALFORMED_JSON:
            return web.Response(text=_BROKEN_JSON, content_type="application/json")
        if fault is Fault.NO_TASK_ID:
            return ok({})
        if fault is Fault.HTML_200:
            return html(200, _HTML_PAGE)
        return ok({"task_id": task.task_id})

    async def _query(self, request: web.Request, record: RequestRecord) -> web.Response | None:
        task_id = request.query.get("task_id", "")
        if task_id:
            self.ledger._note_query(task_id)
        scripted = self._take("query", record)
        fault = scripted.fault if scripted else None
        if fault is Fault.SERVER_ERROR_HTML:
            return html(500, _HTML_ERROR)
        if scripted is not None and fault in (Fault.RATE_LIMIT, Fault.SERVICE_UNAVAILABLE):
            return self._throttled(scripted)
        if fault is Fault.HANG_AFTER_ACCEPT:
            await self._hang(request)
            return None
        if fault is Fault.RESET_AFTER_ACCEPT:
            self._reset(request)
            return None
        if fault is Fault.UNAUTHORIZED or not record.authorized:
            # The query endpoint puts the HTTP status in "code" (observed).
            return envelope(401, 401, "Invalid API key")
        if fault is Fault.MALFORMED_JSON:
            return web.Response(text=_BROKEN_JSON, content_type="application/json")
        if fault is Fault.HTML_200:
            return html(200, _HTML_PAGE)
        if not task_id:
            return bad_request("task_id is required")
        record.task_id = task_id
        task = self.store.get(task_id)
        if fault is Fault.NOT_FOUND or task is None or self.store.now() < task.visible_at:
            return envelope(404, 1, "task not found")

        data = await self.snapshot(task)
        if fault is Fault.NO_TASK_ID:
            del data["task_id"]
        elif fault is Fault.STALE_STATUS:
            data.update(status="in_progress", result=None, status_reason={"message": None})
        elif fault is Fault.UNKNOWN_STATUS:
            data["status"] = "queued"
        return ok(data)

    async def _user(self, request: web.Request, record: RequestRecord) -> web.Response:
        """``GET /api/user``: the account's credits, as public clients of the service see
        them (``{"credit": "100.50000000"}``), lowered by every charge. No faults are
        scripted here: the client's handling of a bad answer is tested without a server."""
        if not record.authorized:
            return envelope(401, 1, "Invalid API key")
        return ok({"credit": f"{self.store.balance:.8f}"})

    async def snapshot(self, task: Task) -> dict[str, Any]:
        """The task as the query endpoint shows it (also the webhook's content)."""
        now = self.store.now()
        self.store.settle(task)
        status = task.status(now)
        result = await self.result(task) if status == "success" else None
        return {
            "task_id": task.task_id,
            "status": status,
            "result": result,
            "consumed": f"{task.credits:.6f}",
            "status_reason": {"message": task.plan.reason if status == "failed" else None},
            "created_at": task.created_iso,
            # Not in any document: present so that clients stay liberal in what they accept.
            "progress": _progress(task, now),
        }

    async def webhook_payload(self, task: Task) -> dict[str, Any]:
        """The documented webhook body: exactly the five fields the reference lists."""
        data = await self.snapshot(task)
        return {key: data[key] for key in _WEBHOOK_FIELDS}

    async def result(self, task: Task) -> list[dict[str, str]]:
        """The result list of a successful task: image URLs and/or data URIs, or text."""
        if task.plan.text_only:
            return [{"text": f"I can only describe this one: {task.request.prompt}"}]
        entries: list[dict[str, str]] = []
        for index, token in enumerate(task.tokens):
            if task.mode_of(index) == "url":
                entries.append({"image": f"{self.cdn_base}{CDN_PREFIX}{token}.png"})
            else:
                data = await self.renderer.png(task, index)
                encoded = base64.b64encode(data).decode("ascii")
                entries.append({"image": f"data:image/png;base64,{encoded}"})
        return entries

    # -- CDN -------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request, record: RequestRecord) -> web.StreamResponse | None:
        scripted = self._take("cdn", record)
        fault = scripted.fault if scripted else None
        if fault is Fault.EXPIRED:
            return web.Response(status=410, text="gone")
        if fault is Fault.NOT_FOUND:
            return web.Response(status=404, text="not found")
        if fault is Fault.SERVER_ERROR_HTML:
            return html(500, _HTML_ERROR)
        if scripted is not None and fault in (Fault.RATE_LIMIT, Fault.SERVICE_UNAVAILABLE):
            return self._throttled(scripted)
        if fault is Fault.HANG_AFTER_ACCEPT:
            await self._hang(request)
            return None
        if fault is Fault.RESET_AFTER_ACCEPT:
            self._reset(request)
            return None
        if fault is Fault.NOT_AN_IMAGE:
            return html(200, _HTML_PAGE)

        name = request.path[len(CDN_PREFIX) :]
        found = self.store.by_token(name.removesuffix(".png"))
        if found is None:
            return web.Response(status=404, text="not found")
        task, index = found
        record.task_id = task.task_id
        if self.store.now() >= task.urls_expire_at:
            return web.Response(status=410, text="gone")
        data = await self.renderer.png(task, index)
        if fault is Fault.TRUNCATED:
            await self._truncated(request, record, data)
            return None
        return web.Response(
            body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=60"}
        )

    @staticmethod
    async def _truncated(request: web.Request, record: RequestRecord, data: bytes) -> None:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = len(data)
        record.status = 200
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        if request.transport is not None:
            # close(), unlike abort(), flushes what was written before closing.
            request.transport.close()

    def resolve_local(self, url: str) -> tuple[Task, int] | None:
        """The task image a URL on this sandbox's CDN names, if it exists and is not expired."""
        parts = urlsplit(url)
        if parts.netloc != self._cdn_netloc or not parts.path.startswith(CDN_PREFIX):
            return None
        found = self.store.by_token(parts.path[len(CDN_PREFIX) :].removesuffix(".png"))
        if found is None or self.store.now() >= found[0].urls_expire_at:
            return None
        return found

    # -- completion ------------------------------------------------------------------------

    def _arm(self, task: Task) -> None:
        """Schedule the task's completion side effects for when its end comes."""
        if task.ends_at is None:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, task.ends_at - self.store.now()), self._due, task)

    def _due(self, task: Task) -> None:
        if self._stopping.is_set() or task.terminal:
            return
        if not self.store.settle(task) and task.ends_at is not None:
            # Timers may fire a hair early, and an injected clock may run at its own pace.
            delay = max(0.001, task.ends_at - self.store.now())
            asyncio.get_running_loop().call_later(delay, self._due, task)

    def _on_terminal(self, task: Task) -> None:
        if self._stopping.is_set():
            return
        self.renderer.prefetch(task)
        url = task.request.callback_url
        if url is not None:
            self.callbacks.send(task.task_id, url, lambda: self.webhook_payload(task))

    async def close(self) -> None:
        """Release hung requests and stop background work (called before the runners stop)."""
        self._stopping.set()
        await asyncio.sleep(0)
        await self.callbacks.close()
        await self.renderer.close()


def _progress(task: Task, now: float) -> int:
    if task.terminal:
        return 100
    if task.ends_at is None or now < task.started_at:
        return 0
    span = max(task.ends_at - task.started_at, 1e-9)
    return max(0, min(99, int(100 * (now - task.started_at) / span)))
