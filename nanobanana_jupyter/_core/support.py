"""Small helpers the session's parts share: callbacks held weakly, and failures made visible."""

from __future__ import annotations

import concurrent.futures
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from nanobanana_jupyter._wire.errors import NanoBananaError

__all__ = ["message_of", "report_failure", "weak_async_method", "weak_method"]

logger = logging.getLogger("nanobanana_jupyter")


def message_of(error: BaseException) -> str:
    """What to tell a user about ``error``."""
    return error.message if isinstance(error, NanoBananaError) else str(error)


def weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, called through a weak reference: it does not keep its object alive.

    For callbacks the engine holds (client retries, webhook hints): a dropped session stays
    collectable; once it is gone the call does nothing.
    """
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)

    return call


def weak_async_method(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """:func:`weak_method` for a coroutine method (the poll loop's decisions)."""
    ref = weakref.WeakMethod(method)

    async def call(*args: Any) -> None:
        bound = ref()
        if bound is not None:
            await bound(*args)

    return call


def report_failure(future: concurrent.futures.Future[Any]) -> None:
    """Log what escaped a background job: nothing on the submit path may vanish unseen."""
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        logger.error("a background job of the session failed", exc_info=error)
