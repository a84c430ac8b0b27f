"""``nanobanana balance`` and ``nanobanana generate --budget``, in-process against the
sandbox the command starts (its history kept in the data directory between runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobanana_jupyter._views.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NANOBANANA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_balance_prints_the_pretend_credits(capsys: pytest.CaptureFixture[str]) -> None:
    """nanobanana --sandbox balance prints one line on stdout: pretend credits."""
    assert main(["--sandbox", "balance"]) == 0
    assert capsys.readouterr().out == "balance: 100 pretend credits (sandbox)\n"


def test_a_budget_refuses_a_batch_it_cannot_pay_and_sends_nothing(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    """With the model's cost unknown, -n 2 under a budget is refused (one at a time); once a
    task has cost 0.5, -n 3 --budget 1 is refused up front in one line, exit status 2, and
    nothing is added to the history."""
    assert main(["generate", "--sandbox", "two lemons", "-n", "2", "--budget", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanobanana: under a budget") and "one task at a time" in err
    assert "\n" not in err
    assert main(["--sandbox", "generate", "one lemon", "--budget", "5"]) == 0
    capsys.readouterr()
    assert main(["--sandbox", "generate", "three lemons", "-n", "3", "--budget", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanobanana: over budget: these 3 requests would cost about 1.5")
    assert main(["--sandbox", "history"]) == 0
    listed = capsys.readouterr()
    assert "one lemon" in listed.out and "lemons" not in listed.out
    assert listed.err.startswith("1 task,")


def test_a_budget_that_is_no_number_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--budget abc is one line saying what a budget is; nothing is generated."""
    assert main(["--sandbox", "generate", "a lemon", "--budget", "abc"]) == 2
    assert "positive number of credits" in capsys.readouterr().err
