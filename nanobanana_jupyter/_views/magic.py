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

import contextlib
import difflib
import getpass
import logging
import re
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, update_display
from traitlets import Bool, Enum, Float, Int, Unicode, default

from nanobanana_jupyter._core.defaults import get_default_session, set_default_session
from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._core.session import Session
from nanobanana_jupyter._core.task import Task
from nanobanana_jupyter._display.present import show_compact_once
from nanobanana_jupyter._display.render import Preview, batch_bundle, task_bundle
from nanobanana_jupyter._store.records import TaskRecord
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
    "sandbox": (0, "use a local sandbox server: offline, no key, no credits"),
    "models": (0, "list the known model ids"),
    "config": (0, "show the settings (the key only as a fingerprint)"),
    "help": (0, "this help"),
}
ONE_WORD_PROMPT_HELP = (
    'A one-word prompt is quoted: %nanobanana "sunset" (or %nanobanana -- sunset, or the '
    "cell form); one bare word is read as a subcommand."
)
_KEY_ON_LINE = re.compile(r"(?:^|\s)--?(?:api[-_]?)?key\b|\bdk-[A-Za-z0-9_-]{6,}", re.IGNORECASE)
# How often live cards refresh while tasks run (their elapsed time).
TICK_SECONDS = 1.0
MIN_UPDATE_INTERVAL = 0.25


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


def expand_prompt(template: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{name}``, ``{obj.attr}`` and ``{seq[0]}`` from the namespace (see --expand)."""
    try:
        return _StrictFormatter(namespace).vformat(template, (), {})
    except ValueError as exc:
        raise UsageError(f"--expand: {exc} (write {{{{ and }}}} for literal braces)") from None


@dataclass
class _Slot:
    """One live output (a display id) of one task, and what it last showed."""

    display_id: str
    local_id: str
    embed: str
    side: int
    sent_at: float = 0.0
    sent_status: str = ""
    #: The newest state sent, from any thread (see ``_rank``): an older one is never sent.
    sent_rank: tuple[bool, float] = (False, float("-inf"))
    #: The state last sent from a thread running a cell (``open`` or ``flush``).
    flushed: tuple[str, int] | None = None


@dataclass
class _Batch:
    display_id: str
    tasks: list[Task]
    flushed: tuple[int, int] | None = None


def _rank(record: TaskRecord) -> tuple[bool, float]:
    """How new a state is: any final state is newer than every running one."""
    return (record.is_terminal, record.updated_at)


def _shown(record: TaskRecord) -> tuple[str, int]:
    """What a card shows, apart from the elapsed time."""
    return (record.status.value, len(record.images))


def _batch_shown(tasks: Sequence[Task]) -> tuple[int, int]:
    return (sum(t.done() for t in tasks), sum(t.status is TaskStatus.SUCCESS for t in tasks))


class LiveOutputs:
    """The output slots of one session's tasks, updated in place.

    The engine thread updates them as tasks move (throttled). Those updates carry the parent
    header of whatever cell the kernel saw last, so a headless runner (nbclient, papermill,
    ``nbconvert --execute``) drops them; :meth:`flush`, called on the thread running a cell
    after every blocking wait, sends each slot's current state again from that thread, and
    retires the slots that are final. All sends go through one lock, and a slot never sends
    a state older than one it already sent (``_rank``), so a late engine update cannot undo
    a flush.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}  # display id -> slot
        self._by_task: dict[str, list[_Slot]] = {}  # local id -> its slots
        self._ticking = False
        self._batches: dict[str, _Batch] = {}  # display id -> the batch
        self._unsubscribe = session.subscribe(self._on_change)
        self._unflush = session.add_wait_hook(self.flush)

    def close(self) -> None:
        self._unsubscribe()
        self._unflush()

    def open(self, task: Task, *, embed: str, side: int) -> str:
        """Create a slot for ``task`` in the current cell (main thread) and return its id."""
        display_id = f"nanobanana-{uuid.uuid4().hex}"
        with self._lock:
            record = task.record
            data, metadata = self._bundle(record, embed=embed, side=side)
            display(data, raw=True, metadata=metadata, display_id=display_id)
            if record.is_terminal:
                return display_id  # final already, and shown from the cell's own thread
            slot = _Slot(display_id, task.local_id, embed, side)
            slot.sent_at, slot.sent_status = time.monotonic(), record.status.value
            slot.sent_rank, slot.flushed = _rank(record), _shown(record)
            self._slots[display_id] = slot
            self._by_task.setdefault(task.local_id, []).append(slot)
        self._start_ticker()
        return display_id

    def bundle(self, task: Task, *, embed: str, side: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The mimebundle for a task: previews of the chosen size, or none."""
        return self._bundle(task.record, embed=embed, side=side)

    def _bundle(
        self, record: TaskRecord, *, embed: str, side: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        previews: list[Preview] = []
        if embed != "none":
            for image in record.images:
                preview = _preview_for(image.path, image.thumb_path, embed=embed, side=side)
                if preview is not None:
                    previews.append(preview)
        elapsed = None if record.is_terminal else max(0.0, time.time() - record.created_at)
        return task_bundle(record, previews=previews, elapsed=elapsed)

    def open_batch(self, tasks: Sequence[Task]) -> str:
        """One progress line for several tasks (``-n``), above their cards (main thread)."""
        display_id = f"nanobanana-batch-{uuid.uuid4().hex}"
        with self._lock:
            display(batch_bundle(tasks), raw=True, display_id=display_id)
            self._batches[display_id] = _Batch(display_id, list(tasks), _batch_shown(tasks))
        return display_id

    def flush(self) -> None:
        """Bring every live output to its current state from the calling thread.

        Called after a blocking wait on the thread running the cell (``Session`` calls it
        through its flush hooks; the magic calls it after ``--wait`` and ``%nanobanana
        wait``): updates sent from there are recorded by headless runners. A slot whose task
        has ended is retired after its final state has been sent from here.
        """
        with self._lock:
            for slot in list(self._slots.values()):
                task = self._session.task_for(slot.local_id)
                if task is None:
                    continue
                record = task.record
                if slot.flushed != _shown(record) and self._send(slot, record, force=True):
                    slot.flushed = _shown(record)
                if record.is_terminal and slot.flushed == _shown(record):
                    self._retire(slot)
            for batch in list(self._batches.values()):
                shown = _batch_shown(batch.tasks)
                if batch.flushed != shown:
                    self._send_batch(batch)
                    batch.flushed = shown
                if all(t.done() for t in batch.tasks):
                    del self._batches[batch.display_id]

    def _retire(self, slot: _Slot) -> None:
        self._slots.pop(slot.display_id, None)
        siblings = self._by_task.get(slot.local_id, [])
        if slot in siblings:
            siblings.remove(slot)
        if not siblings:
            self._by_task.pop(slot.local_id, None)

    def _on_change(self, event: TaskEvent) -> None:
        task = event.task
        with self._lock:
            record = task.record
            for slot in list(self._by_task.get(task.local_id, ())):
                self._send(slot, record, force=record.is_terminal)
            for batch in list(self._batches.values()):
                if task in batch.tasks:
                    self._send_batch(batch)

    def _send_batch(self, batch: _Batch) -> None:
        try:
            update_display(batch_bundle(batch.tasks), raw=True, display_id=batch.display_id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update display %s", batch.display_id, exc_info=True)

    def _send(self, slot: _Slot, record: TaskRecord, *, force: bool) -> bool:
        """Send ``record`` to ``slot`` (lock held); False when throttled or older than shown."""
        rank = _rank(record)
        if rank < slot.sent_rank:
            return False  # a newer state is already there: never go back
        now = time.monotonic()
        changed = record.status.value != slot.sent_status
        if not (force or changed) and now - slot.sent_at < MIN_UPDATE_INTERVAL:
            return False
        slot.sent_at, slot.sent_status, slot.sent_rank = now, record.status.value, rank
        data, metadata = self._bundle(record, embed=slot.embed, side=slot.side)
        try:
            update_display(data, raw=True, metadata=metadata, display_id=slot.display_id)
        except Exception:  # a closed kernel channel must not break the engine
            logger.debug("could not update display %s", slot.display_id, exc_info=True)
        return True

    def _start_ticker(self) -> None:
        with self._lock:
            if self._ticking:
                return
            self._ticking = True
        self._session.run_in_background(self._tick())

    async def _tick(self) -> None:
        import asyncio

        try:
            while True:
                await asyncio.sleep(TICK_SECONDS)
                with self._lock:
                    running = [s for s in self._slots.values() if s.sent_rank[0] is False]
                    if not running:
                        return
                    for slot in running:
                        task = self._session.task_for(slot.local_id)
                        if task is not None and not task.done():
                            self._send(slot, task.record, force=False)
        finally:
            with self._lock:
                self._ticking = False


_preview_cache: dict[tuple[str, int, str], Preview | None] = {}


def _preview_for(path: str, thumb: str | None, *, embed: str, side: int) -> Preview | None:
    """The preview bytes for one image: the stored thumbnail, or one made at ``side``."""
    key = (path, side, embed)
    if key in _preview_cache:
        return _preview_cache[key]
    preview: Preview | None = None
    try:
        if embed == "full":
            from nanobanana_jupyter._wire.models import sniff_image_type

            data = Path(path).read_bytes()
            media = sniff_image_type(data) or "image/png"
            preview = Preview(data, media)
        elif thumb is not None and side == 512 and Path(thumb).is_file():
            preview = Preview(Path(thumb).read_bytes(), "image/jpeg")
        else:
            from nanobanana_jupyter._store.images import make_preview

            data, media = make_preview(path, side=side)
            preview = Preview(data, media)
        if preview is not None and preview.width is None:
            preview = _with_size(preview)
    except (OSError, ValueError):
        preview = None
    if len(_preview_cache) > 512:
        _preview_cache.clear()
    _preview_cache[key] = preview
    return preview


def _with_size(preview: Preview) -> Preview:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(preview.data)) as img:
        return Preview(preview.data, preview.media_type, img.width, img.height)


@magics_class
class NanoBananaMagics(Magics):
    """``%nanobanana`` and ``%%nanobanana``: generate images from a notebook cell.

    Settings (``%config NanoBananaMagics.<name> = value``) are the traitlets below.
    """

    default_model = Unicode(
        None, allow_none=True, help="Model used when --model is not given (else the session's)."
    ).tag(config=True)
    embed = Enum(
        ["thumb", "full", "none"],
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
        set_default_session(keyed)
        session.close()
        return keyed

    def _live_for(self, session: Session) -> LiveOutputs:
        if self._live is None or self._live_session is not session:
            if self._live is not None:
                self._live.close()
            self._live = LiveOutputs(session)
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
    @argument("--embed", choices=["thumb", "full", "none"], help="what the output embeds")
    @argument("--expand", "-e", action="store_true", help="fill {name} from the notebook")
    @line_cell_magic
    def nanobanana(self, line: str, cell: str | None = None) -> Any:
        """Generate images with Nano Banana (defapi.org) without blocking the notebook.

        Cell form (options on the first line, the prompt in the body)::

            %%nanobanana --aspect-ratio 16:9 --ref photo.png -o cat
            A cat in a banana costume, studio light

        Line form (returns the task): ``task = %nanobanana a cat in a hat``.
        Subcommands: %nanobanana panel | history | status ID | resume | wait | sandbox |
        models | config | help.

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
        args = parse_argstring(self.nanobanana, line)
        words: list[str] = list(args.words)
        marked = cell is None and _marked_as_prompt(line, words)
        if cell is None and not marked:
            words = _without_trailing_comment(words)
        if cell is None and not marked and words and words[0] in SUBCOMMANDS:
            arity = SUBCOMMANDS[words[0]][0]
            if len(words) == 1 + arity:
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
        if args.expand:
            prompt = expand_prompt(prompt, self._user_ns)
        prompt = prompt.strip()
        if not prompt:
            raise UsageError(
                "the prompt is empty: write it in the cell body (or after %nanobanana)"
            )
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
        result: Task | list[Task] = tasks[0] if len(tasks) == 1 else tasks
        self._user_ns["_nanobanana"] = result
        if args.out:
            if not args.out.isidentifier():
                raise UsageError(f"-o {args.out!r} is not a valid variable name")
            self._user_ns[args.out] = result
        if args.wait or self.wait:
            self._wait(tasks, args.timeout if args.timeout is not None else self.timeout)
            live.flush()  # every card's final state, sent from this cell's thread
        if cell is None:
            for task in tasks:
                show_compact_once(task)
            return result
        return None

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
        if ref.isidentifier() and ref in self._user_ns and not Path(ref).exists():
            return self._user_ns[ref]
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
            sandbox = Session.sandbox()
            old = set_default_session(sandbox)
            if old is not None:
                old.close()
            print(
                "*** SANDBOX MODE *** images are drawn offline by a local fake server at "
                f"{sandbox.settings.base_url}; nothing goes to defapi.org and no credits are "
                f"used. History: {sandbox.data_dir}. Restart the kernel to leave sandbox mode."
            )
            return None
        if name == "panel":
            if self._open_panel is None:
                raise UsageError("the panel comes with the extension: %load_ext nanobanana_jupyter")
            return self._open_panel(self._session())
        session = self._session()
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
            ended = sum(t.status is TaskStatus.SUCCESS for t in open_tasks)
            print(f"{len(open_tasks)} task(s) ended, {ended} with images")
            return None
        raise UsageError(f"unknown subcommand {name!r}")  # pragma: no cover


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
