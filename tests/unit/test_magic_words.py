"""The magic's words for a user's mistakes, and ``%nanobanana session``; in-process, on
IPython's InteractiveShell, against an httpx MockTransport that records every request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session
from nanobanana_jupyter._core.defaults import get_default_session, set_default_session
from nanobanana_jupyter._views.magic import NanoBananaMagics
from nanobanana_jupyter._wire.settings import Settings
from tests.conftest import SENTINEL_KEY


@pytest.fixture
def requests() -> list[httpx.Request]:
    return []


@pytest.fixture
def session(requests: list[httpx.Request], tmp_path: Path) -> Iterator[Session]:
    def refuse(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(400, json={"code": 400, "message": "refused by the test"})

    settings = Settings.resolve(
        api_key=SENTINEL_KEY,
        base_url="https://api.example.test",
        data_dir=tmp_path / "data",
        environ={},
        colab=lambda name: None,
    )
    s = Session(settings=settings, transport=httpx.MockTransport(refuse))
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


def refused(shell: InteractiveShell, line: str, cell: str | None = None) -> str:
    def call() -> Any:
        if cell is None:
            return shell.run_line_magic("nanobanana", line)
        return shell.run_cell_magic("nanobanana", line, cell)

    with pytest.raises(UsageError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# -- a mistyped option: did you mean ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cell", "expected"),
    [
        ("--sise 2K a cat", None, "unknown option --sise; did you mean --size? nothing was sent"),
        ("a cat --sise 2K", None, "unknown option --sise; did you mean --size? nothing was sent"),
        ("--size=2K --modle x a cat", None, "unknown option --modle; did you mean --model?"),
        ("--aspect-ration 16:9", "a cat", "did you mean --aspect-ratio? nothing was sent"),
        ("--wiat", "a cat", "unknown option --wiat; did you mean --wait? nothing was sent"),
        ("--froce a cat", None, "did you mean --force?"),
        (
            "--bogus x",
            None,
            "unknown option --bogus; nothing was sent (%nanobanana? lists the options)",
        ),
    ],
)
def test_a_mistyped_option_says_which_was_meant_and_sends_nothing(
    shell: InteractiveShell,
    session: Session,
    requests: list[httpx.Request],
    line: str,
    cell: str | None,
    expected: str,
) -> None:
    """A typo in an option is one line naming the closest real option; nothing is sent."""
    assert expected in refused(shell, line, cell)
    assert requests == [] and session.tasks == [] and len(session.history) == 0


def test_an_option_abbreviation_still_works(
    shell: InteractiveShell, session: Session, requests: list[httpx.Request]
) -> None:
    """``--aspect 16:9`` is an unambiguous start of ``--aspect-ratio`` and is read as it."""
    task = shell.run_line_magic("nanobanana", "--aspect 16:9 a cat")
    task.wait(10)
    (submit,) = [json.loads(r.read()) for r in requests if r.method == "POST"]
    assert submit["aspect_ratio"] == "16:9" and submit["prompt"] == "a cat"


# -- a --ref that names nothing -------------------------------------------------------------


def test_a_ref_naming_no_variable_and_no_file_says_so(
    shell: InteractiveShell,
    session: Session,
    requests: list[httpx.Request],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``-r undefined_name``: no variable or file of that name; the remedy says what works."""
    monkeypatch.chdir(tmp_path)
    shell.user_ns.pop("undefined_name", None)
    message = refused(shell, "-r undefined_name", "a cat")
    assert message.startswith("--ref: no variable or file named 'undefined_name'; ")
    assert "does not exist" not in message
    for remedy in ("define it", "file path", "URL", "@last"):
        assert remedy in message
    assert requests == [] and session.tasks == []


def test_a_ref_path_that_is_missing_still_says_it_does_not_exist(
    shell: InteractiveShell, session: Session, requests: list[httpx.Request], tmp_path: Path
) -> None:
    """A path (not a bare name) that is missing keeps its own message."""
    message = refused(shell, f"-r {tmp_path / 'no-such.png'}", "a cat")
    assert "does not exist" in message and "no variable" not in message
    assert requests == []


def test_a_ref_that_is_a_variable_or_a_file_of_that_name_is_used(
    shell: InteractiveShell,
    session: Session,
    requests: list[httpx.Request],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bare name that is a variable is the variable; one that is a file is the file."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "green", format="PNG")
    shell.user_ns["red"] = Image.new("RGB", (8, 8), (200, 10, 10))
    try:
        first = shell.run_cell_magic("nanobanana", "-r red -o t1", "a red cat")
        second = shell.run_cell_magic("nanobanana", "-r green -o t2", "a green cat")
    finally:
        shell.user_ns.pop("red", None)
    assert first is None and second is None
    for name in ("t1", "t2"):
        shell.user_ns[name].wait(10)
    submits = [json.loads(r.read()) for r in requests if r.method == "POST"]
    assert [len(s["images"]) for s in submits] == [1, 1]
    assert submits[0]["images"] != submits[1]["images"]


# -- %nanobanana session ----------------------------------------------------------------------


def test_session_subcommand_returns_the_magics_session(
    shell: InteractiveShell, session: Session, requests: list[httpx.Request], capsys: Any
) -> None:
    """``s = %nanobanana session`` is the default session the magic uses; a bare line shows
    its repr as the cell's result; help lists it; nothing is sent."""
    result = shell.run_cell("s = %nanobanana session")
    assert result.success, result.error_in_exec
    assert shell.user_ns["s"] is session is get_default_session()
    shown = shell.run_cell("%nanobanana session")
    assert shown.result is session
    assert repr(session) in capsys.readouterr().out
    shell.run_line_magic("nanobanana", "help")
    assert "s = %nanobanana session" in capsys.readouterr().out
    assert "session" in (NanoBananaMagics.nanobanana.__doc__ or "")
    assert requests == [] and session.tasks == []


def test_session_subcommand_after_sandbox_is_the_sandbox(
    shell: InteractiveShell, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``%nanobanana sandbox`` the subcommand hands out the sandbox session."""
    monkeypatch.setenv("NANOBANANA_DATA_DIR", str(tmp_path / "sb"))
    shell.run_line_magic("nanobanana", "sandbox")
    sandbox = shell.run_line_magic("nanobanana", "session")
    try:
        assert sandbox is not session and sandbox is get_default_session()
        assert sandbox.is_sandbox
    finally:
        set_default_session(session)
        sandbox.close()
