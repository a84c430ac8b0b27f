"""H13: a task's result images stream to disk, a few at a time; memory stays bounded.

A success lists 20 URLs of an 8 MB image each (160 MB in all), served by a loopback HTTP
server. The session must fetch them all into the image store while its peak of Python
allocations (tracemalloc) stays well below their sum: downloads go to temporary files in the
store in chunks, hashed while streaming, and only a few run at once.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from nanobanana_jupyter import Session, TaskStatus
from nanobanana_jupyter._core.collector import IMAGE_FETCHES
from tests.reliability.conftest import SCALE, make_settings

pytestmark = pytest.mark.integration

COUNT = 20
MB = 1024 * 1024


def big_png() -> bytes:
    """A PNG of about 8 MB: noise does not compress."""
    buf = io.BytesIO()
    Image.effect_noise((1700, 1650), 120).convert("RGB").save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    assert 7 * MB < len(data) < 9 * MB
    return data


class ImageServer:
    def __init__(self, base: str, body: bytes) -> None:
        self.base, self.body = base, body
        self.lock = threading.Lock()
        self.active = 0
        self.busiest = 0


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """An HTTP server on 127.0.0.1 that answers every GET with the same 8 MB PNG, and
    records the most requests it served at once."""
    body = big_png()
    state = ImageServer("", body)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.active += 1
                state.busiest = max(state.busiest, state.active)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                view = memoryview(body)
                for start in range(0, len(body), 256 * 1024):
                    self.wfile.write(view[start : start + 256 * 1024])
            finally:
                with state.lock:
                    state.active -= 1

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class FakeAPI(httpx.AsyncBaseTransport):
    """Answers the API in-process (one task, at once a success with COUNT image URLs) and
    passes every other request to a real transport (the loopback image server)."""

    def __init__(self, images_base: str) -> None:
        self.images_base = images_base
        self.real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.test":
            if request.url.path == "/api/image/gen":
                data: dict[str, object] = {"task_id": "t-many"}
            else:
                result = [{"image": f"{self.images_base}/img/{i}.png"} for i in range(COUNT)]
                data = {"task_id": "t-many", "status": "success", "result": result}
            body = json.dumps({"code": 0, "message": "ok", "data": data}).encode()
            return httpx.Response(200, content=body, headers={"content-type": "application/json"})
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


def test_many_large_result_images_are_fetched_with_bounded_memory(
    image_server: ImageServer, tmp_path: Path
) -> None:
    """20 images of 8 MB: all stored whole, a few at a time, with a Python peak far below
    their 160 MB sum."""
    from nanobanana_jupyter import PollPolicy

    base, body = image_server.base, image_server.body
    settings = make_settings("https://api.test", "dk-test", tmp_path / "data")
    with Session(
        settings=settings, transport=FakeAPI(base), poll_policy=PollPolicy().scaled(SCALE)
    ) as session:
        tracemalloc.start()
        try:
            task = session.generate("twenty big ones").wait(timeout=60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert task.status is TaskStatus.SUCCESS, task.error
        assert len(task.images) == COUNT
        digest = hashlib.sha256(body).hexdigest()
        assert {image.sha256 for image in task.images} == {digest}
        assert Path(task.images[0].path).read_bytes() == body
        leftovers = list((tmp_path / "data").rglob(".tmp-*"))
        assert leftovers == []
    total = COUNT * len(body)
    # Before the fix every image was held as bytes at once (a peak of about 100 MB here);
    # streamed, the peak is a few chunks (about 2 MB here).
    assert peak < 2 * len(body), f"peak {peak / MB:.0f} MB for {total / MB:.0f} MB of images"
    assert 1 <= image_server.busiest <= IMAGE_FETCHES
