"""The magic in-process, on IPython's InteractiveShell, against an httpx MockTransport.

No server, no kernel: every request the session would send is recorded by the transport, so
"nothing was sent" is checked directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session, ValidationError
from nanobanana_jupyter._magic import NanoBananaMagics
from nanobanana_jupyter._session import set_default_session
from nanobanana_jupyter._settings import Settings
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
