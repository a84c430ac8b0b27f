"""The ``%nanobanana`` / ``%%nanobanana`` magic: the only module that imports IPython magics.

The magic parses its line, asks the session for tasks, and creates one output slot (a
display id) per task while the cell runs, on the main thread. It returns at once. The engine
then updates those slots in place (status, elapsed time, finally the preview image) from its
own thread, through the display id, so updates land in the right cell even while other
cells run (research/jupyter-async.md section 3). Background code never prints and never
calls ``display()``. The last update is a static mimebundle, so a saved notebook, nbconvert
HTML and GitHub show the image without any widget JavaScript. Headless runners record only
updates sent from the thread running a cell, so every blocking wait ends with a flush that
re-sends each live output's current state from that thread (``LiveOutputs.flush``).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import getpass
import logging
import re
import shlex
import string
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, update_display
from traitlets import Bool, Enum, Float, Int, Unicode, default, observe

from nanobanana_jupyter._core.curation import (
    add_search_options,
    named_task,
    rating_word,
    search_request,
)
from nanobanana_jupyter._core.defaults import get_default_session, set_default_session
from nanobanana_jupyter._core.export_selection import parse_rating, parse_since, select_for_export
from nanobanana_jupyter._core.grid import GRID_NAMES, PROMPT_SEPARATOR, parse_grid, split_prompts
from nanobanana_jupyter._core.session import Session, check_samples
from nanobanana_jupyter._core.support import message_of
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._core.task_list import TaskList
from nanobanana_jupyter._display import present
from nanobanana_jupyter._display.annotations import annotation_text
from nanobanana_jupyter._display.balance import balance_words, budget_words
from nanobanana_jupyter._display.live import LiveOutputs
from nanobanana_jupyter._display.previews import EMBED_MODES, history_thumbs
from nanobanana_jupyter._display.search import search_bundle, search_summary
from nanobanana_jupyter._display.words import plural, unknown_option
from nanobanana_jupyter._wire.errors import NanoBananaError, ValidationError
from nanobanana_jupyter._wire.models import ASPECT_RATIOS, IMAGE_SIZES, KNOWN_MODELS, TaskStatus
from nanobanana_jupyter._wire.settings import ENV, MISSING_KEY_HELP, SecretKey, env_flag

__all__ = ["NanoBananaMagics", "load_ipython_extension", "unload_ipython_extension"]

logger = logging.getLogger("nanobanana_jupyter")

SUBCOMMANDS: dict[str, tuple[int, str]] = {
    "panel": (0, "open the interactive panel"),
    "history": (0, "show the history of tasks (also session.history.to_pandas())"),
    "status": (1, "show one task: %nanobanana status <task id>"),
    "resume": (0, "pick up unfinished tasks after a restart"),
    "wait": (0, "block until every open task has ended"),
    "sandbox": (0, "use a local sandbox server: offline, no key, pretend credits"),
    "models": (0, "list the known model ids"),
    "config": (0, "show the settings (the key only as a fingerprint)"),
    "session": (0, "the session the magic uses, for Python code: s = %nanobanana session"),
    "balance": (0, "show the account's credits (GET /api/user)"),
    "budget": (1, "budget 2.5: spend at most 2.5 credits; budget: show it; budget off"),
    "export": (1, "export OUT [--format zip] [--search T] [--tag T] [--rating N] [--since D]"),
    "help": (0, "this help"),
}
# Curating the history: words of their own, each read by its own small parser (a line that
# starts with one of them is never a prompt; a prompt that does is quoted or follows --).
CURATION: dict[str, str] = {
    "search": "search [TEXT] [--tag T]... [--model M] [--status S] [--rating N or N-M] "
    "[--since DATE] [--until DATE] [--limit K]: find tasks (thumbnails, stars, tags)",
    "rate": "rate ID N: 0 to 5 stars (none clears); ID is @last, an id or its first characters",
    "tag": "tag ID name...: add tags (a tag of several words in quotes)",
    "untag": "untag ID name...: remove tags",
    "note": 'note ID text...: set the task\'s note (note ID "" removes it; note ID shows it)',
}
ONE_WORD_PROMPT_HELP = (
    'A one-word prompt is quoted: %nanobanana "sunset" (or %nanobanana -- sunset, or the '
    "cell form); one bare word is read as a subcommand."
)
OPTIONS_HINT = "%nanobanana? lists the options"
_UNRECOGNIZED = "unrecognized arguments: "
# Subcommands whose one word may be left out (``%nanobanana budget`` shows the budget).
OPTIONAL_WORD = frozenset({"budget"})
_KEY_ON_LINE = re.compile(r"(?:^|\s)--?(?:api[-_]?)?key\b|\bdk-[A-Za-z0-9_-]{6,}", re.IGNORECASE)


def _marked_as_prompt(line: str, words: Sequence[str]) -> bool:
    """True when the line says its words are a prompt: the first is quoted, or ``--`` comes
    before them. Such a line is never a subcommand."""
    first = words[0] if words else ""
    if len(first) >= 2 and first[0] == first[-1] and first[0] in "\"'":
        return True  # the magic's argument split keeps the quotes
    return "--" in line.split()


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        return word[1:-1]
    return word


def _without_trailing_comment(words: list[str]) -> list[str]:
    """Drop a trailing ``# comment`` from a subcommand's line (or a near miss of one).

    IPython hands a line magic its comment, and notebooks say
    ``%nanobanana sandbox   # uncomment to work offline``: that line must run the subcommand,
    never become a paid prompt. A ``#`` in an ordinary prompt stays part of it.
    """
    if "#" not in words[1:]:
        return words
    head = words[: words.index("#", 1)]
    first = head[0].lower()
    if first in SUBCOMMANDS or difflib.get_close_matches(first, list(SUBCOMMANDS), cutoff=0.75):
        return head
    return words


def _unknown_subcommand(word: str) -> str:
    """The one-line refusal of a bare word that is no subcommand (with a did-you-mean)."""
    lowered = word.lower()
    close = difflib.get_close_matches(lowered, list(SUBCOMMANDS), n=1, cutoff=0.6)
    if not close:
        close = [name for name in SUBCOMMANDS if len(lowered) >= 2 and name.startswith(lowered)]
    if lowered in SUBCOMMANDS:  # a subcommand given the wrong number of words
        arity, text = SUBCOMMANDS[lowered]
        if lowered == word and arity:
            return f"{word} needs {arity} more word(s): {text}"
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"unknown subcommand {word!r}{hint}; nothing was sent. For a one-word prompt write "
        f'%nanobanana "{word}" or use the %%nanobanana cell form (%nanobanana help lists the '
        "subcommands)"
    )


_EXAMPLES = {
    "rate": "%nanobanana rate @last 4",
    "tag": "%nanobanana tag @last portrait keep",
    "untag": "%nanobanana untag @last keep",
}


def _without_comment(words: list[str]) -> list[str]:
    """Words up to a trailing ``# comment`` (IPython hands a line magic its comment)."""
    return words[: words.index("#")] if "#" in words else words


class _WordsParser(argparse.ArgumentParser):
    """A parser for a curation word whose errors are one line, not an exit."""

    def error(self, message: str) -> Any:
        raise ValidationError(f"{message} (%nanobanana help shows the words)")


class _StrictFormatter(string.Formatter):
    """``str.format`` over the user namespace: names, attributes and indexing only.

    An unknown name is an error (not a silent passthrough), private attributes are refused,
    and ``{{``/``}}`` stay literal braces.
    """

    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self._namespace = namespace

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            raise UsageError("--expand: positional fields like {} or {0} are not allowed")
        if key not in self._namespace:
            raise UsageError(f"--expand: the name {key!r} is not defined in the notebook")
        return self._namespace[key]

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if re.search(r"\.\s*_", field_name):
            raise UsageError(f"--expand: private attributes are not allowed in {{{field_name}}}")
        try:
            return super().get_field(field_name, args, kwargs)
        except UsageError:
            raise
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise UsageError(f"--expand: cannot resolve {{{field_name}}}: {exc}") from None


class _Kept(str):
    """A field left for later (a grid's ``{field}``), written back as it was."""


class _KeepingFormatter(_StrictFormatter):
    """Fills names from the namespace but writes the fields of ``keep`` back as they were,
    and re-doubles every brace it outputs, so that the result is again a template (the
    grid fills the kept fields, cell by cell)."""

    def __init__(self, namespace: Mapping[str, Any], keep: frozenset[str]) -> None:
        super().__init__(namespace)
        self._keep = keep

    def parse(self, format_string: str) -> Any:
        for literal, field_name, spec, conversion in super().parse(format_string):
            yield _double(literal), field_name, spec, conversion

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if re.split(r"[.\[]", field_name, maxsplit=1)[0] in self._keep:
            return _Kept(field_name), field_name
        return super().get_field(field_name, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if isinstance(value, _Kept):
            return _Kept(f"{value}!{conversion}") if conversion else value
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        if isinstance(value, _Kept):
            return "{" + value + (":" + format_spec if format_spec else "") + "}"
        return _double(super().format_field(value, format_spec))


def _double(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def expand_prompt(
    template: str, namespace: Mapping[str, Any], *, keep: frozenset[str] = frozenset()
) -> str:
    """Fill ``{name}``, ``{obj.attr}`` and ``{seq[0]}`` from the namespace (see --expand).

    With ``keep``, fields naming those are left in place and the result is still a template
    (its literal braces doubled): a grid's ``--grid field=...`` fills them.
    """
    try:
        if keep:
            return _KeepingFormatter(namespace, keep).vformat(template, (), {})
        return _StrictFormatter(namespace).vformat(template, (), {})
    except ValueError as exc:
        raise UsageError(f"--expand: {exc} (write {{{{ and }}}} for literal braces)") from None


@magics_class
class NanoBananaMagics(Magics):
    """``%nanobanana`` and ``%%nanobanana``: generate images from a notebook cell.

    Settings (``%config NanoBananaMagics.<name> = value``) are the traitlets below.
    """

    default_model = Unicode(
        None, allow_none=True, help="Model used when --model is not given (else the session's)."
    ).tag(config=True)
    embed = Enum(
        list(EMBED_MODES),
        "thumb",
        help="What the output embeds: a small preview (thumb), the full image, or none.",
    ).tag(config=True)
    preview_size = Int(512, help="Long side, in pixels, of embedded previews.").tag(config=True)
    wait = Bool(
        help="Block until done (for Run All, nbclient, papermill). Same as --wait. "
        "Default: the NANOBANANA_WAIT environment variable."
    ).tag(config=True)
    timeout = Float(
        600.0, help="Seconds --wait waits at most before returning (the task goes on)."
    ).tag(config=True)

    @default("wait")
    def _default_wait(self) -> bool:
        return env_flag(ENV.WAIT)

    def __init__(
        self,
        shell: Any = None,
        *,
        open_panel: Callable[[Session], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(shell=shell, **kwargs)
        # The views never import each other: %load_ext (the package's top) hands the panel in.
        self._open_panel = open_panel
        self._live: LiveOutputs | None = None
        self._live_session: Session | None = None
        self._tell_display()

    @observe("embed", "preview_size")
    def _embedding_changed(self, change: Any) -> None:
        self._tell_display()

    def _tell_display(self) -> None:
        """A task shown as a cell's result embeds what the cards embed (display layer)."""
        try:
            present.configure(embed=self.embed, side=self.preview_size)
        except ValueError:  # a size no preview can have: cell results keep the last good one
            logger.debug("preview_size %r ignored for cell results", self.preview_size)

    # -- plumbing ---------------------------------------------------------------------

    @property
    def _user_ns(self) -> dict[str, Any]:
        if self.shell is None:
            raise UsageError("the magic needs an IPython shell")
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _session(self) -> Session:
        try:
            return get_default_session()
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None

    def _session_with_key(self) -> Session:
        """The default session; when no key is configured anywhere, ask for one (hidden)."""
        session = self._session()
        if session.settings.api_key is not None:
            return session
        try:
            key = getpass.getpass("NanoBanana API key (hidden, not saved): ")
        except (StdinNotImplementedError, EOFError, OSError):
            key = ""
        if not key.strip():
            raise UsageError(MISSING_KEY_HELP)
        try:
            keyed = Session(settings=session.settings.replace(api_key=SecretKey(key)))
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None
        with contextlib.suppress(NanoBananaError):
            keyed.budget = session.budget  # a budget set before the key came stays
        set_default_session(keyed)
        session.close()
        return keyed

    def _live_for(self, session: Session) -> LiveOutputs:
        if self._live is None or self._live_session is not session:
            if self._live is not None:
                self._live.close()
            self._live = LiveOutputs(session, show=display, update=update_display)
            self._live_session = session
        return self._live

    # -- the magic --------------------------------------------------------------------

    @magic_arguments()
    @argument("words", nargs="*", help="the prompt (line form), or a subcommand")
    @argument("--model", "-m", help="model id, e.g. google/gempix2")
    @argument(
        "--ref",
        "-r",
        action="append",
        default=[],
        help="reference image (up to 4): URL, file path, a variable holding a PIL image or "
        "task, @last, or @<task id>",
    )
    @argument("--aspect-ratio", "-a", help=f"one of {', '.join(ASPECT_RATIOS)}")
    @argument("--size", "-s", help=f"image size: {', '.join(IMAGE_SIZES)} (Pro models)")
    @argument("-n", type=int, default=1, help="how many tasks (samples) to start")
    @argument("--callback-url", help="URL the service POSTs the final state to")
    @argument("-o", "--out", help="store the task (or list of tasks) in this variable")
    @argument("--wait", "-w", action="store_true", help="block until done")
    @argument("--timeout", type=float, help="seconds --wait waits at most")
    @argument("--force", "-f", action="store_true", help="generate again even if cached")
    @argument("--embed", choices=list(EMBED_MODES), help="what the output embeds")
    @argument("--expand", "-e", action="store_true", help="fill {name} from the notebook")
    @argument(
        "--grid",
        "-g",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a compare-grid axis (repeatable): prompt, model, aspect_ratio, image_size, "
        "images, or a {field} of the prompt; values split on commas. Several prompts in the "
        "body, separated by lines of ---, are the grid's rows",
    )
    @line_cell_magic
    def nanobanana(self, line: str, cell: str | None = None) -> Any:
        """Generate images with Nano Banana (defapi.org) without blocking the notebook.

        Cell form (options on the first line, the prompt in the body)::

            %%nanobanana --aspect-ratio 16:9 --ref photo.png -o cat
            A cat in a banana costume, studio light

        Line form (returns the task): ``task = %nanobanana a cat in a hat``.
        Subcommands: %nanobanana panel | history | status ID | resume | wait | sandbox |
        models | config | session | balance | budget [CREDITS | off] | help; curating:
        search [TEXT] [--tag T] [--rating N-M] ... | rate ID N | tag ID name... |
        untag ID name... | note ID text.
        ``s = %nanobanana session`` gives the session the magic uses (``s.history``,
        ``s.get(id)``, ``s.generate(...)``).

        A line of one bare word is always read as a subcommand, so a typo such as
        ``%nanobanana histroy`` is refused ("did you mean history?") and sends nothing. A
        one-word prompt is quoted (``%nanobanana "sunset"``), follows ``--``
        (``%nanobanana -- sunset``), or goes in the body of ``%%nanobanana``, which is
        always the prompt.
        """
        if _KEY_ON_LINE.search(line):
            raise UsageError(
                "an API key never goes on the magic's line (it would be saved in the "
                "notebook): set NANOBANANA_API_KEY in the environment or a .env file"
            )
        if cell is None and line.split(maxsplit=1)[:1] == ["export"]:
            return self._export(line)  # its own options (none of a generation's)
        first = line.split(None, 1)[0] if line.strip() else ""
        if cell is None and first in CURATION:
            return self._curate(first, line.strip()[len(first) :])
        args = self._parse(line)
        words: list[str] = list(args.words)
        marked = cell is None and _marked_as_prompt(line, words)
        if cell is None and not marked:
            words = _without_trailing_comment(words)
        if cell is None and not marked and words and words[0] in SUBCOMMANDS:
            arity = SUBCOMMANDS[words[0]][0]
            optional = len(words) == 1 and words[0] in OPTIONAL_WORD
            if len(words) == 1 + arity or optional:
                return self._subcommand(words[0], words[1:])
        if cell is None and len(words) == 1:
            # One bare word is a subcommand, never a prompt: a typo must not spend credits.
            if not marked:
                raise UsageError(_unknown_subcommand(words[0]))
            words = [_unquote(words[0])]
        prompt = cell if cell is not None else " ".join(words)
        if cell is not None and words:
            raise UsageError(
                f"unexpected words on the %%nanobanana line: {' '.join(words)!r}; "
                "the prompt goes in the cell body"
            )
        if args.grid or (cell is not None and PROMPT_SEPARATOR.search(cell)):
            return self._grid(args, prompt, line_form=cell is None)
        if args.expand:
            prompt = expand_prompt(prompt, self._user_ns)
        prompt = prompt.strip()
        if not prompt:
            raise UsageError(
                "the prompt is empty: write it in the cell body (or after %nanobanana)"
            )
        try:  # before a key is asked for or a reference waited for
            check_samples(args.n)
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None
        session = self._session_with_key()
        model = args.model or self.default_model or None
        try:
            refs = [self._resolve_ref(ref, session) for ref in args.ref]
            tasks: list[Task] = session.generate(
                prompt,
                model=model,
                images=refs,
                aspect_ratio=args.aspect_ratio,
                image_size=args.size,
                callback_url=args.callback_url,
                force=args.force,
                n=args.n,
            )
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None
        live = self._live_for(session)
        embed = args.embed or self.embed
        if len(tasks) > 1:
            live.open_batch(tasks)
        for task in tasks:
            live.open(task, embed=embed, side=self.preview_size)
        result: Task | TaskList = tasks[0] if len(tasks) == 1 else TaskList(tasks)
        self._user_ns["_nanobanana"] = result
        if args.out:
            if not args.out.isidentifier():
                raise UsageError(f"-o {args.out!r} is not a valid variable name")
            self._user_ns[args.out] = result
        if args.wait or self.wait:
            self._wait(tasks, args.timeout if args.timeout is not None else self.timeout)
            live.flush()  # every card's final state, sent from this cell's thread
        if cell is None:
            return result  # shown as nothing more: its cards are in this cell already
        return None

    def _grid(self, args: Any, body: str, *, line_form: bool) -> Any:
        """``--grid`` (and prompts separated by ``---``): one compare grid, shown as the
        cell's one output, a table updated in place."""
        try:
            axes = parse_grid(args.grid)
            prompts = split_prompts(body)
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None
        if args.n != 1:
            raise UsageError(
                "-n does not go with a grid (one task per cell): add a --grid axis instead"
            )
        for name, given, flag in (
            ("model", args.model, "--model"),
            ("aspect_ratio", args.aspect_ratio, "--aspect-ratio"),
            ("image_size", args.size, "--size"),
            ("images", args.ref, "--ref"),
        ):
            if name in axes and given:
                raise UsageError(f"--grid {name} and {flag} are both given: keep one")
        if "prompt" in axes:
            if body.strip():
                raise UsageError(
                    "the prompts are given twice: with --grid prompt= and in the body; keep one"
                )
            prompts = axes["prompt"]
        fill: dict[str, object] = {k: v for k, v in axes.items() if k not in GRID_NAMES}
        if args.expand:
            prompts = [expand_prompt(p, self._user_ns, keep=frozenset(fill)) for p in prompts]
        prompts = [p.strip() for p in prompts]
        if not any(prompts):
            raise UsageError(
                "the prompt is empty: write it in the cell body (or after %nanobanana)"
            )
        session = self._session_with_key()
        try:
            images: object = None
            if "images" in axes:
                images = [self._resolve_ref(ref, session) for ref in axes["images"]]
            elif args.ref:
                images = [[self._resolve_ref(ref, session) for ref in args.ref]]
            grid = session.grid(
                prompts if len(prompts) > 1 or "prompt" in axes else prompts[0],
                model=axes.get("model") or args.model or self.default_model or None,
                aspect_ratio=axes.get("aspect_ratio") or args.aspect_ratio,
                image_size=axes.get("image_size") or args.size,
                images=images,
                fill=fill or None,
                callback_url=args.callback_url,
                force=args.force,
            )
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None
        live = self._live_for(session)
        live.open_grid(grid)
        self._user_ns["_nanobanana"] = grid
        if args.out:
            if not args.out.isidentifier():
                raise UsageError(f"-o {args.out!r} is not a valid variable name")
            self._user_ns[args.out] = grid
        if args.wait or self.wait:
            self._wait(grid.tasks, args.timeout if args.timeout is not None else self.timeout)
            live.flush()
        return grid if line_form else None

    def _parse(self, line: str) -> Any:
        """The magic's arguments; an unknown option is refused naming the closest known one."""
        try:
            return parse_argstring(self.nanobanana, line)
        except UsageError as exc:
            message = str(exc)
            if not message.startswith(_UNRECOGNIZED):
                raise
            typed = [w for w in message[len(_UNRECOGNIZED) :].split() if w.startswith("-")]
            if not typed:
                raise
            parser = self.nanobanana.parser
            # argparse lists its options nowhere public; _actions is stable since 3.2.
            actions = parser._actions  # noqa: SLF001
            known = [o for action in actions for o in action.option_strings]
            raise UsageError(unknown_option(typed[0], known, help_hint=OPTIONS_HINT)) from None

    def _wait(self, tasks: Sequence[Task], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for task in tasks:
            try:
                task.wait(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                print(
                    f"still running after {timeout:g} s: {task.id} (it goes on in the background)"
                )
                return

    def _resolve_ref(self, ref: str, session: Session) -> object:
        """A variable of the notebook, or what the session makes of the text (``@last``,
        ``@<task id>``, a URL or a path)."""
        if ref.isidentifier() and not Path(ref).exists():
            if ref in self._user_ns:
                return self._user_ns[ref]
            raise UsageError(
                f"--ref: no variable or file named {ref!r}; define it in a cell first "
                f"({ref} = ...), or give a file path (photo.png), a URL, @last, or @<task id>"
            )
        try:
            return session.resolve_reference(ref, wait=self.timeout)
        except ValidationError as exc:
            raise UsageError(f"--ref {exc.message}") from None

    def _subcommand(self, name: str, params: list[str]) -> Any:
        if name == "help":
            lines = [f"  %nanobanana {k:<8} {v[1]}" for k, v in SUBCOMMANDS.items()]
            print("%%nanobanana [options] + a prompt in the cell body generates images.")
            print("Options: %nanobanana? lists them. Subcommands:")
            print("\n".join(lines))
            print("Curating the history (ID: @last, a task id, or its first characters):")
            print("\n".join(f"  %nanobanana {text}" for text in CURATION.values()))
            print(ONE_WORD_PROMPT_HELP)
            return None
        if name == "models":
            session_model = None
            with contextlib.suppress(NanoBananaError):
                session_model = get_default_session().settings.model
            for model in KNOWN_MODELS:
                mark = "  (default)" if model == (self.default_model or session_model) else ""
                print(f"{model}{mark}")
            print("Other ids are sent as given, with a warning.")
            return None
        if name == "sandbox":
            sandbox = Session.sandbox(quiet=True)  # it says so here, in its own words
            old = set_default_session(sandbox)
            if old is not None:
                old.close()
            print(
                "*** SANDBOX MODE *** images are drawn offline by a local fake server at "
                f"{sandbox.settings.base_url}; nothing goes to defapi.org and its credits are "
                f"pretend. History: {sandbox.data_dir}. Restart the kernel to leave sandbox mode."
            )
            return None
        if name == "panel":
            if self._open_panel is None:
                raise UsageError("the panel comes with the extension: %load_ext nanobanana_jupyter")
            try:
                return self._open_panel(self._session())
            except NanoBananaError as exc:  # no ipywidgets 8 here: one line saying so
                raise UsageError(exc.message) from None
        session = self._session()
        if name == "session":
            return session  # shown as the cell's result (its repr) unless assigned
        if name == "config":
            for key, value in session.settings.describe().items():
                print(f"{key:>18}: {value}")
            for trait in ("default_model", "embed", "preview_size", "wait", "timeout"):
                print(f"{'magic.' + trait:>18}: {getattr(self, trait)!r}")
            return None
        if name == "history":
            display(session.history)
            return None
        if name == "status":
            try:
                task = session.get(params[0])
            except KeyError as exc:
                raise UsageError(str(exc.args[0])) from None
            self._live_for(session).open(task, embed=self.embed, side=self.preview_size)
            return None
        if name == "resume":
            try:
                tasks = session.resume()
            except NanoBananaError as exc:
                raise UsageError(exc.message) from None
            if not tasks:
                print("nothing to resume")
            live = self._live_for(session)
            for task in tasks:
                live.open(task, embed=self.embed, side=self.preview_size)
            return None
        if name == "wait":
            open_tasks = [t for t in session.tasks if not t.done()]
            self._wait(open_tasks, self.timeout)
            if self._live is not None and self._live_session is session:
                self._live.flush()  # also the cards of tasks that ended before this cell
            if not open_tasks:
                print("no task of this session was running")
                return None
            ended = sum(t.status is TaskStatus.SUCCESS for t in open_tasks)
            print(f"{plural(len(open_tasks), 'task')} ended, {ended} with images")
            return None
        if name in ("balance", "budget"):
            return self._money(name, params, session)
        raise UsageError(f"unknown subcommand {name!r}")  # pragma: no cover

    def _export(self, line: str) -> None:
        """``%nanobanana export OUT [...]``: the options of ``nanobanana export``."""
        try:
            words = shlex.split(line, comments=True)[1:]
        except ValueError as exc:
            raise UsageError(f"export: {exc}") from None
        args = _export_parser().parse_args(words)
        session = self._session()
        try:
            history, tasks = select_for_export(
                session.history,
                search=args.search,
                tags=args.tag,
                rating=None if args.rating is None else parse_rating(args.rating),
                since=None if args.since is None else parse_since(args.since),
            )
            written = history.export(args.out, tasks, format=args.format, overwrite=args.overwrite)
        except NanoBananaError as exc:
            raise UsageError(exc.message) from None
        except OSError as exc:
            raise UsageError(f"cannot write the export: {exc}; nothing was written") from None
        count = len(history) if tasks is None else len(tasks)
        page = f": open {written / 'index.html'}" if args.format == "html" else ""
        print(f"exported {plural(count, 'task')} to {written}{page}")

    # -- curating: search, rate, tag, untag, note ------------------------------------

    def _curate(self, word: str, rest: str) -> None:
        """``search ...``, ``rate ID N``, ``tag ID name...``, ``untag ID name...``,
        ``note ID text``: one line of errors each, prefixed with the word."""
        session = self._session()
        try:
            if word == "search":
                self._search(rest, session)
                return
            if word == "note":
                self._note(rest, session)
                return
            try:
                parts = _without_comment(shlex.split(rest))
            except ValueError as exc:
                raise ValidationError(f"cannot read the words ({exc}); check the quotes") from None
            usage = CURATION[word].split(":", 1)[0]
            wanted = 2 if word == "rate" else None
            if len(parts) < 2 or (wanted is not None and len(parts) != wanted):
                raise ValidationError(f"write %nanobanana {usage}, e.g. {_EXAMPLES[word]}")
            task = named_task(parts[0], last=session.last, get=session.get)
            if word == "rate":
                annotation = session.history.rate(task, rating_word(parts[1]))
            elif word == "tag":
                annotation = session.history.tag(task, *parts[1:])
            else:
                annotation = session.history.untag(task, *parts[1:])
        except NanoBananaError as exc:
            raise UsageError(f"{word}: {exc.message}") from None
        print(f"{task.id}: {annotation_text(annotation) or 'no rating, tags or note'}")

    def _note(self, rest: str, session: Session) -> None:
        parts = rest.strip().split(None, 1)
        if not parts:
            raise ValidationError(f"write %nanobanana {CURATION['note'].split(':')[0]}")
        task = named_task(parts[0], last=session.last, get=session.get)
        if len(parts) == 1:
            note = session.history.annotation(task).note
            print(f"{task.id}: " + ("no note" if note is None else f"note {note!r}"))
            return
        annotation = session.history.set_note(task, _unquote(parts[1].strip()))
        print(f"{task.id}: {annotation_text(annotation) or 'no rating, tags or note'}")

    def _search(self, rest: str, session: Session) -> None:
        """The matching tasks as the cell's one output: the history's table (static,
        escaped, with thumbnails), with text for front ends without HTML."""
        try:
            words = _without_comment(shlex.split(rest))
        except ValueError as exc:
            raise ValidationError(f"cannot read the words ({exc}); check the quotes") from None
        parser = _WordsParser(prog="%nanobanana search", add_help=False)
        add_search_options(parser)
        request = search_request(parser.parse_args(words), now=time.time())
        history = session.history
        records = request.run(history)
        bundle = search_bundle(
            records,
            search_summary(request, len(records)),
            annotations=history.annotations(records),
            thumbs=history_thumbs(records),
            pretend=history.is_sandbox,
        )
        display(bundle, raw=True)

    def _money(self, name: str, params: list[str], session: Session) -> None:
        """``balance`` (asks the API, waits at most the magic's timeout) and ``budget``."""
        pretend = session.is_sandbox
        if name == "balance":
            try:
                value = session.balance(timeout=min(self.timeout, 60.0))
            except (NanoBananaError, TimeoutError) as exc:
                raise UsageError(f"cannot read the balance: {message_of(exc)}") from None
            print(balance_words(value, pretend=session.is_sandbox))
            return
        if params:
            word = params[0].strip()
            try:
                session.budget = None if word.lower() in ("off", "none") else word
            except NanoBananaError as exc:
                raise UsageError(exc.message) from None
        print(budget_words(session.budget_status, pretend=pretend))


class _ExportParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"export: {message} (%nanobanana help lists the subcommands)")


def _export_parser() -> argparse.ArgumentParser:
    parser = _ExportParser(prog="%nanobanana export", add_help=False)
    parser.add_argument("out")
    parser.add_argument("--format", choices=("html", "zip"), default="html")
    parser.add_argument("--search")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--rating")
    parser.add_argument("--since")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def load_ipython_extension(
    ipython: Any, *, open_panel: Callable[[Session], Any] | None = None
) -> None:
    """Register the magic (``%load_ext nanobanana_jupyter``); ``open_panel(session)`` gives
    what ``%nanobanana panel`` shows."""
    # Nothing else happens here: settings are read when the first task starts, so the
    # environment can still change after %load_ext.
    ipython.register_magics(NanoBananaMagics(ipython, open_panel=open_panel))


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo: the default session and its engine stop at exit."""
