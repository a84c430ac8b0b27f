"""The ``nanobanana`` command: the same core, for people outside notebooks.

    nanobanana generate "a cat in a banana costume" --aspect-ratio 16:9 --out pictures/
    nanobanana history --limit 20
    nanobanana resume
    nanobanana sandbox --port 8765

Progress goes to stderr (one line, rewritten in place on a terminal); the saved image paths
go to stdout, one per line, so the command composes with other tools.

Everything printed passes through :func:`terminal_text`: task ids, prompts and failure
reasons come from the server or the history, and an escape sequence in them would drive the
terminal (recolour it, retitle it, forge a hyperlink or a line). Files copied with ``--out``
are named by their content hash, never by the server's task id.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from nanobanana_jupyter._core.session import Session
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._wire.errors import NanoBananaError
from nanobanana_jupyter._wire.models import ASPECT_RATIOS, IMAGE_SIZES

__all__ = ["main", "terminal_text"]

# Escape sequences a terminal acts on: CSI (ESC [ or the C1 byte 0x9b), strings ended by BEL
# or ST (OSC, DCS, SOS, PM, APC: ESC ] P X ^ _ or their C1 bytes), and two-character escapes.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -~]"
)
# Whatever control is left (C0, DEL, C1) and the bidirectional overrides (which reorder what
# is shown); line breaks and tabs become spaces, so one message stays one line.
_WHITESPACE_CONTROL = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# The suffixes the image store gives its files; anything else is dropped from a copy's name.
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})


def terminal_text(text: object) -> str:
    """``text`` fit for a terminal: no escape sequence, no control character, one line."""
    cleaned = _ESCAPE_SEQUENCE.sub("", str(text))
    return _CONTROL.sub("", _WHITESPACE_CONTROL.sub(" ", cleaned))


def _say(text: object, stream: TextIO | None = None) -> None:
    """Print one line of text, cleaned for the terminal (stdout unless ``stream``)."""
    print(terminal_text(text), file=sys.stdout if stream is None else stream)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanobanana",
        description="Generate images with Nano Banana (defapi.org) from the terminal.",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="use a local sandbox server (offline, no key, no credits)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate image(s) and print their paths")
    gen.add_argument("prompt", help="what to draw")
    gen.add_argument("--model", "-m")
    gen.add_argument("--ref", "-r", action="append", default=[], help="reference image (<= 4)")
    gen.add_argument("--aspect-ratio", "-a", choices=ASPECT_RATIOS)
    gen.add_argument("--size", "-s", choices=IMAGE_SIZES)
    gen.add_argument("-n", type=int, default=1, help="how many samples (1-16)")
    gen.add_argument("--out", "-o", type=Path, help="also copy the images into this directory")
    gen.add_argument("--force", "-f", action="store_true", help="generate again even if cached")
    gen.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")

    hist = sub.add_parser("history", help="list past tasks, newest first")
    hist.add_argument("--limit", type=int, default=20)
    hist.add_argument("--status", help="only tasks in this status (e.g. success, failed)")

    sub.add_parser("resume", help="pick up unfinished tasks and wait for them")

    sand = sub.add_parser("sandbox", help="run the sandbox server in the foreground")
    sand.add_argument("--port", type=int, default=0)
    return parser


class _Progress:
    """One status line on stderr, rewritten in place when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = ""

    def show(self, tasks: Sequence[Task], started: float) -> None:
        done = sum(t.done() for t in tasks)
        states = ", ".join(sorted({t.status.value for t in tasks}))
        width = 20
        filled = round(width * done / len(tasks))
        line = terminal_text(
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{len(tasks)} "
            f"{states} {time.monotonic() - started:5.1f} s"
        )
        if self._tty:
            self._stream.write("\r" + line.ljust(len(self._last)))
        elif line.split(" ")[1:3] != self._last.split(" ")[1:3]:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._last = line

    def end(self) -> None:
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()


def _generate(session: Session, args: argparse.Namespace) -> int:
    tasks: list[Task] = session.generate(
        args.prompt,
        model=args.model,
        images=[session.resolve_reference(ref) for ref in args.ref],
        aspect_ratio=args.aspect_ratio,
        image_size=args.size,
        force=args.force,
        n=args.n,
    )
    progress = _Progress(sys.stderr)
    started = time.monotonic()
    deadline = started + args.timeout
    while not all(t.done() for t in tasks) and time.monotonic() < deadline:
        progress.show(tasks, started)
        time.sleep(0.2)
    progress.show(tasks, started)
    progress.end()
    status = 0
    for task in tasks:
        if not task.done():
            _say(f"still running after {args.timeout:g} s: {task.id}", sys.stderr)
            status = 1
            continue
        error = task.exception()
        if error is not None:
            _say(f"{task.id}: {error}", sys.stderr)
            status = 1
            continue
        for image in task.images:
            path = Path(image.path)
            if args.out is not None:
                path = _copy_into(args.out, path, image.sha256)
            _say(path)
        if task.cost is not None:
            _say(f"{task.id}: {task.cost} credits", sys.stderr)
    return status


def _copy_into(directory: Path, source: Path, sha256: str) -> Path:
    """Copy an image into ``directory``, named by its content hash; return the new path.

    The name never comes from the server (a task id may be ``../../x`` or absolute), and the
    target is checked to be directly inside ``directory`` before anything is written.
    """
    digest = "".join(c for c in sha256.lower() if c in "0123456789abcdef")[:16]
    if not digest:
        raise NanoBananaError(f"image {source.name!r} has no content hash to name its copy")
    suffix = source.suffix.lower() if source.suffix.lower() in _IMAGE_SUFFIXES else ""
    target = directory / f"{digest}{suffix}"
    directory.mkdir(parents=True, exist_ok=True)
    if target.resolve().parent != directory.resolve():
        raise NanoBananaError(f"refusing to write {target}: it is not inside {directory}")
    shutil.copyfile(source, target)
    return target


def _history(session: Session, args: argparse.Namespace) -> int:
    history = session.history
    if args.status:
        history = history.filter(status=args.status)
    for record in history.latest(args.limit):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at))
        cost = "" if record.consumed is None else f"{record.consumed} cr"
        prompt = record.prompt if len(record.prompt) <= 50 else record.prompt[:49] + "…"
        task_id = terminal_text(record.task_id or "-")
        _say(f"{when}  {record.status.value:<14} {cost:>8}  {task_id:<40} {terminal_text(prompt)}")
    _say(f"{len(history)} tasks, {history.total_cost} credits", sys.stderr)
    return 0


def _resume(session: Session) -> int:
    tasks = session.resume()
    if not tasks:
        _say("nothing to resume", sys.stderr)
        return 0
    progress = _Progress(sys.stderr)
    started = time.monotonic()
    while not all(t.done() for t in tasks):
        progress.show(tasks, started)
        time.sleep(0.2)
    progress.show(tasks, started)
    progress.end()
    for task in tasks:
        for image in task.images:
            _say(image.path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nanobanana`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "sandbox":
        from nanobanana_jupyter.sandbox.__main__ import main as sandbox_main

        return sandbox_main(["--port", str(args.port), "--accept-any-key"])
    try:
        session = Session.sandbox() if args.sandbox else Session()
    except NanoBananaError as exc:
        _say(f"nanobanana: {exc.message}", sys.stderr)
        return 2
    try:
        if args.command == "generate":
            return _generate(session, args)
        if args.command == "history":
            return _history(session, args)
        return _resume(session)
    except NanoBananaError as exc:
        _say(f"nanobanana: {exc.message}", sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _say("interrupted; unfinished tasks go on: `nanobanana resume`", sys.stderr)
        return 130
    finally:
        session.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
