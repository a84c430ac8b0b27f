"""Compare grids against a real sandbox: a 2x2 grid completes with its costs and total shown,
and a grid run again sends only its new cells (the sandbox's ledger counts the submits)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from nanobanana_jupyter import Session, TaskStatus
from nanobanana_jupyter.sandbox import Sandbox
from tests.integration.test_session import make_session

pytestmark = pytest.mark.integration

MODELS = ["google/gempix2", "google/nano-banana-pro"]


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    with make_session(sandbox, tmp_path / "data") as s:
        yield s


def test_a_two_by_two_grid_completes_with_previews_costs_and_total(
    session: Session, sandbox: Sandbox
) -> None:
    grid = session.grid(["a <cat>", "a dog"], model=MODELS, aspect_ratio="1:1").wait(30)
    assert [t.status for t in grid.tasks] == [TaskStatus.SUCCESS] * 4
    assert sandbox.ledger.submits_received == 4
    assert grid.total_cost == Decimal("2") and grid.new_cost == Decimal("2")
    bundle = grid._repr_mimebundle_()
    assert isinstance(bundle, dict)
    html = bundle["text/html"]
    assert html.count('src="data:image/jpeg;base64,') == 4
    assert html.count("0.5 credits") == 4 and "total 2 credits" in html
    assert "&lt;cat&gt;" in html and "<cat>" not in html
    assert "total 2 credits" in bundle["text/plain"]
    frame = grid.to_pandas()
    assert list(frame["model"]) == MODELS * 2
    assert list(frame["status"]) == ["success"] * 4
    assert frame["consumed"].sum() == pytest.approx(2.0)


def test_a_grid_run_again_sends_only_its_new_cells(session: Session, sandbox: Sandbox) -> None:
    session.grid(["one", "two"], model=MODELS).wait(30)
    assert sandbox.ledger.submits_received == 4
    again = session.grid(["one", "two"], model=MODELS).wait(30)
    assert sandbox.ledger.submits_received == 4  # nothing new: every cell handed back
    assert all(again.reused(c) for c in again) and again.new_cost == Decimal("0")
    assert "4 cells reused, no new charge" in repr(again)
    wider = session.grid(["one", "two", "three"], model=MODELS).wait(30)
    assert sandbox.ledger.submits_received == 6  # only the two cells of "three"
    assert [wider.reused(c) for c in wider] == [True] * 4 + [False] * 2
    assert wider.new_cost == Decimal("1") and wider.total_cost == Decimal("3")
    assert list(wider.to_pandas()["reused"]) == [True] * 4 + [False] * 2
