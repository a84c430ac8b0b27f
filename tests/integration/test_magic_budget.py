"""``%nanobanana balance`` and ``%nanobanana budget`` in-process, on IPython's
InteractiveShell, over a session talking to a real sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session
from nanobanana_jupyter._core.defaults import set_default_session
from nanobanana_jupyter._views.magic import NanoBananaMagics
from nanobanana_jupyter.sandbox import Sandbox
from tests.integration.test_session import make_session

pytestmark = pytest.mark.integration


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    # Told it is a sandbox, as %nanobanana sandbox and make lab tell it: pretend credits.
    s = make_session(sandbox, tmp_path / "data", settings={"sandbox": True})
    old = set_default_session(s)
    try:
        yield s
    finally:
        s.wait_all(timeout=20)
        set_default_session(old)
        s.close()


@pytest.fixture
def shell(session: Session) -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.register_magics(NanoBananaMagics)
    return ip


def magic(shell: InteractiveShell, line: str) -> object:
    return shell.run_line_magic("nanobanana", line)


def test_balance_shows_the_sandbox_credits_as_pretend(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """%nanobanana balance prints the account's credits, pretend in a sandbox."""
    magic(shell, "balance")
    assert capsys.readouterr().out.strip() == "balance: 100 pretend credits (sandbox)"


def test_budget_sets_shows_refuses_and_goes_off(
    shell: InteractiveShell,
    session: Session,
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """budget 0.5 sets it; a second request is refused in one line and not sent; budget
    shows spent and left; budget off removes it."""
    magic(shell, "budget 0.5")
    assert session.budget == Decimal("0.5")
    assert capsys.readouterr().out.startswith("budget 0.5 pretend credits: 0 pretend credits")
    magic(shell, "--wait a first lemon")
    with pytest.raises(UsageError) as info:
        magic(shell, "a second lemon")
    message = str(info.value)
    assert message.startswith("over budget") and "\n" not in message
    assert sandbox.ledger.submits_received == 1
    capsys.readouterr()
    magic(shell, "budget")
    shown = capsys.readouterr().out.strip()
    assert shown == (
        "budget 0.5 pretend credits: 0.5 pretend credits spent, 0 pretend credits in flight "
        "(estimated), 0 pretend credits left"
    )
    magic(shell, "budget off")
    assert session.budget is None
    assert capsys.readouterr().out.startswith("no budget (0.5 pretend credits spent")


def test_a_bad_budget_is_one_line_and_keeps_the_old_one(
    shell: InteractiveShell, session: Session
) -> None:
    """budget abc is refused in one line saying what a budget is; the old one stays."""
    magic(shell, "budget 2")
    with pytest.raises(UsageError, match="positive number of credits") as info:
        magic(shell, "budget abc")
    assert "\n" not in str(info.value)
    assert session.budget == 2
