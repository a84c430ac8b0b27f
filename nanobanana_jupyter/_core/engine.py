"""The engine: one private asyncio loop in a daemon thread, where all network work runs.

Why a thread of our own (research/jupyter-async.md): cell code runs inside the kernel's
loop, which stalls whenever a cell blocks, and nest-asyncio patches asyncio process-wide.
A loop in its own thread keeps polling while cells block, works the same in a kernel, a
terminal and a script, and needs no patching. Other threads hand work over with
:meth:`Engine.submit` (thread-safe) and wait on the concurrent future it returns.

The engine starts on first use, is closed at interpreter exit, and is rebuilt in a forked
child (a loop and its sockets must never cross a fork).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Engine", "get_engine"]

logger = logging.getLogger("nanobanana_jupyter")
_T = TypeVar("_T")


class Engine:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str = "nanobanana-engine") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's loop, started if needed."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._start()
            assert self._loop is not None
            return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_engine_thread(self) -> bool:
        """True when called from the engine's own thread (where blocking would deadlock)."""
        return threading.current_thread() is self._thread

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                try:
                    _cancel_all(loop)
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("the nanobanana engine thread did not start within 30 s")
        self._loop, self._thread = loop, thread

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run a coroutine on the engine; return a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Call ``fn(*args)`` on the engine thread, soon (thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def call_soon_if_running(self, fn: Callable[..., object], *args: object) -> bool:
        """Like :meth:`call_soon`, but never starts the engine and never blocks on its lock.

        For finalizers, which may run in any thread inside the garbage collector (even one
        holding the engine's lock). Returns False when no engine loop runs to take the call.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run a coroutine on the engine and block until it returns (not from the engine)."""
        if self.in_engine_thread():
            coro.close()
            raise RuntimeError("Engine.run() would deadlock when called from the engine thread")
        return self.submit(coro).result(timeout)

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register an async cleanup (closing HTTP clients) to run when the engine stops."""
        self._closers.append(closer)

    def remove_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        if closer in self._closers:
            self._closers.remove(closer)

    def stop(self, timeout: float = 2.0) -> None:
        """Run the cleanups, stop the loop and join the thread, within about ``timeout``."""
        with self._lock:
            loop, thread = self._loop, self._thread
            closers, self._closers = self._closers, []
            self._loop = self._thread = None
        if loop is None or thread is None or loop.is_closed():
            return
        if closers and thread.is_alive():

            async def close_all() -> None:
                results = await asyncio.gather(*(c() for c in closers), return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        logger.debug("engine cleanup failed: %r", result)

            try:
                asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                logger.debug("engine cleanup did not finish in %.1f s", timeout)
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process-wide engine, created on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def _reset_after_fork() -> None:
    # The parent's loop thread does not exist in the child; start afresh on next use.
    global _engine, _engine_lock
    _engine = None
    _engine_lock = threading.Lock()


def _stop_at_exit() -> None:
    engine = _engine
    if engine is not None:
        engine.stop()


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
