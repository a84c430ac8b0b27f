"""``%nanobanana export OUT [...]`` in-process: the options of ``nanobanana export``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session
from nanobanana_jupyter._core.export_selection import parse_rating, parse_since
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import TaskStatus
from tests.unit.test_magic import Recorder, recorder, run, session, shell

__all__ = ["recorder", "session", "shell"]  # the fixtures, used by name


def failed(name: str, prompt: str, at: float) -> TaskRecord:
    return TaskRecord(
        local_id=name,
        status=TaskStatus.FAILED,
        prompt=prompt,
        model="google/gempix2",
        fingerprint=f"f-{name}",
        created_at=at,
        updated_at=at,
        error="refused",
    )


@pytest.fixture
def stored(session: Session) -> Session:
    store = session._store  # the test writes history rows directly
    store.insert_many([failed("old", "an old kite", 1_000.0), failed("new", "a new kite", 2_000.0)])
    session.history.tag("new", "keep")
    session.history.rate("new", 4)
    return session


def test_the_magic_exports_what_its_options_select(
    shell: InteractiveShell, stored: Session, recorder: Recorder, tmp_path: Path, capsys: object
) -> None:
    """--tag and --rating select; the folder holds their tiles; nothing is sent."""
    out = tmp_path / "share"
    assert run(shell, f"export {out} --tag keep --rating 3  # the keepers") is None
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="t-new"' in page and 'id="t-old"' not in page
    assert recorder.requests == []
    run(shell, f"export '{tmp_path / 'all'}' --format zip")
    assert (tmp_path / "all.zip").is_file()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("export", "required: out"),
        ("export x --rating 7", "0 to 5 stars"),
        ("export x --since soon", "is no date"),
        ("export x --format pdf", "invalid choice"),
        ("export x --search zeppelin", "nothing to export"),
        ("export x --bogus", "unrecognized arguments"),
    ],
)
def test_bad_export_lines_are_one_line_errors(
    shell: InteractiveShell, stored: Session, tmp_path: Path, line: str, says: str
) -> None:
    """Every refusal is a UsageError of one line, and writes nothing."""
    with pytest.raises(UsageError, match=says) as info:
        run(shell, line.replace(" x", f" {tmp_path / 'x'}"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_since_reads_dates_and_spans() -> None:
    """--since: a date, a date and time, or 7d / 12h before now."""
    assert parse_since("7d", now=1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_since("12h", now=1_000_000.0) == 1_000_000.0 - 12 * 3600
    assert parse_since("2026-01-31T14:05+00:00") == 1769868300.0
    expected = time.mktime((2026, 1, 31, 0, 0, 0, 0, 0, -1))
    assert parse_since("2026-01-31") == expected  # local midnight
    with pytest.raises(ValidationError, match="is no date"):
        parse_since("yesterday")
    assert parse_rating(" 5 ") == 5
    with pytest.raises(ValidationError):
        parse_rating("-1")
