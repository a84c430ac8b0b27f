"""One progress model for several tasks, shown as the notebook's batch line (text and HTML)
and as the command's status line on a terminal.

:class:`Progress` counts (done, failed, total, elapsed); :class:`TerminalProgress` writes it
to a stream, rewritten in place when the stream is a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from nanobanana_jupyter._wire.models import TaskStatus

from .html import escape
from .words import status_label, terminal_text

__all__ = ["BAR_WIDTH", "Progress", "TerminalProgress"]

BAR_WIDTH = 20


@dataclass(frozen=True)
class Progress:
    """Where a batch of tasks stands.

    Make one with :meth:`of` from objects with ``status`` (a :class:`TaskStatus`) and
    ``done()``, e.g. :class:`~nanobanana_jupyter.Task` handles.
    """

    total: int
    done: int
    succeeded: int
    #: ``(status words, count)`` of the tasks still running, sorted by the words.
    running: tuple[tuple[str, int], ...] = ()
    #: The distinct status values (``in_progress``, ``success``) of every task, sorted.
    states: tuple[str, ...] = ()
    #: Seconds since the batch started, when the caller knows.
    elapsed: float | None = None

    @classmethod
    def of(cls, tasks: Iterable[Any], *, elapsed: float | None = None) -> Progress:
        """Count ``tasks`` (objects with ``status`` and ``done()``)."""
        items = list(tasks)
        counts: dict[str, int] = {}
        done = succeeded = 0
        for task in items:
            if task.done():
                done += 1
            else:
                label = status_label(task.status)
                counts[label] = counts.get(label, 0) + 1
            if task.status is TaskStatus.SUCCESS:
                succeeded += 1
        return cls(
            total=len(items),
            done=done,
            succeeded=succeeded,
            running=tuple(sorted(counts.items())),
            states=tuple(sorted({str(TaskStatus(t.status).value) for t in items})),
            elapsed=elapsed,
        )

    @property
    def failed(self) -> int:
        """Tasks that ended without images."""
        return self.done - self.succeeded

    @property
    def percent(self) -> int:
        """How much is done, 0 to 100 (100 for an empty batch)."""
        return round(100 * self.done / self.total) if self.total else 100

    def bar(self, width: int = BAR_WIDTH) -> str:
        """``[#######.............]``: one ``#`` per done share of ``width``."""
        filled = round(width * self.done / self.total) if self.total else width
        return f"[{'#' * filled}{'.' * (width - filled)}]"

    def summary(self) -> str:
        """``2/3 done · 1 without images · 1 generating``."""
        parts = [f"{self.done}/{self.total} done"]
        if self.failed:
            parts.append(f"{self.failed} without images")
        running = ", ".join(f"{n} {label}" for label, n in self.running)
        if running:
            parts.append(running)
        return " · ".join(parts)

    def text(self) -> str:
        """The notebook's batch line as plain text: the bar and the summary."""
        return f"{self.bar()} {self.summary()}"

    def html(self) -> str:
        """The notebook's batch line as escaped HTML (a bar and the summary), no script."""
        return (
            '<div class="tex2jax_ignore mathjax_ignore" style="font-size:0.9em;margin:2px 0">'
            '<div style="display:inline-block;vertical-align:middle;width:12em;height:0.6em;'
            'background:rgba(128,128,128,0.2);border-radius:3px;overflow:hidden">'
            f'<div style="width:{self.percent}%;height:100%;background:#1a64c8"></div></div> '
            f"<span>{escape(self.summary())}</span></div>"
        )

    def terminal_line(self) -> str:
        """The command's status line: ``[####....] 1/2 in_progress, success   3.2 s``."""
        elapsed = "" if self.elapsed is None else f" {self.elapsed:5.1f} s"
        return terminal_text(
            f"{self.bar()} {self.done}/{self.total} {', '.join(self.states)}{elapsed}"
        )


class TerminalProgress:
    """One status line on a stream (stderr), rewritten in place when it is a terminal.

    Elsewhere (a pipe, a log) a line is written only when the counts or the states change.
    Not tqdm, on purpose: README's Install section says why.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = ""

    def show(self, progress: Progress) -> None:
        line = progress.terminal_line()
        if self._tty:
            self._stream.write("\r" + line.ljust(len(self._last)))
        elif line.split(" ")[1:3] != self._last.split(" ")[1:3]:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._last = line

    def end(self) -> None:
        """End the line in place (a terminal), so what follows starts on its own line."""
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()
