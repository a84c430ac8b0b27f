"""An optional webhook receiver: callbacks are hints, the API stays the truth.

The service POSTs the final state of a task to its ``callback_url``, unsigned. So nothing in
a callback body is trusted (research/reliability.md section 3): a callback only makes the
session query the task at once through the authenticated API, and only that answer changes
anything. Each submission gets its own unguessable path (256 random bits), which also ties a
callback to its submission when the submit's answer was lost.

The receiver listens on 127.0.0.1 only (a tunnel, if the user sets one up, forwards to it),
checks the Host header against DNS rebinding, refuses requests from browsers (an Origin
header), caps the body, and answers at once. It runs on the engine loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nanobanana_jupyter._wire.timeouts import time_limit

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["WebhookReceiver"]

logger = logging.getLogger("nanobanana_jupyter")

PATH_PREFIX = "/nanobanana/hook/"
MAX_BODY = 64 * 1024
# A body, or a connection that says nothing, gets this long (slowloris, reliability.md W5).
BODY_TIMEOUT = 10.0
HintFn = Callable[[str, "str | None"], None]


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The body, read to its end (it may arrive in pieces), but never more than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await request.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _digest(token: str) -> str:
    # Tokens are looked up by their hash: timing differences of a dict lookup then say
    # nothing useful about any real token.
    return hashlib.sha256(token.encode()).hexdigest()


class WebhookReceiver:
    """Receives task callbacks on 127.0.0.1 and turns each into a hint for the session.

    Args:
        on_hint: called on the engine loop as ``on_hint(local_id, task_id_from_body)``.
        public_url: the URL a tunnel exposes for this receiver, if any; callback URLs are
            built on it, and its host is accepted in the Host header.
        token_ttl: seconds a token stays valid after its task ended.
    """

    def __init__(
        self,
        on_hint: HintFn,
        *,
        public_url: str | None = None,
        token_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_hint = on_hint
        self._public_url = public_url.rstrip("/") if public_url else None
        self._token_ttl = token_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float | None]] = {}  # digest -> (local_id, expiry)
        self._by_local: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.received = 0

    @property
    def base_url(self) -> str:
        if self._public_url:
            return self._public_url
        if self.port is None:
            raise RuntimeError("the webhook receiver is not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve (engine loop)."""
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", PATH_PREFIX + "{token}", self._handle)
        # keepalive_timeout also closes a connection that never completes a request (idle, or
        # headers that never end: slowloris) in the aiohttp releases that arm it at connect.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.5,
            keepalive_timeout=BODY_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        # The port the system chose: the runner lists the address of each bound socket.
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def aclose(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def url_for(self, local_id: str) -> str:
        """A fresh callback URL for one submission (thread-safe)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[_digest(token)] = (local_id, None)
            self._by_local[local_id] = _digest(token)
        return f"{self.base_url}{PATH_PREFIX}{token}"

    def finished(self, local_id: str) -> None:
        """The task ended: its token stays valid (for replays) for ``token_ttl`` more."""
        with self._lock:
            digest = self._by_local.pop(local_id, None)
            if digest is not None and digest in self._tokens:
                self._tokens[digest] = (local_id, self._clock() + self._token_ttl)
            now = self._clock()
            for key, (_, expiry) in list(self._tokens.items()):
                if expiry is not None and expiry < now - self._token_ttl:
                    del self._tokens[key]

    def _allowed_host(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0].strip("[]").lower() if host else ""
        allowed = {"127.0.0.1", "localhost"}
        if self._public_url:
            allowed.add((urlsplit(self._public_url).hostname or "").lower())
        return name in allowed

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        if "Origin" in request.headers:
            return web.Response(status=403, text="browsers may not call this endpoint")
        if not self._allowed_host(request.headers.get("Host", "")):
            return web.Response(status=403, text="unexpected Host")
        with self._lock:
            entry = self._tokens.get(_digest(request.match_info["token"]))
        if entry is None:
            return web.Response(status=404)
        local_id, expiry = entry
        if expiry is not None and expiry < self._clock():
            return web.Response(status=410)
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected application/json")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413)
        try:
            async with time_limit(BODY_TIMEOUT):
                raw = await _read_capped(request, MAX_BODY + 1)
        except asyncio.TimeoutError:
            return web.Response(status=408)
        if len(raw) > MAX_BODY:
            return web.Response(status=413)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested past any sense
            return web.Response(status=400, text="not JSON")
        task_id = body.get("task_id") if isinstance(body, dict) else None
        hint = task_id if isinstance(task_id, str) and 0 < len(task_id) <= 200 else None
        self.received += 1
        # Answer now; the confirming query runs on its own.
        asyncio.get_running_loop().call_soon(self._on_hint, local_id, hint)
        return web.Response(status=204)
