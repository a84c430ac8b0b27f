"""The ``nanobanana`` command: the same core, for people outside notebooks.

    nanobanana generate "a cat in a banana costume" --aspect-ratio 16:9 --out pictures/
    nanobanana history --limit 20
    nanobanana resume
    nanobanana sandbox --port 8765

Progress goes to stderr (one line, rewritten in place on a terminal); the saved image paths
go to stdout, one per line, so the command composes with other tools.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ._exceptions import NanoBananaError
from ._models import ASPECT_RATIOS, IMAGE_SIZES
from ._session import Session
from ._task import Task

__all__ = ["main"]


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
        line = (
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
    if not 1 <= args.n <= 16:
        raise NanoBananaError("-n must be between 1 and 16")
    tasks = [
        session.generate(
            args.prompt,
            model=args.model,
            images=args.ref,
            aspect_ratio=args.aspect_ratio,
            image_size=args.size,
            force=args.force,
            variant=i,
        )
        for i in range(args.n)
    ]
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
            print(f"still running after {args.timeout:g} s: {task.id}", file=sys.stderr)
            status = 1
            continue
        error = task.exception()
        if error is not None:
            print(f"{task.id}: {error}", file=sys.stderr)
            status = 1
            continue
        for image in task.images:
            path = Path(image.path)
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                target = args.out / f"{task.id}-{image.sha256[:8]}{path.suffix}"
                shutil.copyfile(path, target)
                path = target
            print(path)
        if task.cost is not None:
            print(f"{task.id}: {task.cost} credits", file=sys.stderr)
    return status


def _history(session: Session, args: argparse.Namespace) -> int:
    history = session.history
    if args.status:
        history = history.filter(status=args.status)
    for record in history.latest(args.limit):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at))
        cost = "" if record.consumed is None else f"{record.consumed} cr"
        prompt = record.prompt if len(record.prompt) <= 50 else record.prompt[:49] + "…"
        print(f"{when}  {record.status.value:<14} {cost:>8}  {record.task_id or '-':<40} {prompt}")
    print(f"{len(history)} tasks, {history.total_cost} credits", file=sys.stderr)
    return 0


def _resume(session: Session) -> int:
    tasks = session.resume()
    if not tasks:
        print("nothing to resume", file=sys.stderr)
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
            print(image.path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nanobanana`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "sandbox":
        from .sandbox.__main__ import main as sandbox_main

        return sandbox_main(["--port", str(args.port), "--accept-any-key"])
    try:
        session = Session.sandbox() if args.sandbox else Session()
    except NanoBananaError as exc:
        print(f"nanobanana: {exc.message}", file=sys.stderr)
        return 2
    try:
        if args.command == "generate":
            return _generate(session, args)
        if args.command == "history":
            return _history(session, args)
        return _resume(session)
    except NanoBananaError as exc:
        print(f"nanobanana: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; unfinished tasks go on: `nanobanana resume`", file=sys.stderr)
        return 130
    finally:
        session.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
