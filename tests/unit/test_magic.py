"""The magic in-process, on IPython's InteractiveShell, against an httpx MockTransport.

No server, no kernel: every request the session would send is recorded by the transport, so
"nothing was sent" is checked directly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session, ValidationError
from nanobanana_jupyter._core.defaults import set_default_session
from nanobanana_jupyter._core.events import TaskEvent
from nanobanana_jupyter._views.magic import NanoBananaMagics
from nanobanana_jupyter._wire.settings import Settings
from tests.conftest import SENTINEL_KEY


class Recorder:
    """A transport that answers every submit with a refusal, and remembers every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        return httpx.Response(400, json={"code": 400, "message": "refused by the test"})

    @property
    def submits(self) -> list[str]:
        with self._lock:
            return [httpx.Request.read(r).decode() for r in self.requests if r.method == "POST"]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def session(recorder: Recorder, tmp_path: Path) -> Iterator[Session]:
    settings = Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url="https://api.example.test",
        data_dir=tmp_path / "data",
        environ={},
        colab=lambda name: None,
    )
    s = Session(settings=settings, transport=httpx.MockTransport(recorder))
    old = set_default_session(s)
    try:
        yield s
    finally:
        for task in s.tasks:
            task.wait(10)
        set_default_session(old)
        s.close()


@pytest.fixture
def shell(session: Session) -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.register_magics(NanoBananaMagics)
    return ip


def run(shell: InteractiveShell, line: str, cell: str | None = None) -> Any:
    if cell is None:
        return shell.run_line_magic("nanobanana", line)
    return shell.run_cell_magic("nanobanana", line, cell)


@pytest.mark.parametrize(
    ("line", "meant"),
    [
        ("histroy", "history"),
        ("hsitory", "history"),
        ("staus", "status"),
        ("pannel", "panel"),
        ("wiat", "wait"),
        ("confg", "config"),
        ("modles", "models"),
        ("resum", "resume"),
        ("History", "history"),
        ("--wait histroy", "history"),
    ],
)
def test_a_mistyped_subcommand_is_refused_and_nothing_is_sent(
    shell: InteractiveShell, session: Session, recorder: Recorder, line: str, meant: str
) -> None:
    """H6: one bare word close to a subcommand is a one-line error with a did-you-mean."""
    word = line.split()[-1]
    with pytest.raises(UsageError) as info:
        run(shell, line)
    message = str(info.value)
    assert f"unknown subcommand {word!r} (did you mean {meant}?)" in message
    assert "\n" not in message
    assert session.tasks == []
    assert recorder.requests == []
    assert len(session.history) == 0


def test_an_unknown_bare_word_is_refused_and_says_how_to_send_it(
    shell: InteractiveShell, session: Session, recorder: Recorder
) -> None:
    """H6: a bare word far from every subcommand is refused too, and the error says how to
    send a one-word prompt; nothing is sent."""
    with pytest.raises(UsageError) as info:
        run(shell, "sunset")
    message = str(info.value)
    assert "unknown subcommand 'sunset'" in message and "did you mean" not in message
    assert '%nanobanana "sunset"' in message
    assert recorder.requests == [] and session.tasks == []


def test_a_subcommand_missing_its_argument_is_refused(
    shell: InteractiveShell, session: Session, recorder: Recorder
) -> None:
    """H6: ``%nanobanana status`` without an id was the prompt "status"; now it is refused."""
    with pytest.raises(UsageError, match="status <task id>"):
        run(shell, "status")
    assert recorder.requests == [] and session.tasks == []


@pytest.mark.parametrize(
    ("line", "cell"),
    [
        ('"history"', None),
        ("'history'", None),
        ("-- history", None),
        ("--aspect-ratio 1:1 -- history", None),
        ("", "history"),
    ],
)
def test_a_one_word_prompt_is_still_possible(
    shell: InteractiveShell, session: Session, recorder: Recorder, line: str, cell: str | None
) -> None:
    """H6: quoted, after ``--``, or in the cell body, one word is the prompt and is sent."""
    run(shell, line, cell)
    (task,) = session.tasks
    assert task.prompt == "history"
    task.wait(10)
    (body,) = recorder.submits
    assert '"history"' in body


def test_prompts_of_several_words_and_real_subcommands_still_work(
    shell: InteractiveShell, session: Session, recorder: Recorder, capsys: Any
) -> None:
    """Several words are a prompt, even when the first is a subcommand's name; a real
    subcommand runs."""
    run(shell, "a sunset over the sea")
    run(shell, "wait for the sunset")
    assert [t.prompt for t in session.tasks] == ["a sunset over the sea", "wait for the sunset"]
    run(shell, "help")
    out = capsys.readouterr().out
    assert "%nanobanana history" in out and '%nanobanana "sunset"' in out


@pytest.mark.parametrize("prompts", ["sunset", b"sunset", bytearray(b"sunset")])
def test_map_refuses_a_string_where_a_list_belongs(
    session: Session, recorder: Recorder, prompts: Any
) -> None:
    """H6: ``session.map("sunset")`` started one task per letter; now nothing is started."""
    with pytest.raises(ValidationError, match="list of prompts"):
        session.map(prompts)
    assert session.tasks == [] and recorder.requests == []
    assert len(session.history) == 0


# -- H7: live outputs are final, sent from the thread that waited --------------------------


class Sends:
    """Stands in for IPython's display functions: who sent which status to which slot."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []  # (thread, display id, status)
        self._lock = threading.Lock()

    def record(self, data: Any, *, metadata: Any = None, display_id: str, **_: Any) -> None:
        status = (metadata or {}).get("nanobanana", {}).get("status")
        with self._lock:
            self.calls.append((threading.current_thread().name, display_id, status))

    def last(self, display_id: str, thread: str | None = None) -> str | None:
        with self._lock:
            mine = [c for c in self.calls if c[1] == display_id]
        if thread is not None:
            mine = [c for c in mine if c[0] == thread]
        return mine[-1][2] if mine else None


class FakeEngine:
    def in_engine_thread(self) -> bool:
        return threading.current_thread().name == "engine"

    def submit(self, coro: Any) -> None:
        coro.close()  # no ticker: these tests drive every update themselves


class FakeSession:
    """What LiveOutputs uses of a session; changes are made by the test."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}
        self._engine = FakeEngine()
        self._listeners: list[Any] = []
        self._flush_hooks: list[Any] = []

    def subscribe(self, listener: Any) -> Any:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def task_for(self, local_id: str) -> Any:
        return self._handles.get(local_id)

    def run_in_background(self, coro: Any) -> None:
        coro.close()  # no ticker: these tests drive every update themselves

    def in_engine_thread(self) -> bool:
        return self._engine.in_engine_thread()

    def events_delivered(self) -> None:
        pass  # these listeners are called synchronously by move()

    add_wait_hook = Session.add_wait_hook
    after_wait = Session.after_wait

    def move(self, task: Any, record: Any, *, thread: str = "engine") -> None:
        """Apply a change as the engine does: the handle first, then the views."""

        def apply() -> None:
            task._state.update(record)
            for listener in list(self._listeners):
                listener(TaskEvent(task, record))

        worker = threading.Thread(target=apply, name=thread)
        worker.start()
        worker.join(5)


def running_record(local_id: str = "loc-1") -> Any:
    from nanobanana_jupyter._wire.models import TaskStatus
    from tests.unit.test_render import make_record

    return make_record(TaskStatus.IN_PROGRESS, local_id=local_id, paths=(), updated_at=10.0)


def succeeded(record: Any, updated_at: float = 20.0) -> Any:
    from nanobanana_jupyter._wire.models import TaskStatus
    from tests.unit.test_render import make_record

    return make_record(
        TaskStatus.SUCCESS, local_id=record.local_id, paths=(), updated_at=updated_at
    )


@pytest.fixture
def sends() -> Sends:
    return Sends()


def live_outputs(fake: FakeSession, sends: Sends) -> Any:
    """The display layer's live outputs over ``fake``, sending to ``sends``."""
    from nanobanana_jupyter._display.live import LiveOutputs

    return LiveOutputs(fake, show=sends.record, update=sends.record)  # type: ignore[arg-type]


def live_task(fake: FakeSession, record: Any) -> Any:
    from nanobanana_jupyter._core.task import Task, TaskState

    task = Task(fake, TaskState(record))  # type: ignore[arg-type]
    fake._handles[record.local_id] = task
    return task


def test_h7_flush_sends_the_final_state_from_the_waiting_thread(sends: Sends) -> None:
    """H7: the engine ends the task (its update is one a headless runner drops); the flush
    after the wait sends the final card again from the thread running the cell."""
    fake = FakeSession()
    record = running_record()
    task = live_task(fake, record)
    live = live_outputs(fake, sends)
    slot = live.open(task, embed="none", side=64)
    fake.move(task, succeeded(record))
    assert sends.last(slot, "engine") == "success"
    assert sends.last(slot, "MainThread") == "in_progress"

    fake.after_wait()  # what Task.wait does when it returns, on the waiting thread
    assert sends.last(slot, "MainThread") == "success"
    count = len(sends.calls)
    fake.after_wait()  # retired: a second flush sends nothing
    fake.move(task, succeeded(record, updated_at=30.0))
    assert len(sends.calls) == count


def test_h7_a_late_engine_update_never_overwrites_a_newer_state(sends: Sends) -> None:
    """H7: per-slot ordering: an update built from an older record, arriving after the
    final state was shown, is dropped (here before any flush retires the slot)."""
    fake = FakeSession()
    record = running_record()
    task = live_task(fake, record)
    live = live_outputs(fake, sends)
    slot = live.open(task, embed="none", side=64)
    fake.move(task, succeeded(record))
    stale = record.replace(updated_at=15.0)  # newer than the first card, older than the end
    task._state.record = stale  # an engine snapshot taken before the end, delivered late
    live.on_change(TaskEvent(task, task.record))
    assert sends.last(slot) == "success"
    fake._handles[record.local_id]._state.record = succeeded(record)
    fake.after_wait()
    assert sends.last(slot, "MainThread") == "success"


def test_h7_flush_reaches_cards_of_earlier_cells_and_batches(sends: Sends) -> None:
    """H7: a card opened without --wait, whose task ended in the background, and the -n
    progress line are brought to their final state by a later wait's flush."""
    fake = FakeSession()
    first, second = running_record("loc-1"), running_record("loc-2")
    tasks = [live_task(fake, first), live_task(fake, second)]
    live = live_outputs(fake, sends)
    batch = live.open_batch(tasks)
    slots = [live.open(t, embed="none", side=64) for t in tasks]
    fake.move(tasks[0], succeeded(first))
    fake.move(tasks[1], succeeded(second))
    main_before = [c for c in sends.calls if c[0] == "MainThread"]
    fake.after_wait()
    assert [sends.last(s, "MainThread") for s in slots] == ["success", "success"]
    flushed = [c for c in sends.calls if c[0] == "MainThread"][len(main_before) :]
    assert any(c[1] == batch for c in flushed)
    assert live.slots == 0 and live.batches == 0


def test_h7_no_flush_on_the_engine_thread(sends: Sends) -> None:
    """A wait that returns on the engine thread (a done callback) flushes nothing."""
    fake = FakeSession()
    calls: list[str] = []
    fake.add_wait_hook(lambda: calls.append(threading.current_thread().name))
    worker = threading.Thread(target=fake.after_wait, name="engine")
    worker.start()
    worker.join(5)
    fake.after_wait()
    assert calls == ["MainThread"]


def test_h7_task_wait_and_wait_all_call_the_flush_hook(
    session: Session, recorder: Recorder
) -> None:
    """H7: task.wait() (also on a timeout) and session.wait_all() end with a flush on the
    calling thread."""
    calls: list[str] = []
    remove = session.add_wait_hook(lambda: calls.append(threading.current_thread().name))
    task = session.generate("a banana")
    task.wait(10)
    assert calls == ["MainThread"]
    session.wait_all(10)
    assert calls == ["MainThread"] * 2
    remove()
    task.wait(10)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "line",
    [
        "history   # uncomment to see what ran",
        "histroy # a typo with a comment",
        "models # list them",
    ],
)
def test_a_subcommand_line_with_a_trailing_comment_is_never_sent_as_a_prompt(
    shell: InteractiveShell, session: Session, recorder: Recorder, line: str
) -> None:
    """H6: IPython hands a line magic its trailing '# comment', and the notebooks carry
    '%nanobanana sandbox   # uncomment to work offline': such a line runs its subcommand (or is
    refused as a typo); it never becomes a paid prompt."""
    with contextlib.suppress(UsageError):
        run(shell, line)
    assert session.tasks == []
    assert recorder.requests == []
    assert len(session.history) == 0


def test_a_prompt_with_a_hash_is_still_a_prompt(
    shell: InteractiveShell, session: Session, recorder: Recorder
) -> None:
    """H6: a '#' inside an ordinary prompt is part of the prompt."""
    task = run(shell, "a poster of the #1 banana # in neon")
    assert task.prompt == "a poster of the #1 banana # in neon"


# -- one display layer: a cell result shows what the live card shows ----------------------


def test_a_cell_result_shows_the_same_preview_as_its_live_card(
    shell: InteractiveShell, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``%config NanoBananaMagics.embed = 'full'`` and ``preview_size = 256``, a task
    shown as a cell's result embeds the same image as the card the magic shows for it."""
    import base64
    import io

    from PIL import Image

    from nanobanana_jupyter._core.task import Task, TaskState
    from nanobanana_jupyter._store.images import ImageStore
    from nanobanana_jupyter._views import magic as _magic
    from nanobanana_jupyter._wire.models import TaskStatus
    from tests.unit.test_render import make_record

    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(_magic, "display", lambda data, **_: shown.append(data))
    png = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 160, 40)).save(png, format="PNG")
    image = ImageStore(tmp_path / "images").put(png.getvalue())
    task = Task(
        session, TaskState(make_record(TaskStatus.SUCCESS, paths=()).replace(images=(image,)))
    )
    magics = shell.magics_manager.registry["NanoBananaMagics"]
    shell.run_line_magic("config", "NanoBananaMagics.embed = 'full'")
    shell.run_line_magic("config", "NanoBananaMagics.preview_size = 256")
    try:
        magics._live_for(session).open(task, embed=magics.embed, side=magics.preview_size)
        (card,) = shown
        # Shown as this cell's result too: nothing more (one output per cell) ...
        assert shell.display_formatter.format(task) == ({}, {})
        assert len(shown) == 1
        # ... and its mimebundle, for a front end without IPython display, is the same card.
        result, _ = task._repr_mimebundle_()
        assert base64.b64decode(card["image/png"]) == Path(image.path).read_bytes()
        assert result["image/png"] == card["image/png"]
        assert result["text/html"] == card["text/html"]
        # A handle of the same task that no card showed: the configured choice.
        other, _ = Task(session, TaskState(task.record))._repr_mimebundle_()
        assert other["image/png"] == card["image/png"]
    finally:
        shell.run_line_magic("config", "NanoBananaMagics.embed = 'thumb'")
        shell.run_line_magic("config", "NanoBananaMagics.preview_size = 512")


@pytest.mark.parametrize("n", ["0", "17"])
def test_a_wrong_n_is_refused_before_a_key_is_asked_for(
    shell: InteractiveShell, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, n: str
) -> None:
    """-n outside 1..16 is one line saying the bounds, before the magic asks for a key (which
    may prompt) or waits for a @last reference; nothing is sent."""

    def asked(self: Any) -> Any:
        raise AssertionError("the magic asked for the key first")

    monkeypatch.setattr(NanoBananaMagics, "_session_with_key", asked)
    with pytest.raises(UsageError, match="1 to 16"):
        run(shell, f"-n {n} --ref @last", "a cat")
    assert recorder.submits == []


def test_panel_on_ipywidgets_7_is_one_line_saying_what_instead(
    shell: InteractiveShell, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ipywidgets 7 (Colab's): the panel refuses at import with one line naming the version
    and what to use instead, and %nanobanana panel raises it as a UsageError (one line, no
    traceback). tests/colab checks the same in a kernel on Colab's pins."""
    import importlib
    import sys

    import ipywidgets

    import nanobanana_jupyter

    monkeypatch.setattr(ipywidgets, "__version__", "7.7.1")
    monkeypatch.delitem(sys.modules, "nanobanana_jupyter._views.panel", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("nanobanana_jupyter._views.panel")
    assert info.value.name == "ipywidgets"
    message = str(info.value)
    assert "needs ipywidgets 8" in message and "7.7.1" in message and "\n" not in message
    assert "%%nanobanana" in message  # what to use instead

    shell.register_magics(NanoBananaMagics(shell, open_panel=nanobanana_jupyter._open_panel))
    with pytest.raises(UsageError) as usage:
        run(shell, "panel")
    assert str(usage.value) == message


def test_panel_without_anywidget_is_one_line_saying_what_to_install(
    shell: InteractiveShell, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gallery is an anywidget: without it the panel refuses at import with one line
    naming the extra, and %nanobanana panel raises it as a UsageError."""
    import importlib
    import sys

    import nanobanana_jupyter

    monkeypatch.setitem(sys.modules, "anywidget", None)  # import anywidget: ImportError
    monkeypatch.delitem(sys.modules, "nanobanana_jupyter._views.panel", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("nanobanana_jupyter._views.panel")
    assert info.value.name == "anywidget"
    message = str(info.value)
    assert message == (
        "the panel needs anywidget: pip install anywidget, then restart the kernel and "
        "reload the page"
    )

    shell.register_magics(NanoBananaMagics(shell, open_panel=nanobanana_jupyter._open_panel))
    with pytest.raises(UsageError) as usage:
        run(shell, "panel")
    assert str(usage.value) == message
