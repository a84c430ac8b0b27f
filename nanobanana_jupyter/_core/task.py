"""The :class:`Task` handle: what ``session.generate`` returns at once.

A handle reads the latest record the session holds for its task; the engine thread moves
the record on. Three ways to wait: ``task.wait()`` (blocking, in short slices so Ctrl-C and
kernel interrupts land), ``await task`` (on any running loop, through a wrapped concurrent
future), and ``task.add_done_callback(fn)``. Closing the session ends every wait on an
unfinished task at once, with a ``RuntimeError`` saying how to resume it: nothing would move
the task on any more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Generator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from nanobanana_jupyter._store import presenter
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.errors import (
    SubmitOutcomeUnknownError,
    TaskAbandonedError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    TaskUnavailableError,
)
from nanobanana_jupyter._wire.models import TaskStatus

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from .session import Session

__all__ = ["Task"]

logger = logging.getLogger("nanobanana_jupyter")
# How long a blocking wait sleeps at a time: short enough that an interrupt lands at once.
_WAIT_SLICE = 0.1


class Task:
    """A generation, running or finished. Returned at once by ``Session.generate``.

    Attributes read the newest state; nothing here blocks unless you call :meth:`wait`,
    :meth:`result` or read :attr:`image` of an unfinished task.
    """

    def __init__(self, session: Session, record: TaskRecord) -> None:
        self._session = session
        self._record = record
        self._lock = threading.Lock()
        self._future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._callbacks: list[Callable[[Task], object]] = []
        # Set when the session closed before the task ended: its future is then resolved
        # only to wake the waiters, which raise instead of returning.
        self._orphaned = False
        self._started = time.monotonic()
        self._reused = False
        if record.is_terminal:
            self._future.set_result(None)

    # -- state --------------------------------------------------------------------

    @property
    def record(self) -> TaskRecord:
        """The newest local record of this task."""
        return self._record

    @property
    def reused(self) -> bool:
        """True when the last ``generate`` that returned this task did not send a request:
        an identical earlier request's task (done or still running) was handed back."""
        return self._reused

    @property
    def session(self) -> Session:
        return self._session

    @property
    def id(self) -> str:
        """The server's task id once known, else the local id."""
        return self._record.task_id or self._record.local_id

    @property
    def local_id(self) -> str:
        return self._record.local_id

    @property
    def task_id(self) -> str | None:
        return self._record.task_id

    @property
    def status(self) -> TaskStatus:
        return self._record.status

    @property
    def prompt(self) -> str:
        return self._record.prompt

    @property
    def model(self) -> str:
        return self._record.model

    @property
    def error(self) -> str | None:
        """Why the task ended badly, or ``None``."""
        return self._record.error

    @property
    def cost(self) -> Decimal | None:
        """Credits the server charged (``consumed``), when known."""
        return self._record.consumed

    @property
    def images(self) -> list[ImageRecord]:
        """The images on disk (empty until the task succeeded)."""
        return list(self._record.images)

    @property
    def paths(self) -> list[str]:
        return [image.path for image in self._record.images]

    @property
    def path(self) -> str | None:
        """The first image's file, or ``None``."""
        images = self._record.images
        return images[0].path if images else None

    @property
    def image(self) -> PILImage.Image:
        """The first image as a PIL image, waiting for the task if it is still running.

        Raises:
            TaskUnavailableError: the task has no image, or its file is no longer on disk
                (deleted or moved). The message names the file and the ways back: put the
                file back; fetch the result URL again while it is valid (result URLs
                expire, typically within hours); or generate again with
                ``generate(..., force=True)``, a new paid task (without ``force`` the
                identical request would reuse this task). ``task.resume()`` does not help:
                the task finished, and the server keeps no copy beyond that URL.
            The errors of :meth:`result`, when the task ended badly.
        """
        images = self.result()
        if not images:
            raise TaskUnavailableError("the task succeeded but returned no image", task_id=self.id)
        first = images[0]
        try:
            return first.to_pil()
        except FileNotFoundError as exc:
            again = (
                f"fetch {_url_for_message(first.url)} again while it is still valid (result "
                "URLs expire), e.g. with nanobanana_jupyter.Client().download(url), or "
                if first.url
                else ""
            )
            raise TaskUnavailableError(
                f"the image file of task {self.id} is gone: {first.path} (deleted or moved). "
                f"Put the file back, {again}generate it again with "
                "session.generate(..., force=True) (a new paid task)",
                task_id=self.id,
            ) from exc

    @property
    def elapsed(self) -> float:
        """Seconds since the task was submitted (or until it finished)."""
        rec = self._record
        if rec.finished_at is not None:
            return max(0.0, rec.finished_at - rec.created_at)
        return max(0.0, time.time() - rec.created_at)

    def done(self) -> bool:
        """True when the task has ended (any terminal state)."""
        return self._future.done() and not self._orphaned

    # -- waiting ------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Task:
        """Block until the task ends, and return it (whatever the outcome).

        Raises:
            TimeoutError: only when ``timeout`` seconds pass first; the task goes on.
            RuntimeError: when called on the engine thread (it would deadlock), or when the
                session is closed (before or during the wait) with the task unfinished.
        """
        if self._session._engine.in_engine_thread() and not self.done():
            raise RuntimeError("Task.wait() cannot be called from a done callback; use done()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            future = self._future
            if self._orphaned:
                self._session._after_wait()  # what did finish is shown final all the same
                raise self._closed_error()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._session._after_wait()  # outputs final, sent from the waiting thread
                if future.done() and not self._orphaned:
                    return self
                if self._orphaned:
                    raise self._closed_error()
                raise TimeoutError(
                    f"task {self.id} still {self.status.value} after {timeout:g} s; it goes on "
                    "in the background"
                )
            slice_ = _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)
            try:
                future.result(timeout=slice_)
            except concurrent.futures.TimeoutError:
                continue
            if future is self._future:  # not re-armed by a resume meanwhile
                self._session._after_wait()  # outputs final, sent from the waiting thread
                if self._orphaned:
                    raise self._closed_error()
                return self

    def result(self, timeout: float | None = None) -> list[ImageRecord]:
        """Wait, then return the images, or raise the reason the task has none.

        Raises:
            TaskFailedError, TaskTimeoutError, TaskAbandonedError, TaskUnavailableError,
            SubmitOutcomeUnknownError, or the error that stopped the submit; and what
            :meth:`wait` raises.
        """
        self.wait(timeout)
        error = self.exception()
        if error is not None:
            raise error
        return list(self._record.images)

    def exception(self) -> Exception | None:
        """The error :meth:`result` would raise for a finished task, or ``None``."""
        rec = self._record
        message = rec.error or rec.status.value
        status = rec.status
        if status is TaskStatus.SUCCESS:
            return None
        if status is TaskStatus.FAILED:
            return TaskFailedError(
                f"task {self.id} failed: {message}", task_id=self.id, reason=rec.error
            )
        if status is TaskStatus.TIMED_OUT:
            return TaskTimeoutError(f"task {self.id} timed out: {message}", task_id=self.id)
        if status is TaskStatus.ABANDONED:
            return TaskAbandonedError(f"task {self.id} was abandoned: {message}", task_id=self.id)
        if status is TaskStatus.UNAVAILABLE:
            return TaskUnavailableError(
                f"task {self.id} succeeded but its images are unavailable: {message}",
                task_id=self.id,
            )
        if status is TaskStatus.SUBMIT_UNKNOWN:
            return SubmitOutcomeUnknownError(message, task_id=self._record.task_id)
        if status is TaskStatus.NOT_SENT:
            return TaskError(f"the task was not sent: {message}", task_id=self.id)
        return None

    def __await__(self) -> Generator[Any, None, Task]:
        while True:
            future = self._future
            if self._orphaned:
                raise self._closed_error()
            yield from asyncio.wrap_future(future).__await__()
            if future is self._future:
                if self._orphaned:
                    raise self._closed_error()
                return self

    def _closed_error(self) -> RuntimeError:
        session = self._session
        return RuntimeError(
            f"task {self.id} is still {self.status.value}, but its session is closed, so "
            "nothing follows it any more. It stays in the history: a new Session on "
            f"{str(session.data_dir)!r} picks it up with session.resume() (or "
            f"session.get({self.id!r}).wait())"
        )

    def add_done_callback(self, fn: Callable[[Task], object]) -> None:
        """Call ``fn(task)`` when the task ends (at once if it already has).

        The call happens on the engine thread: keep it short, and never block in it.
        """
        with self._lock:
            if not self.done():
                self._callbacks.append(fn)
                return
        _safe_call(fn, self)

    def resume(self) -> bool:
        """Poll this task again: after a timeout, a cancel, 404s for a while, or a success
        whose images could not be fetched or were not in the answer.

        Returns False when there is nothing to resume (never sent, or finished for good).
        Nothing is submitted again.
        """
        return self._session._resume_one(self)

    def cancel(self) -> bool:
        """Stop polling and mark the task abandoned. The API has no cancel: the server may
        still finish and charge it; ``task.resume()`` picks it up again."""
        return self._session._abandon(self)

    # -- called by the session (engine thread) --------------------------------------

    def _update(self, record: TaskRecord) -> None:
        callbacks: list[Callable[[Task], object]] = []
        with self._lock:
            self._record = record
            if record.is_terminal and (self._orphaned or not self._future.done()):
                self._orphaned = False  # it ended after all (a last write while closing)
                if not self._future.done():
                    self._future.set_result(None)
                callbacks, self._callbacks = self._callbacks, []
            elif not record.is_terminal and self._future.done():
                # Resumed: waiting starts again.
                self._future = concurrent.futures.Future()
        for fn in callbacks:
            _safe_call(fn, self)

    def _mark_reused(self) -> None:
        self._reused = True

    def _session_closed(self) -> None:
        """The session closed: nothing moves this task on any more; wake whoever waits."""
        with self._lock:
            if not self._future.done():
                self._orphaned = True
                self._future.set_result(None)

    # -- display ------------------------------------------------------------------

    def __repr__(self) -> str:
        return presenter.text(self, f"<Task {self.id} {self.status.value}>")

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]] | dict[str, Any]:
        return presenter.mimebundle(self, repr(self))


def _url_for_message(url: str) -> str:
    """A result URL without its query string (it may carry a signature)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _safe_call(fn: Callable[[Task], object], task: Task) -> None:
    try:
        fn(task)
    except Exception:  # a user's callback failing must not break the engine
        logger.exception("a done callback of task %s failed", task.id)
