"""The ``nanobanana`` command: the same core, for people outside notebooks.

    nanobanana generate "a cat in a banana costume" --aspect-ratio 16:9 --out pictures/
    nanobanana generate "the same cat, at night" --ref @last --sandbox
    nanobanana generate "four cats" -n 4 --budget 2
    nanobanana balance
    nanobanana history --limit 20
    nanobanana export shared/ --tag poster --rating 4
    nanobanana search red fox --tag keep --rating 4-5 --since 3d
    nanobanana rate @last 5
    nanobanana tag 7f3a portrait keep
    nanobanana resume
    nanobanana sandbox --port 8765

Progress goes to stderr (one line, rewritten in place on a terminal); the saved image paths
go to stdout, one per line, so the command composes with other tools.

Everything printed passes through :func:`terminal_text`: task ids, prompts and failure
reasons come from the server or the history, and an escape sequence in them would drive the
terminal (recolour it, retitle it, forge a hyperlink or a line). Files copied with ``--out``
are named by their content hash, never by the server's task id, and carry their recipe
(``read_provenance``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from nanobanana_jupyter._core.curation import (
    add_search_options,
    named_task,
    rating_word,
    search_request,
)
from nanobanana_jupyter._core.export_selection import parse_rating, parse_since, select_for_export
from nanobanana_jupyter._core.session import Session
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._display.annotations import annotation_text
from nanobanana_jupyter._display.balance import balance_words
from nanobanana_jupyter._display.bundles import shown_as
from nanobanana_jupyter._display.html import cost_words
from nanobanana_jupyter._display.progress import Progress, TerminalProgress
from nanobanana_jupyter._display.search import search_lines, search_summary
from nanobanana_jupyter._display.words import (
    format_cost,
    format_time,
    plural,
    reuse_words,
    shorten,
    terminal_text,
    unknown_option,
)
from nanobanana_jupyter._store.export import save_images
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.errors import (
    MissingAPIKeyError,
    NanoBananaError,
    TaskLookupError,
    UnknownTaskError,
    ValidationError,
)
from nanobanana_jupyter._wire.models import ASPECT_RATIOS, IMAGE_SIZES

__all__ = ["main", "terminal_text"]

# How long a wait lasts at most before the progress line is redrawn.
_PROGRESS_SLICE = 0.2
# The suffixes the image store gives its files; anything else is dropped from a copy's name.
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})


def _say(text: object, stream: TextIO | None = None) -> None:
    """Print one line of text, cleaned for the terminal (stdout unless ``stream``)."""
    print(terminal_text(text), file=sys.stdout if stream is None else stream)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) and exit with 2."""

    def error(self, message: str) -> NoReturn:
        _say(f"{self.prog}: {message} ({self.prog} --help lists the options)", sys.stderr)
        sys.exit(2)


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command's parser, and each subcommand's by name."""
    # --sandbox is taken before the subcommand and after it. The subcommands' copy leaves
    # the namespace alone unless given (SUPPRESS), so it never resets the top-level one.
    sandbox = _Parser(add_help=False)
    sandbox.add_argument(
        "--sandbox",
        action="store_true",
        default=argparse.SUPPRESS,
        help="use a local sandbox server (offline, no key, pretend credits)",
    )
    parser = _Parser(
        prog="nanobanana",
        description="Generate images with Nano Banana (defapi.org) from the terminal.",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="use a local sandbox server (offline, no key, pretend credits); also after "
        "the subcommand",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate", parents=[sandbox], help="generate image(s) and print their paths"
    )
    gen.add_argument("prompt", help="what to draw (in quotes when it has several words)")
    gen.add_argument("--model", "-m")
    gen.add_argument(
        "--ref",
        "-r",
        action="append",
        default=[],
        help="reference image (<= 4): a URL, a file, @last, or @<task id or its first characters>",
    )
    gen.add_argument("--aspect-ratio", "-a", choices=ASPECT_RATIOS)
    gen.add_argument("--size", "-s", type=lambda s: s.strip().upper(), choices=IMAGE_SIZES)
    gen.add_argument("-n", type=int, default=1, help="how many samples (1-16)")
    gen.add_argument("--out", "-o", type=Path, help="also copy the images into this directory")
    gen.add_argument("--force", "-f", action="store_true", help="generate again even if cached")
    gen.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")
    gen.add_argument(
        "--budget",
        metavar="CREDITS",
        help="spend at most this many credits in this run (what is in flight counted); "
        "a request over it is refused and nothing is sent",
    )

    hist = sub.add_parser("history", parents=[sandbox], help="list past tasks, newest first")
    hist.add_argument("--limit", type=int, default=20)
    hist.add_argument("--status", help="only tasks in this status (e.g. success, failed)")

    resume = sub.add_parser(
        "resume", parents=[sandbox], help="pick up unfinished tasks and wait for them"
    )

    balance = sub.add_parser(
        "balance", parents=[sandbox], help="show the account's credits (GET /api/user)"
    )

    export = _export_parser(sub, sandbox)
    find = sub.add_parser(
        "search", parents=[sandbox], help="find tasks by prompt words, tags, rating, time"
    )
    add_search_options(find)
    curating: dict[str, argparse.ArgumentParser] = {"search": find}
    for name, what, words in (
        ("rate", "give a task 0 to 5 stars (none clears)", ("rating",)),
        ("tag", "add tags to a task", ("names",)),
        ("untag", "remove tags from a task", ("names",)),
        ("note", 'set a task\'s note ("" removes it)', ("text",)),
    ):
        command = sub.add_parser(name, parents=[sandbox], help=what)
        command.add_argument("task", help="@last, a task id, or its first characters")
        if words == ("rating",):
            command.add_argument("rating", help="0 to 5, or none")
        else:
            command.add_argument(words[0], nargs="+")
        curating[name] = command

    sand = sub.add_parser(
        "sandbox", parents=[sandbox], help="run the sandbox server in the foreground"
    )
    sand.add_argument("--port", type=int, default=0)
    commands = {"generate": gen, "history": hist, "resume": resume, "sandbox": sand}
    return parser, {**commands, **curating, "balance": balance, "export": export}


def _export_parser(sub: Any, sandbox: argparse.ArgumentParser) -> argparse.ArgumentParser:
    export: argparse.ArgumentParser = sub.add_parser(
        "export",
        parents=[sandbox],
        help="write a folder to share: index.html (offline contact sheet), images, history.csv",
    )
    export.add_argument("out", type=Path, help="the folder to write (or the .zip, --format zip)")
    export.add_argument("--format", choices=("html", "zip"), default="html")
    export.add_argument("--search", metavar="TEXT", help="only tasks whose prompt has these words")
    export.add_argument(
        "--tag", action="append", default=[], help="only tasks with this tag (repeatable: all)"
    )
    export.add_argument(
        "--rating", type=_stars, metavar="N", help="only tasks rated N stars or more (0-5)"
    )
    export.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only tasks created since then: 2026-01-31, 2026-01-31T14:05, 7d or 12h",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return export


def _stars(text: str) -> int:
    try:
        return parse_rating(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("--rating: ")) from None


def _since(text: str) -> float:
    try:
        return parse_since(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("--since ")) from None


def _leftover_error(
    extras: Sequence[str], args: argparse.Namespace, parser: argparse.ArgumentParser
) -> str:
    """The one line for what no option took: a mistyped option (with the closest one), or
    a word after the prompt."""
    sends = args.command == "generate"
    help_hint = f"nanobanana {args.command} --help lists the options"
    for token in extras:
        if token.startswith("-") and len(token) > 1:
            # argparse lists its options nowhere public; _actions is stable since 3.2.
            actions = parser._actions  # noqa: SLF001
            known = [o for action in actions for o in action.option_strings]
            return unknown_option(token, known, help_hint=help_hint, nothing_sent=sends)
    word = extras[0]
    if sends:
        whole = " ".join([args.prompt, *extras])
        return (
            f"unexpected word {word!r}; a prompt of several words goes in quotes: "
            f"nanobanana generate {whole!r}; nothing was sent"
        )
    return f"unexpected word {word!r} ({help_hint})"


def _generate(session: Session, args: argparse.Namespace) -> int:
    if args.budget is not None:
        session.budget = args.budget  # refused in one line when it is no number of credits
    tasks: list[Task] = session.generate(
        args.prompt,
        model=args.model,
        images=[_reference(session, ref, sandbox=args.sandbox) for ref in args.ref],
        aspect_ratio=args.aspect_ratio,
        image_size=args.size,
        force=args.force,
        n=args.n,
    )
    _wait_showing(tasks, args.timeout)
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
                path = _copy_into(args.out, task.record, image)
            _say(path)
        if task.cost is not None:
            _say(f"{task.id}: {cost_words(task.record, **shown_as(task))}", sys.stderr)
    return status


def _reference(session: Session, ref: str, *, sandbox: bool) -> object:
    """What ``--ref`` names (``@last``, ``@<id or prefix>``, a URL, a file), as the magic reads
    it; an id found nowhere says which history was searched and how to list its ids."""
    if ref.startswith("@") and ref != "@last":
        try:
            return session.get(ref[1:])
        except UnknownTaskError as exc:
            where = _which_history(sandbox)
            raise ValidationError(f"--ref {ref}: no such task {exc.query!r} in {where}") from None
        except TaskLookupError as exc:
            raise ValidationError(f"--ref {ref}: {exc.message}") from None
    try:
        return session.resolve_reference(ref)
    except ValidationError as exc:
        raise ValidationError(f"--ref {exc.message}") from None


def _which_history(sandbox: bool) -> str:
    if sandbox:
        return "the sandbox's history; nanobanana --sandbox history lists its ids"
    return (
        "the history; nanobanana history lists its ids (a sandbox task? add "
        "--sandbox: the sandbox keeps its own history)"
    )


def _wait_showing(tasks: Sequence[Task], timeout: float | None) -> None:
    """Wait for ``tasks`` (at most ``timeout`` seconds), the progress line on stderr.

    Waits on the tasks themselves, a slice at a time, so the line moves on at least every
    slice and the wait ends as soon as the last task does.
    """
    progress = TerminalProgress(sys.stderr)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    while True:
        progress.show(Progress.of(tasks, elapsed=time.monotonic() - started))
        running = [t for t in tasks if not t.done()]
        remaining = None if deadline is None else deadline - time.monotonic()
        if not running or (remaining is not None and remaining <= 0):
            break
        slice_ = _PROGRESS_SLICE if remaining is None else min(_PROGRESS_SLICE, remaining)
        with contextlib.suppress(TimeoutError):
            running[0].wait(slice_)
    progress.end()


def _copy_into(directory: Path, record: TaskRecord, image: ImageRecord) -> Path:
    """Copy an image into ``directory``, named by its content hash; return the new path.

    The copy carries its recipe (written by the same function as ``task.save``). The name
    never comes from the server (a task id may be ``../../x`` or absolute), and the target
    is checked to be directly inside ``directory`` before anything is written.
    """
    source, sha256 = Path(image.path), image.sha256
    digest = "".join(c for c in sha256.lower() if c in "0123456789abcdef")[:16]
    if not digest:
        raise NanoBananaError(f"image {source.name!r} has no content hash to name its copy")
    suffix = source.suffix.lower() if source.suffix.lower() in _IMAGE_SUFFIXES else ""
    target = directory / f"{digest}{suffix}"
    directory.mkdir(parents=True, exist_ok=True)
    if target.resolve().parent != directory.resolve():
        raise NanoBananaError(f"refusing to write {target}: it is not inside {directory}")
    # The name is the content's, so a file already there is this image: replaced in place.
    return save_images(record, [image], [target], overwrite=True)[0]


def _history(session: Session, args: argparse.Namespace) -> int:
    history = session.history
    if args.status:
        history = history.filter(status=args.status)
    for record in history.latest(args.limit):
        when = format_time(record.created_at)
        cost = "" if record.consumed is None else f"{record.consumed} cr"
        reused = f"{record.reuses}×" if record.reuses else ""
        prompt = shorten(record.prompt, 50)
        task_id = terminal_text(record.task_id or "-")
        _say(
            f"{when}  {record.status.value:<14} {cost:>8} {reused:>4}  {task_id:<40} "
            f"{terminal_text(prompt)}"
        )
    pretend = history.is_sandbox
    total = f"{plural(len(history), 'task')}, {format_cost(history.total_cost, pretend=pretend)}"
    again = reuse_words(history.reuses, history.reused_cost, pretend=pretend)
    _say(f"{total}; {again}" if again else total, sys.stderr)
    return 0


def _export(session: Session, args: argparse.Namespace) -> int:
    history, tasks = select_for_export(
        session.history, search=args.search, tags=args.tag, rating=args.rating, since=args.since
    )
    count = len(history) if tasks is None else len(tasks)
    try:
        written = history.export(args.out, tasks, format=args.format, overwrite=args.overwrite)
    except OSError as exc:
        _say(f"nanobanana: cannot write the export: {exc}; nothing was written", sys.stderr)
        return 1
    _say(written)
    _say(
        f"exported {plural(count, 'task')}: open {written / 'index.html'}"
        if args.format == "html"
        else f"exported {plural(count, 'task')}",
        sys.stderr,
    )
    return 0


def _search(session: Session, args: argparse.Namespace) -> int:
    request = search_request(args, now=time.time())
    history = session.history
    records = request.run(history)
    for line in search_lines(records, history.annotations(records)):
        _say(line)
    _say(" · ".join(search_summary(request, len(records))), sys.stderr)
    return 0


def _curate(session: Session, args: argparse.Namespace) -> int:
    """rate, tag, untag, note: change the task, then say what it has now (stdout)."""
    try:
        task = named_task(args.task, last=session.last, get=session.get)
    except UnknownTaskError as exc:
        where = _which_history(args.sandbox)
        raise ValidationError(f"{args.command}: no such task {exc.query!r} in {where}") from None
    except NanoBananaError as exc:
        raise ValidationError(f"{args.command}: {exc.message}") from None
    history = session.history
    if args.command == "rate":
        annotation = history.rate(task, rating_word(args.rating))
    elif args.command == "tag":
        annotation = history.tag(task, *args.names)
    elif args.command == "untag":
        annotation = history.untag(task, *args.names)
    else:
        annotation = history.set_note(task, " ".join(args.text))
    _say(f"{task.id}: {annotation_text(annotation) or 'no rating, tags or note'}")
    return 0


def _balance(session: Session) -> int:
    try:
        value = session.balance()
    except TimeoutError as exc:
        _say(f"nanobanana: cannot read the balance: {exc}", sys.stderr)
        return 1
    _say(balance_words(value, pretend=session.is_sandbox))
    return 0


def _resume(session: Session) -> int:
    tasks = session.resume()
    if not tasks:
        _say("nothing to resume", sys.stderr)
        return 0
    _wait_showing(tasks, None)
    for task in tasks:
        for image in task.images:
            _say(image.path)
    return 0


MISSING_KEY_REMEDY = (
    "no API key found: set NANOBANANA_API_KEY in the environment "
    "(export NANOBANANA_API_KEY=dk-...) or put NANOBANANA_API_KEY=dk-... in a .env file in "
    "this directory; no key? try it offline (pretend credits): nanobanana --sandbox generate "
    '"a prompt" (--sandbox also works after the subcommand)'
)
"""What the terminal says without a key (the notebook's remedies do not work here)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nanobanana`` command; returns the exit status."""
    parser, commands = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _say(f"nanobanana: {_leftover_error(extras, args, commands[args.command])}", sys.stderr)
        return 2
    if args.command == "sandbox":
        from nanobanana_jupyter.sandbox.__main__ import main as sandbox_main

        return sandbox_main(["--port", str(args.port), "--accept-any-key"])
    try:
        session = Session.sandbox(quiet=True) if args.sandbox else Session()
    except MissingAPIKeyError:
        _say(f"nanobanana: {MISSING_KEY_REMEDY}", sys.stderr)
        return 2
    except NanoBananaError as exc:
        _say(f"nanobanana: {exc.message}", sys.stderr)
        return 2
    try:
        if args.command == "generate":
            return _generate(session, args)
        if args.command == "history":
            return _history(session, args)
        if args.command == "balance":
            return _balance(session)
        if args.command == "export":
            return _export(session, args)
        if args.command == "search":
            return _search(session, args)
        if args.command in ("rate", "tag", "untag", "note"):
            return _curate(session, args)
        return _resume(session)
    except MissingAPIKeyError:
        _say(f"nanobanana: {MISSING_KEY_REMEDY}", sys.stderr)
        return 2
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
