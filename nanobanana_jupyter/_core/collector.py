"""Collecting a successful task's images into the image store, as soon as it succeeds
(result URLs expire), a few at a time."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.records import ImageRecord
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import TaskStatus

from .handles import Registry
from .resources import Resources
from .support import message_of

__all__ = ["IMAGE_FETCHES", "Collector"]

logger = logging.getLogger("nanobanana_jupyter")

# Result images a session fetches and decodes at once. Each streams to disk in chunks, but
# checking one decodes it fully (up to 64 MP, about 200 MB of pixels): a small number keeps
# a task with 30 large results to a few hundred MB at worst, and still overlaps the network.
IMAGE_FETCHES = 3


class Collector:
    """Fetches the images of a session's successful tasks (engine thread)."""

    def __init__(self, resources: Resources, images: ImageStore, registry: Registry) -> None:
        self._res = resources
        self._images = images
        self._registry = registry

    async def collect(self, local_id: str, snapshot: Any, polls: int) -> None:
        """Fetch every image of a successful task into the image store, at once.

        Each image streams into a temporary file of the store (hashed and size-checked as it
        arrives) and is checked and renamed into place from there, so no image sits in memory
        whole; at most ``IMAGE_FETCHES`` of the session's images are fetched and decoded at
        a time, which bounds the memory a task with many large results can take.
        """
        client, _ = self._res.connect()
        loop = asyncio.get_running_loop()
        if self._res.image_slots is None:
            self._res.image_slots = asyncio.Semaphore(IMAGE_FETCHES)
        slots = self._res.image_slots

        async def fetch(ref: str) -> ImageRecord:
            url = None if ref.startswith("data:") else ref
            async with slots:
                with self._images.incoming() as incoming:
                    await client.download_to(ref, incoming)
                    return await loop.run_in_executor(
                        None, functools.partial(self._images.put_incoming, incoming, url=url)
                    )

        refs = list(dict.fromkeys(snapshot.images))  # duplicates fetched once
        results = await asyncio.gather(*(fetch(r) for r in refs), return_exceptions=True)
        images = tuple(r for r in results if isinstance(r, ImageRecord))
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, (NanoBananaError, ValueError, OSError)):
                logger.error("task %s: fetching an image failed", local_id, exc_info=failure)
        status = TaskStatus.SUCCESS
        error = None
        if failures:
            status = TaskStatus.UNAVAILABLE
            message = message_of(failures[0])
            error = f"{len(failures)} of {len(refs)} image(s) could not be fetched: {message}"
        elif not images and not snapshot.texts:
            # The scheduler only finishes a success that carries something; be safe anyway:
            # a success with nothing in hand is never final.
            status = TaskStatus.UNAVAILABLE
            error = "the server reported success but returned no images; task.resume() looks again"
        self._registry.set(
            local_id,
            status=status,
            images=images,
            result_urls=tuple(r for r in refs if not r.startswith("data:")),
            texts=snapshot.texts,
            consumed=snapshot.consumed,
            error=error,
            polls=polls,
            finished_at=time.time(),
        )
