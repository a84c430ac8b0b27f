"""Result images: drawn once per task image in a thread pool, cached by size, shared by callers.

Drawing is CPU work (milliseconds to tens of milliseconds), so it never runs on the event
loop. Concurrent requests for the same image share one drawing job. The cache is a byte-bounded
LRU: a benchmark with ten thousand tasks must not keep every PNG in memory, and an evicted image
is simply redrawn, identically, because drawing is deterministic.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from urllib.parse import urlsplit

from ._draw import DrawSpec, Reference, long_side_for, render_png
from ._state import Task

_Key = tuple[str, int]
#: Maps a URL to one of this sandbox's own result images, or ``None`` if it is not one (or
#: it has expired).
LocalResolver = Callable[[str], tuple[Task, int] | None]


class Renderer:
    """Produces the PNG bytes of a task's images."""

    def __init__(
        self,
        *,
        executor: Executor,
        max_side: int,
        image_side: int | None,
        resolve_local: LocalResolver,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._executor = executor
        self._max_side = max_side
        self._image_side = image_side
        self._resolve_local = resolve_local
        self._cache_bytes = cache_bytes
        self._cache: OrderedDict[_Key, bytes] = OrderedDict()
        self._cached_size = 0
        self._inflight: dict[_Key, asyncio.Task[bytes]] = {}

    async def png(self, task: Task, index: int) -> bytes:
        """The PNG of image ``index`` of ``task``, drawing it if needed."""
        key = (task.task_id, index)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        job = self._start(task, index)
        # Shielded: one caller giving up (client disconnect) must not cancel the shared job.
        return await asyncio.shield(job)

    def prefetch(self, task: Task) -> None:
        """Start drawing every image of a finished task, so the first download is quick."""
        for index in range(len(task.tokens)):
            if (task.task_id, index) not in self._cache:
                self._start(task, index)

    def _start(self, task: Task, index: int) -> asyncio.Task[bytes]:
        key = (task.task_id, index)
        job = self._inflight.get(key)
        if job is None:
            job = asyncio.ensure_future(self._draw(task, index))
            self._inflight[key] = job
            job.add_done_callback(lambda done: self._finished(key, done))
        return job

    def _finished(self, key: _Key, job: asyncio.Task[bytes]) -> None:
        self._inflight.pop(key, None)
        if job.cancelled() or job.exception() is not None:
            return
        data = job.result()
        self._cache[key] = data
        self._cached_size += len(data)
        while self._cached_size > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_size -= len(old)

    async def _draw(self, task: Task, index: int) -> bytes:
        refs: list[Reference] = []
        for url in task.request.images:
            if url.startswith("data:"):
                refs.append(Reference(label="data URI", data_uri=url))
                continue
            local = self._resolve_local(url)
            if local is not None:
                refs.append(Reference(label="sandbox", data=await self.png(*local)))
            else:
                # The sandbox is offline: a foreign URL is shown, never fetched.
                refs.append(Reference(label=urlsplit(url).hostname or "url"))
        request = task.request
        spec = DrawSpec(
            prompt=request.prompt,
            model=request.model,
            index=index,
            repeat=task.repeat,
            aspect_ratio=request.aspect_ratio,
            image_size=request.image_size or "",
            long_side=long_side_for(
                request.image_size, max_side=self._max_side, image_side=self._image_side
            ),
            refs=tuple(refs),
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, render_png, spec)

    async def close(self) -> None:
        """Cancel drawing jobs in flight (their threads finish on their own)."""
        jobs = list(self._inflight.values())
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)
