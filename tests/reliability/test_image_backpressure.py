"""Downloads have back-pressure: a burst of successes waits its turn, and none is given up
because others were queued (issue 18).

A loopback image server answers every GET slowly. Hundreds of downloads at once through the
client, and a session's collector after fifty tasks succeed at once, must all arrive: a
download takes a turn of the client's gate before it asks the pool for a connection, and one
that still waited out httpx's pool timeout never started, so it never counts as one of the
image's attempts.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from PIL import Image

from nanobanana_jupyter import Session, Settings, TaskStatus
from nanobanana_jupyter._wire.client import IMAGE_CONNECTIONS, AsyncClient
from nanobanana_jupyter._wire.retry import RetryPolicy
from tests.conftest import SENTINEL_KEY

pytestmark = pytest.mark.integration


def small_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, (seed // 256) % 256, 7)).save(buf, format="PNG")
    return buf.getvalue()


class SlowImages:
    """Counts what the image server served, and the most it served at once."""

    def __init__(self, delay: tuple[float, float]) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.busiest = 0
        self.served = 0
        self.base = ""


@pytest.fixture(params=[(1.5, 2.0)], ids=["slow"])
def images(request: pytest.FixtureRequest) -> Iterator[SlowImages]:
    """An HTTP server on 127.0.0.1 (asyncio, its own thread) that answers ``GET /<n>.png``
    with image ``n`` after a jittered delay, any number of connections at once."""
    state = SlowImages(request.param)
    rng = random.Random(18)

    async def handle(req: web.Request) -> web.Response:
        with state.lock:
            state.active += 1
            state.busiest = max(state.busiest, state.active)
            pause = rng.uniform(*state.delay)
        try:
            await asyncio.sleep(pause)
            body = small_png(int(req.match_info["n"]))
            with state.lock:
                state.served += 1
            return web.Response(body=body, content_type="image/png")
        finally:
            with state.lock:
                state.active -= 1

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/{n}.png", handle)
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state.base = f"http://127.0.0.1:{port}"
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    return Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url="https://api.example.test",
        data_dir=data_dir,
        environ={},
        colab=lambda name: None,
        allow_local_urls=True,  # the images come from 127.0.0.1
        **overrides,  # type: ignore[arg-type]
    )


def test_a_flood_of_downloads_queues_for_connections_and_loses_none(
    images: SlowImages, tmp_path: Path
) -> None:
    """Three times the image pool's connections, all at once, with no retries allowed and a
    short pool timeout: every one arrives, and the server never sees more than the pool."""
    count = 3 * IMAGE_CONNECTIONS
    # A pool wait of 2.5 s: the last of the flood waits two images' time (3 s or more)
    # for a connection; connecting itself has as long, on a busy machine.
    settings = settings_for(tmp_path, connect_timeout=2.5)

    async def flood() -> list[bytes | BaseException]:
        async with AsyncClient(
            settings=settings, download_policy=RetryPolicy(max_retries=0)
        ) as client:

            async def one(n: int) -> bytes:
                sink = io.BytesIO()
                await client.download_to(f"{images.base}/{n}.png", sink)
                return sink.getvalue()

            return await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)

    results = asyncio.run(flood())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of {count} downloads lost, e.g. {failures[0]!r}"
    assert results == [small_png(n) for n in range(count)]
    assert images.served == count
    assert images.busiest <= IMAGE_CONNECTIONS


class RoutedTransport(httpx.AsyncBaseTransport):
    """The API answered in process (every submit accepted, every task already a success with
    two images on the slow server); images fetched over loopback through a real pool of
    ``connections``, smaller than the collector's own concurrency, as a caller's transport
    (a proxy's, a shared one) may be."""

    def __init__(self, images: SlowImages, connections: int) -> None:
        self.images = images
        self.submits = 0
        self._lock = threading.Lock()
        self._real = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "api.example.test":
            return await self._real.handle_async_request(request)
        if request.method == "POST":
            with self._lock:
                self.submits += 1
                task_id = f"ta{self.submits}"
            return httpx.Response(200, json={"code": 0, "data": {"task_id": task_id}})
        task_id = request.url.params.get("task_id", "")
        n = int(task_id.removeprefix("ta"))
        result = [{"image": f"{self.images.base}/{2 * n + k}.png"} for k in (0, 1)]
        data = {"task_id": task_id, "status": "success", "result": result, "consumed": "0.5"}
        return httpx.Response(200, content=json.dumps({"code": 0, "data": data}).encode())

    async def aclose(self) -> None:
        await self._real.aclose()


@pytest.mark.parametrize("repeat", range(1))
def test_a_burst_of_successes_is_all_collected_through_a_narrow_pool(
    images: SlowImages, tmp_path: Path, repeat: int
) -> None:
    """Fifty tasks succeed at once, two images each, fetched through a pool of one connection
    (a caller's transport), narrower than the collector: its downloads run out of the pool
    timeout again and again while they wait, and not one task ends unavailable (before the
    fix 4-5 of 50 did, "could not be fetched ... PoolTimeout")."""
    count = 50
    connections = 1  # the collector fetches IMAGE_FETCHES at a time
    images.delay = (0.1, 0.2)
    transport = RoutedTransport(images, connections)
    # A pool wait of 0.05 s, shorter than any image takes: the collector's third download
    # at a time always runs out of it, again and again.
    settings = settings_for(tmp_path / "data", connect_timeout=0.05)
    with Session(settings=settings, transport=transport) as session:
        tasks = session.map([f"flood {repeat} {i}" for i in range(count)]).wait(timeout=300)
        statuses = {t.status for t in tasks}
        lost = [t for t in tasks if t.status is not TaskStatus.SUCCESS]
        assert lost == [], f"{len(lost)} of {count} lost, e.g. {lost[0].error}"
        assert statuses == {TaskStatus.SUCCESS}
        assert all(len(t.images) == 2 for t in tasks)
        assert len({image.sha256 for t in tasks for image in t.images}) == 2 * count
    assert transport.submits == count
    assert images.busiest <= connections
