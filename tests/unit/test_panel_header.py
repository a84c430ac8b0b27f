"""The panel's header and history table: the sandbox badge, pretend credits, spent and
reused credits kept apart, and a thumbnail per history row.

Panels over ``Session.sandbox()`` (a sandbox server in this process on 127.0.0.1; no task is
run, the store is seeded) and over the mocked API of tests/helpers/mock_api.py; the cards
over a fake session. No wall-clock assertion.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nanobanana_jupyter import Session, SessionCredits, TaskRecord, TaskStatus
from nanobanana_jupyter._display.html import HISTORY_COLUMNS
from nanobanana_jupyter._store.records import ImageRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter._views.panel.cards import Cards
from nanobanana_jupyter._views.panel.context import PanelContext
from tests.helpers.mock_api import mock_session
from tests.unit.test_panel import FakeClock, FakeSession, FakeTask, _record, generate, settle

BADGE_CLASS = "nanobanana-sandbox-badge"


def _seed(data_dir: Path, n: int, *, images: bool = False) -> list[TaskRecord]:
    """``n`` successful tasks of 0.5 credits each in the data dir's store (with an image on
    disk each when ``images``)."""
    now = time.time() - n
    records = []
    for i in range(n):
        image: tuple[ImageRecord, ...] = ()
        if images:
            full = data_dir / f"full{i}.png"
            thumb = data_dir / f"thumb{i}.jpg"
            data_dir.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (96, 64), (20 * i, 120, 40)).save(full, format="PNG")
            Image.new("RGB", (48, 32), (20 * i, 120, 40)).save(thumb, format="JPEG")
            image = (ImageRecord(f"{i:02d}" * 32, str(full), "image/png", 96, 64, 1, str(thumb)),)
        records.append(
            TaskRecord(
                local_id=uuid.uuid4().hex,
                status=TaskStatus.SUCCESS,
                prompt=f"seeded prompt {i}",
                model="google/gempix2",
                fingerprint=uuid.uuid4().hex,
                created_at=now + i,
                updated_at=now + i,
                task_id=f"ta{i:08d}",
                submitted_at=now + i,
                finished_at=now + i + 5,
                consumed=Decimal("0.5"),
                images=image,
            )
        )
    with Store(data_dir / "history.sqlite3") as store:
        store.insert_many(records)
    return records


@pytest.fixture
def make_panel() -> Iterator[Callable[..., Panel]]:
    made: list[Panel] = []

    def build(session: Session, **kwargs: Any) -> Panel:
        panel = Panel(session=session, **kwargs)
        made.append(panel)
        return panel

    yield build
    for panel in made:
        settle(panel.session, panel.tasks)
        panel.close()


def header_widgets(panel: Panel) -> list[Any]:
    header = panel.children[0]
    return list(header.children)


def header_text(panel: Panel) -> str:
    """Every word of the header, as its widgets hold them."""
    return " ".join(str(getattr(w, "value", "")) for w in header_widgets(panel))


def badges(panel: Panel) -> list[Any]:
    return [w for w in header_widgets(panel) if BADGE_CLASS in w._dom_classes]


def test_a_sandbox_panel_shows_its_badge_and_says_pretend_credits_everywhere(
    tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """The header says sandbox and pretend credits (never "no credits"); so does the table."""
    _seed(tmp_path / "sb", 3)
    with Session.sandbox(data_dir=tmp_path / "sb") as sandbox:
        assert sandbox.is_sandbox
        panel = make_panel(sandbox)
        (badge,) = badges(panel)
        assert "sandbox" in badge.value
        assert "pretend credits" in badge.value
        assert "nothing is sent to defapi.org" in badge.value
        words = header_text(panel)
        assert "no credits" not in words
        assert panel.cost_label.value == (
            "this panel: 0 tasks, 0 pretend credits · all: 3 tasks, 1.5 pretend credits"
        )
        table = panel.history_html.value
        assert "1.5 pretend credits" in table
        assert table.count("0.5 pretend credits") == 3
        assert "pretend" in repr(panel)


def test_a_panel_on_the_real_service_has_no_badge_and_real_credits(
    tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """Over a real (here mocked) service: no badge, and credits are credits."""
    _seed(tmp_path / "real", 3)
    with mock_session(tmp_path / "real") as session:
        assert not session.is_sandbox
        panel = make_panel(session)
        assert badges(panel) == []
        assert "sandbox" not in header_text(panel)
        assert (
            panel.cost_label.value == "this panel: 0 tasks, 0 credits · all: 3 tasks, 1.5 credits"
        )
        assert "pretend" not in panel.history_html.value


def test_the_header_counts_a_request_handed_back_as_reused_not_spent(
    tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """A panel request identical to one sent earlier (here by code) is reused, not spent."""
    with mock_session(tmp_path / "reuse") as session:
        earlier = session.generate("the same banana")
        panel = make_panel(session)
        (task,) = generate(panel, "the same banana")
        assert task.reused and task.local_id == earlier.local_id
        (fresh,) = generate(panel, "another banana")
        assert not fresh.reused
        panel.show_history_page(0)
        assert panel.cost_label.value.startswith(
            "this panel: 2 tasks, 0 credits spent, 1 reused (no new charge)"
            " · this session: 0 credits spent; reused once, no new charge · all: 2 tasks"
        )
        settle(session, [earlier])


def test_the_header_shows_the_sessions_spent_and_reused_credits_once_it_reused(
    tmp_path: Path, make_panel: Callable[..., Panel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the session has handed a task back, the header splits its credits: spent, and
    what reuse saved (``session.credits``), in the history table's words."""
    credits = SessionCredits(
        spent=Decimal("1"), reused=Decimal("1.5"), submitted=2, reuses=3, pretend=True
    )
    monkeypatch.setattr(Session, "credits", property(lambda self: credits))
    with Session.sandbox(data_dir=tmp_path / "sb", quiet=True) as sandbox:
        panel = make_panel(sandbox)
        assert panel.cost_label.value == (
            "this panel: 0 tasks, 0 pretend credits"
            " · this session: 1 pretend credit spent; reused 3 times"
            " (1.5 pretend credits not charged again)"
            " · all: 0 tasks, 0 pretend credits"
        )


def test_the_panels_history_has_a_thumbnail_per_row_and_whole_ids(
    tmp_path: Path, make_panel: Callable[..., Panel]
) -> None:
    """Each row with an image shows its thumbnail (the same as ``%nanobanana history``)."""
    records = _seed(tmp_path / "thumbs", 3, images=True)
    with mock_session(tmp_path / "thumbs") as session:
        panel = make_panel(session)
        table = panel.history_html.value
        assert table.count("<img ") == 3
        assert table.count('src="data:image/') == 3
        assert "id" in HISTORY_COLUMNS
        for record in records:
            assert f'title="{record.task_id}"' in table


def _sandbox_context(*, sandbox: bool) -> PanelContext:
    fake = FakeSession()
    fake.is_sandbox = sandbox
    return PanelContext(fake, clock=FakeClock())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sandbox", "reused", "shown"),
    [
        (False, False, "0.5 credits"),
        (True, False, "0.5 pretend credits"),
        (True, True, "reused, no new charge"),
        (False, True, "reused, no new charge"),
    ],
)
def test_a_card_says_pretend_credits_in_a_sandbox_and_reused_when_handed_back(
    sandbox: bool, reused: bool, shown: str
) -> None:
    """The panel's card words its cost as the display layer's card does."""
    cards = Cards(_sandbox_context(sandbox=sandbox))
    task = FakeTask(_record(TaskStatus.SUCCESS, consumed=Decimal("0.5")))
    task.reused = reused
    task.finished = True
    assert cards.add(task)  # type: ignore[arg-type]
    card = cards.card_of("t1")
    assert card is not None and card.cost.value == shown
