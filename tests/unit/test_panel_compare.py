"""The panel's compare part over a mock session and a fake clock: which changes it follows,
and how its table's redraws are throttled (the sandbox tests are in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter import Session
from nanobanana_jupyter._views.panel.compare import Compare
from nanobanana_jupyter._views.panel.composer import Composer
from nanobanana_jupyter._views.panel.context import PanelContext
from nanobanana_jupyter._views.panel.showing import GRID_INTERVAL
from tests.helpers.mock_api import mock_session
from tests.unit.test_panel import settle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    with mock_session(tmp_path / "data") as s:
        yield s


@pytest.fixture
def parts(session: Session) -> Iterator[tuple[Compare, Clock, list[float]]]:
    clock = Clock()
    ctx = PanelContext(session, clock=clock)
    compare = Compare(ctx, Composer(ctx))
    drawn: list[float] = []
    render = compare.render

    def counted(now: float | None = None) -> None:
        drawn.append(clock.now if now is None else now)
        render(now)

    compare.render = counted  # type: ignore[method-assign]
    yield compare, clock, drawn
    settle(session, compare.tasks)
    ctx.shut()


def start(compare: Compare, prompt: str = "a pear", *aspects: str) -> Any:
    compare.toggle.value = True
    compare._composer.prompt_box.value = prompt
    for aspect in aspects or ("1:1", "16:9"):
        compare.aspect_chips[aspect].value = True
    return compare.run()


def test_a_running_grid_is_redrawn_at_most_every_interval(
    parts: tuple[Compare, Clock, list[float]],
) -> None:
    """Changes of its cells mark the table; a flush within the interval waits (and says
    there is more to do), one after it redraws once; nothing changed, nothing drawn."""
    compare, clock, drawn = parts
    grid = start(compare)
    assert grid is not None and not grid.done()
    assert drawn == [100.0]  # shown at once when it starts
    assert compare.follow(grid.tasks[0])
    clock.now += GRID_INTERVAL / 2
    assert compare.flush(clock.now) is True
    assert drawn == [100.0]
    assert compare.follow(grid.tasks[1])  # coalesced with the first change
    clock.now = 100.0 + GRID_INTERVAL
    assert compare.flush(clock.now) is False
    assert drawn == [100.0, clock.now]
    clock.now += 5
    assert compare.flush(clock.now) is False  # nothing changed since
    assert len(drawn) == 2


def test_it_follows_only_the_cells_of_the_grid_shown(
    parts: tuple[Compare, Clock, list[float]], session: Session
) -> None:
    """A task outside the grid (or of an earlier grid) leaves the table alone."""
    compare = parts[0]
    first = start(compare, "a plum")
    other = session.generate("something else")
    settle(session, [other])
    assert not compare.follow(other)
    second = start(compare, "a fig")
    assert second is not None and first is not None
    assert not compare.follow(first.tasks[0])
    assert compare.follow(second.tasks[0])
    assert {t.local_id for t in compare.tasks} == {
        t.local_id for t in (*first.tasks, *second.tasks)
    }
