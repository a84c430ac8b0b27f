"""A sandbox backend is said to be one wherever it is reached from (issue 16, items 2 and 6).

``make lab`` and ``make demo`` point sessions at a sandbox by URL; a user may start one with
``python -m nanobanana_jupyter.sandbox`` and do the same. Such a session says it is a sandbox
(repr, ``is_sandbox`` and so every badge and "pretend credits"), and keeps its history apart
from the one a real key uses when told so by ``NANOBANANA_SANDBOX=1``; told nothing, it notices
the sandbox from its answers and says, once, where its tasks went.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobanana_jupyter import Session, Settings
from nanobanana_jupyter.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(time_scale=0.01, duration=1.0, accept_any_key=True) as sb:
        yield sb


def _environ(sandbox: Sandbox, data: Path, *, flag: bool) -> dict[str, str]:
    env = {
        "NANOBANANA_BASE_URL": sandbox.url,
        "NANOBANANA_API_KEY": sandbox.api_key,
        "NANOBANANA_ALLOW_LOCAL_URLS": "1",
        "NANOBANANA_DATA_DIR": str(data),
    }
    if flag:
        env["NANOBANANA_SANDBOX"] = "1"
    return env


def test_the_flag_marks_the_settings_and_keeps_the_history_in_a_sandbox_folder(
    tmp_path: Path,
) -> None:
    settings = Settings.resolve(
        environ={"NANOBANANA_SANDBOX": "yes", "NANOBANANA_DATA_DIR": str(tmp_path)}
    )
    assert settings.sandbox is True
    assert settings.data_dir == tmp_path / "sandbox"
    plain = Settings.resolve(environ={"NANOBANANA_DATA_DIR": str(tmp_path)})
    assert plain.sandbox is False and plain.data_dir == tmp_path
    # Given explicitly, a data dir is used as given: the caller chose it.
    chosen = Settings.resolve(environ={"NANOBANANA_SANDBOX": "1"}, data_dir=tmp_path / "x")
    assert chosen.sandbox is True and chosen.data_dir == tmp_path / "x"


def test_a_session_told_it_is_on_a_sandbox_says_so_before_any_request(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    settings = Settings.resolve(environ=_environ(sandbox, tmp_path / "data", flag=True))
    with Session(settings=settings) as session:
        assert session.is_sandbox
        assert session.history.is_sandbox
        assert session.data_dir == tmp_path / "data" / "sandbox"
        assert repr(session).startswith("<Session sandbox at http://127.0.0.1:")
        task = session.generate("a lighthouse")
        task.wait(30)
        assert task.status.value == "success", task.error
        assert session.credits.pretend


def test_a_session_pointed_at_a_sandbox_by_url_notices_it_from_the_answers(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.resolve(environ=_environ(sandbox, tmp_path / "data", flag=False))
    with Session(settings=settings) as session, caplog.at_level(logging.INFO):
        assert not session.is_sandbox  # nothing said it yet
        assert "sandbox" not in repr(session)
        first = session.generate("a red kite")
        first.wait(30)
        second = session.generate("a blue kite")
        second.wait(30)
        assert session.is_sandbox
        assert session.history.is_sandbox
        assert repr(session).startswith("<Session sandbox at ")
        said = [r.getMessage() for r in caplog.records if "sandbox" in r.getMessage()]
        assert len(said) == 1, said  # once, not per answer
        assert "NANOBANANA_SANDBOX=1" in said[0]
        assert str(tmp_path / "data") in said[0]


def test_the_real_service_is_not_taken_for_a_sandbox(tmp_path: Path) -> None:
    from tests.helpers.mock_api import Accepting, mock_session

    api = Accepting()
    with mock_session(tmp_path / "data", api) as session:
        task = session.generate("a dog")
        assert api.submitted.wait(30)
        with pytest.raises(TimeoutError):
            task.wait(0.5)  # answers were read (submit, a query or more)
        assert not session.is_sandbox
        assert not session.credits.pretend
        assert "sandbox" not in repr(session)


@pytest.mark.parametrize("quiet", [False, True])
def test_session_sandbox_in_a_script_says_so_in_one_line(tmp_path: Path, quiet: bool) -> None:
    import subprocess
    import sys

    script = (
        "from nanobanana_jupyter import Session\n"
        f"with Session.sandbox(data_dir={str(tmp_path)!r}, quiet={quiet}) as s:\n"
        "    print(repr(s))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("<Session sandbox at http://127.0.0.1:")
    lines = done.stderr.splitlines()
    if quiet:
        assert lines == []
    else:
        assert len(lines) == 1, lines
        assert lines[0].startswith("sandbox mode: a local sandbox at http://127.0.0.1:")
        assert "pretend" in lines[0] and str(tmp_path) in lines[0]
