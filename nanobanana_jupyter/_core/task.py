"""The :class:`Task` handle: what ``session.generate`` returns at once.

A handle reads the latest record the session holds for its task; the engine thread moves
the record on. Three ways to wait: ``task.wait()`` (blocking, in short slices so Ctrl-C and
kernel interrupts land), ``await task`` (on any running loop, through a wrapped concurrent
future), and ``task.add_done_callback(fn)``. Closing the session ends every wait on an
unfinished task at once, with a ``RuntimeError`` saying how to resume it: nothing would move
the task on any more.

A handle reads its state from a :class:`TaskState` that the session's registry owns and
moves on; it asks its owner (:class:`TaskOwner`, the session) only through public calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Generator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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

    from nanobanana_jupyter._store.history import History

__all__ = ["Task", "TaskOwner", "TaskState"]

logger = logging.getLogger("nanobanana_jupyter")
# How long a blocking wait sleeps at a time: short enough that an interrupt lands at once.
_WAIT_SLICE = 0.1


class TaskOwner(Protocol):
    """What a handle needs of the session that handed it out."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def history(self) -> History:
        """The history store's view: where ratings, tags and notes are kept."""
        ...

    def in_engine_thread(self) -> bool:
        """True on the engine thread (where a blocking wait would deadlock)."""
        ...

    def after_wait(self) -> None:
        """A blocking wait has ended: subscribers and views catch up (waiting thread)."""
        ...

    def events_delivered(self) -> None:
        """Return once every change event queued so far has reached the subscribers."""
        ...

    def resume_task(self, task: Task) -> bool:
        """Poll ``task`` again (see :meth:`Task.resume`)."""
        ...

    def cancel_task(self, task: Task) -> bool:
        """Stop following ``task`` and mark it abandoned (see :meth:`Task.cancel`)."""
        ...

    def related_tasks(self, task: Task, *, parents: bool) -> list[Task]:
        """The tasks whose results ``task`` used (``parents``) or that used its results."""
        ...


class TaskState:
    """What a handle shows, moved on by the session's registry (the engine thread).

    The handle only reads it; :meth:`update` is how a record reaches the handle, waking its
    waiters and calling its done callbacks when the record is final.
    """

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self.lock = threading.Lock()
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.callbacks: list[Callable[[Task], object]] = []
        # Set when the session closed before the task ended: its future is then resolved
        # only to wake the waiters, which raise instead of returning.
        self.orphaned = False
        self.reused = False
        self.handle: Task | None = None  # the handle showing this state (set by the Task)
        if record.is_terminal:
            self.future.set_result(None)

    def update(self, record: TaskRecord, announce: Callable[[], object] | None = None) -> None:
        """Show ``record``. ``announce`` runs once the record is in place and before any
        waiter wakes (the session queues the change event there)."""
        callbacks: list[Callable[[Task], object]] = []
        with self.lock:
            self.record = record
            if announce is not None:
                announce()
            if record.is_terminal and (self.orphaned or not self.future.done()):
                self.orphaned = False  # it ended after all (a last write while closing)
                if not self.future.done():
                    self.future.set_result(None)
                callbacks, self.callbacks = self.callbacks, []
            elif not record.is_terminal and self.future.done():
                # Resumed: waiting starts again.
                self.future = concurrent.futures.Future()
        handle = self.handle
        if handle is not None:
            for fn in callbacks:
                _safe_call(fn, handle)

    def mark_reused(self) -> None:
        self.reused = True

    def orphan(self) -> None:
        """The session closed: nothing moves this task on any more; wake whoever waits."""
        with self.lock:
            if not self.future.done():
                self.orphaned = True
                self.future.set_result(None)


class Task:
    """A generation, running or finished. Returned at once by ``Session.generate``.

    Attributes read the newest state; nothing here blocks unless you call :meth:`wait`,
    :meth:`result` or read :attr:`image` of an unfinished task.
    """

    def __init__(self, session: TaskOwner, state: TaskState) -> None:
        self._session = session
        self._state = state
        state.handle = self

    # -- state --------------------------------------------------------------------

    @property
    def record(self) -> TaskRecord:
        """The newest local record of this task."""
        return self._state.record

    @property
    def reused(self) -> bool:
        """True when the last ``generate`` that returned this task did not send a request:
        an identical earlier request's task (done or still running) was handed back."""
        return self._state.reused

    @property
    def session(self) -> TaskOwner:
        return self._session

    @property
    def id(self) -> str:
        """The server's task id once known, else the local id."""
        return self._state.record.task_id or self._state.record.local_id

    @property
    def local_id(self) -> str:
        return self._state.record.local_id

    @property
    def task_id(self) -> str | None:
        return self._state.record.task_id

    @property
    def status(self) -> TaskStatus:
        return self._state.record.status

    @property
    def prompt(self) -> str:
        return self._state.record.prompt

    @property
    def model(self) -> str:
        return self._state.record.model

    @property
    def error(self) -> str | None:
        """Why the task ended badly, or ``None``."""
        return self._state.record.error

    @property
    def cost(self) -> Decimal | None:
        """Credits the server charged (``consumed``), when known."""
        return self._state.record.consumed

    @property
    def images(self) -> list[ImageRecord]:
        """The images on disk (empty until the task succeeded)."""
        return list(self._state.record.images)

    @property
    def paths(self) -> list[str]:
        return [image.path for image in self._state.record.images]

    @property
    def path(self) -> str | None:
        """The first image's file, or ``None``."""
        images = self._state.record.images
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
        rec = self._state.record
        if rec.finished_at is not None:
            return max(0.0, rec.finished_at - rec.created_at)
        return max(0.0, time.time() - rec.created_at)

    def done(self) -> bool:
        """True when the task has ended (any terminal state)."""
        state = self._state
        return state.future.done() and not state.orphaned

    # -- waiting ------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Task:
        """Block until the task ends, and return it (whatever the outcome).

        Raises:
            TimeoutError: only when ``timeout`` seconds pass first; the task goes on.
            RuntimeError: when called on the engine thread (it would deadlock), or when the
                session is closed (before or during the wait) with the task unfinished.
        """
        if self._session.in_engine_thread() and not self.done():
            raise RuntimeError("Task.wait() cannot be called from a done callback; use done()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            future = self._state.future
            if self._state.orphaned:
                self._session.after_wait()  # what did finish is shown final all the same
                raise self._closed_error()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._session.after_wait()  # outputs final, sent from the waiting thread
                if future.done() and not self._state.orphaned:
                    return self
                if self._state.orphaned:
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
            if future is self._state.future:  # not re-armed by a resume meanwhile
                self._session.after_wait()  # outputs final, sent from the waiting thread
                if self._state.orphaned:
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
        return list(self._state.record.images)

    def exception(self) -> Exception | None:
        """The error :meth:`result` would raise for a finished task, or ``None``."""
        rec = self._state.record
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
            return SubmitOutcomeUnknownError(message, task_id=self._state.record.task_id)
        if status is TaskStatus.NOT_SENT:
            return TaskError(f"the task was not sent: {message}", task_id=self.id)
        return None

    def __await__(self) -> Generator[Any, None, Task]:
        while True:
            future = self._state.future
            if self._state.orphaned:
                raise self._closed_error()
            yield from asyncio.wrap_future(future).__await__()
            if future is self._state.future:
                # Subscribers catch up, waited for off this loop: a slow view must not stall
                # the caller's loop (in a notebook, the kernel's).
                loop = asyncio.get_running_loop()
                yield from loop.run_in_executor(None, self._session.events_delivered).__await__()
                if self._state.orphaned:
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
        with self._state.lock:
            if not self.done():
                self._state.callbacks.append(fn)
                return
        _safe_call(fn, self)

    def resume(self) -> bool:
        """Poll this task again: after a timeout, a cancel, 404s for a while, or a success
        whose images could not be fetched or were not in the answer.

        Returns False when there is nothing to resume (never sent, or finished for good).
        Nothing is submitted again.
        """
        return self._session.resume_task(self)

    def cancel(self) -> bool:
        """Stop polling and mark the task abandoned. The API has no cancel: the server may
        still finish and charge it; ``task.resume()`` picks it up again."""
        return self._session.cancel_task(self)

    @property
    def parents(self) -> list[Task]:
        """The tasks whose results this task used as references, oldest first (joined by the
        images' content: a reference made from a stored result, its file or its bytes)."""
        return self._session.related_tasks(self, parents=True)

    @property
    def children(self) -> list[Task]:
        """The tasks that used a result of this task as a reference, oldest first
        (``session.history.lineage(task)`` shows the whole edit tree)."""
        return self._session.related_tasks(self, parents=False)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
        """Save copies of the images that carry their recipe; return the paths written.

        The copies hold the service's bytes (pixels untouched) plus metadata: the prompt,
        model, options, task ids, references, the package version (read it back with
        ``nanobanana_jupyter.read_provenance(path)``; re-run it with
        ``session.generate_like(path)``). Waits for the task if it is still running.

        Args:
            path: a file name, numbered (``cat-1.png``, ``cat-2.png``...) when there are
                several images, its suffix added when missing; or a folder (an existing one,
                or ending in ``/``), the files then named from the task id.
            overwrite: replace existing files; by default an existing file is refused.

        Raises:
            ValidationError: a file exists (and not ``overwrite``), or the suffix names
                another format than the image's (nothing is re-encoded); nothing written.
            The errors of :meth:`result`, when the task ended badly.
        """
        from nanobanana_jupyter._store.export import save_images, targets_for

        self.result()
        record = self._state.record
        if not record.images:
            raise TaskUnavailableError("the task succeeded but returned no image", task_id=self.id)
        targets = targets_for(record, path)
        return save_images(record, record.images, targets, overwrite=overwrite)

    # -- ratings, tags, note (kept in the history, read afresh each time) -----------

    @property
    def rating(self) -> int | None:
        """Stars from 0 to 5 given with :meth:`rate`, or ``None``; as stored now, so a
        rating given in another kernel on the same data directory shows here too."""
        return self._session.history.annotation(self).rating

    @property
    def tags(self) -> list[str]:
        """The tags given with :meth:`tag`, sorted, as stored now."""
        return list(self._session.history.annotation(self).tags)

    @property
    def note(self) -> str | None:
        """A free-text note (set with ``task.note = "..."``; ``None`` removes it)."""
        return self._session.history.annotation(self).note

    @note.setter
    def note(self, text: str | None) -> None:
        self._session.history.set_note(self, text)

    def rate(self, rating: int | None) -> Task:
        """Give the task 0 to 5 stars (``None`` clears the rating); returns the task.

        Raises:
            ValidationError: not a whole number from 0 to 5 (a bool is refused too).
        """
        self._session.history.rate(self, rating)
        return self

    def tag(self, *names: str) -> Task:
        """Add tags (``task.tag("portrait", "keep")``); returns the task. A tag is stripped
        and lower-cased, at most 64 characters.

        Raises:
            ValidationError: an empty or overlong tag, or one that is not a string.
        """
        self._session.history.tag(self, *names)
        return self

    def untag(self, *names: str) -> Task:
        """Remove tags (one the task does not have is ignored); returns the task."""
        self._session.history.untag(self, *names)
        return self

    # -- display ------------------------------------------------------------------

    def __repr__(self) -> str:
        return presenter.text(self, f"<Task {self.id} {self.status.value}>")

    def _ipython_display_(self) -> None:
        # IPython calls this instead of sending a result of its own: one output per cell. A
        # task already shown live in the running cell is not shown again; one shown in a
        # later cell gets a card that stays current while it runs.
        presenter.show(self)

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
