"""One cell, one output (issue 16): the line magic's live card is the cell's only output, a
task shown again in the same cell adds nothing, one shown in a later cell gets a live card,
and a list of tasks shows as a gallery of cards under one progress line.

In-process on IPython's InteractiveShell, with its display publisher replaced by a recorder
and the API by :class:`tests.helpers.mock_api.Accepting` (every task stays in progress).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Session
from nanobanana_jupyter._core.defaults import set_default_session
from nanobanana_jupyter._core.task_list import TaskList
from nanobanana_jupyter._views.magic import NanoBananaMagics
from tests.helpers.mock_api import Accepting, mock_session


class Published:
    """Every display message the shell sends: new outputs and in-place updates."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.display_ids: list[str | None] = []  # of each new output

    def publish(self, data: dict[str, Any], metadata: Any = None, **kwargs: Any) -> None:
        if kwargs.get("update"):
            self.updates.append(data)
            return
        self.outputs.append(data)
        self.display_ids.append((kwargs.get("transient") or {}).get("display_id"))

    def clear_output(self, wait: bool = False) -> None:  # pragma: no cover - unused
        pass


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = mock_session(tmp_path / "data", Accepting())
    old = set_default_session(s)
    try:
        yield s
    finally:
        set_default_session(old)
        s.close()


@pytest.fixture
def shell(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[InteractiveShell, Published]]:
    ip = InteractiveShell.instance()
    ip.register_magics(NanoBananaMagics)
    published = Published()
    monkeypatch.setattr(ip.display_pub, "publish", published.publish)
    results: list[Any] = []
    monkeypatch.setattr(
        ip.displayhook, "write_format_data", lambda data, md=None: results.append(data)
    )
    published.results = results  # type: ignore[attr-defined]
    yield ip, published
    magics = ip.magics_manager.registry["NanoBananaMagics"]
    if magics._live is not None:
        magics._live.close()
        magics._live = None


def cell(ip: InteractiveShell, source: str) -> Any:
    result = ip.run_cell(source, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    return result.result


def cards(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if 'class="nanobanana-card' in str(o.get("text/html", ""))]


def test_a_bare_line_magic_shows_its_live_card_and_nothing_else(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, published = shell
    task = cell(ip, "%nanobanana a red fox in the snow")
    assert len(cards(published.outputs)) == 1
    assert published.outputs == cards(published.outputs)
    assert published.results == []  # type: ignore[attr-defined]  # no stale Out[] line
    assert task is not None


def test_assigning_then_showing_in_the_same_cell_is_still_one_output(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, published = shell
    cell(ip, "t = %nanobanana a red fox in the snow\nt")
    assert len(published.outputs) == 1
    assert published.results == []  # type: ignore[attr-defined]


def test_a_running_task_shown_in_a_later_cell_gets_a_card_that_stays_current(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, published = shell
    cell(ip, "t = %nanobanana a red fox in the snow")
    assert len(published.outputs) == 1
    cell(ip, "t")
    assert len(cards(published.outputs)) == 2
    assert published.results == []  # type: ignore[attr-defined]
    # A live card: it has a display id the engine's updates go to.
    assert published.display_ids[1] is not None
    assert published.display_ids[1] != published.display_ids[0]
    magics = ip.magics_manager.registry["NanoBananaMagics"]
    assert magics._live is not None
    assert magics._live.slots == 2


def test_a_list_of_tasks_is_a_task_list_shown_once_as_cards_with_a_progress_line(
    shell: tuple[InteractiveShell, Published], session: Session
) -> None:
    ip, published = shell
    tasks = cell(ip, "%nanobanana -n 2 two foxes")
    assert isinstance(tasks, TaskList)
    assert len(tasks) == 2
    assert len(cards(published.outputs)) == 2
    progress = [o for o in published.outputs if o not in cards(published.outputs)]
    assert len(progress) == 1
    assert "0/2 done" in str(progress[0]["text/plain"])
    assert published.results == []  # type: ignore[attr-defined]
    # session.map returns one too, and shown in a later cell it is a gallery of live cards.
    ip.user_ns["s"] = session
    cell(ip, "many = s.map(['one cat', 'two cats', 'three cats'])")
    before = len(published.outputs)
    cell(ip, "many")
    added = published.outputs[before:]
    assert len(cards(added)) == 3
    assert len(added) == 4  # the three cards and one progress line
    assert isinstance(ip.user_ns["many"], TaskList)
    assert ip.user_ns["many"] == list(ip.user_ns["many"])  # still a plain list to code
