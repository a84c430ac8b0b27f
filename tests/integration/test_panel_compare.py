"""The panel's compare mode against a real sandbox: chips as axes, Generate as one grid, its
live table, reuse on a re-run, and bad grids refused whole with nothing sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter import Session, TaskStatus
from nanobanana_jupyter._views.panel import Panel
from nanobanana_jupyter.sandbox import Sandbox
from tests.integration.test_panel import make_session, wait_for

MODELS = ("google/nano-banana", "google/nano-banana-pro")
ASPECTS = ("1:1", "16:9")


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    with make_session(sandbox, tmp_path / "data") as s:
        yield s


@pytest.fixture
def panel(session: Session) -> Iterator[Panel]:
    made = Panel(session=session)
    yield made
    for task in made.compare.tasks:  # no submit left in flight when the session closes
        wait_for(lambda t=task: t.done() or t.task_id is not None, what="the submit to answer")
    made.close()


def compare(
    panel: Panel,
    prompt: str,
    *,
    models: tuple[str, ...] = (),
    aspects: tuple[str, ...] = (),
    **more: Any,
) -> None:
    """Compare mode on, the chips given switched on, then a click on Generate."""
    panel.compare.toggle.value = True
    panel.prompt_box.value = prompt
    for model in models:
        panel.compare.model_chips[model].value = True
    for aspect in aspects:
        panel.compare.aspect_chips[aspect].value = True
    for name, value in more.items():
        getattr(panel.compare, name).value = value
    panel.composer.last_submit = -1e9  # a deliberate click, not a double click
    panel.generate_button.click()


def test_a_two_by_two_grid_fills_its_table_live_with_costs_and_a_rerun_sends_nothing(
    panel: Panel, sandbox: Sandbox
) -> None:
    """Two models by two aspect ratios: four cells sent, the table shown at once and redrawn
    until it has four previews, each cell's cost and the total; the same grid again reuses
    every cell and sends nothing."""
    compare(panel, "A banana in a bowl", models=MODELS, aspects=ASPECTS)
    grid = panel.compare.grid
    assert grid is not None and len(grid) == 4
    assert [a.name for a in grid.axes] == ["model", "aspect_ratio"]
    assert panel.tasks == []  # the composer itself started nothing
    assert panel.compare.view.layout.display == ""
    assert panel.compare.options_box.layout.display == ""
    assert panel.count_box.disabled  # one task per cell
    assert "Started a grid of 4 cells: 4 sent." in panel.status_text
    first = panel.compare.grid_html.value
    assert "nanobanana-grid" in first

    grid.wait(30)
    assert [t.status for t in grid.tasks] == [TaskStatus.SUCCESS] * 4
    # Redrawn by the panel's ticker (throttled), not by the test.
    wait_for(lambda: panel.compare.grid_html.value.count("<img ") == 4, what="four previews")
    html = panel.compare.grid_html.value
    assert html.count('src="data:image/') == 4
    # (Pretend credits once the session knows it talks to a sandbox.)
    assert len(re.findall(r">0\.5 (?:pretend )?credits<", html)) == 4
    assert re.search(r"total 2 (?:pretend )?credits", html)
    for label in (*MODELS, *ASPECTS):
        assert label in html
    assert sandbox.ledger.submits_received == 4
    wait_for(
        lambda: re.search(r"this panel: 4 tasks, 2 (pretend )?credits", panel.cost_label.value),
        what="the header's totals",
    )

    compare(panel, "A banana in a bowl")  # the chips are still on: the same grid
    again = panel.compare.grid
    assert again is not None and again is not grid
    assert all(again.reused(cell) for cell in again)
    assert sandbox.ledger.submits_received == 4  # nothing new was sent
    assert "4 sent" not in panel.status_text
    assert "0 sent, 4 reused (no new charge)" in panel.status_text
    wait_for(lambda: panel.compare.grid_html.value.count("<img ") == 4, what="the reused grid")
    assert "4 cells reused, no new charge" in panel.compare.grid_html.value


def test_a_cell_opens_in_the_gallerys_larger_view(panel: Panel) -> None:
    """Once cells have images, the cell list names them by their axes and View opens one."""
    compare(panel, "A pear", aspects=ASPECTS)
    grid = panel.compare.grid
    assert grid is not None
    grid.wait(30)
    wait_for(lambda: len(panel.compare.cell_box.options) == 2, what="the cells to open")
    labels = [label for label, _ in panel.compare.cell_box.options]
    assert labels == ["aspect_ratio=1:1", "aspect_ratio=16:9"]
    assert panel.compare.cell_box.value == panel.compare.cell_box.options[0][1]
    panel.compare.cell_box.value = panel.compare.cell_box.options[1][1]
    wait_for(lambda: panel.gallery.find(panel.compare.cell_box.value) is not None, what="gallery")
    panel.tabs.selected_index = 1
    panel.compare.view_button.click()
    assert panel.detail_box.layout.display == ""
    assert panel.tabs.selected_index == 0
    assert panel.compare.cell_box.value in panel.detail_path.value


def test_prompts_separated_by_lines_of_dashes_are_an_axis(panel: Panel, sandbox: Sandbox) -> None:
    """Two prompts and a typed model id besides a chip: a 2 x 2 grid, prompts as rows."""
    compare(
        panel,
        "A red apple\n---\nA green apple",
        models=(MODELS[0],),
        models_text="my/own-model",
    )
    grid = panel.compare.grid
    assert grid is not None
    assert [(a.name, a.labels) for a in grid.axes] == [
        ("prompt", ("A red apple", "A green apple")),
        ("model", (MODELS[0], "my/own-model")),
    ]
    assert "Not a known model id, sent as given: my/own-model." in panel.status_text
    grid.wait(30)
    assert sandbox.ledger.submits_received == 4


@pytest.mark.parametrize(
    ("prompt", "chips", "words"),
    [
        ("A plum", {}, "Compare needs two values or more on an axis"),
        ("", {"aspects": ASPECTS}, "Write a prompt first."),
        ("A plum\n---\n\n---\nA fig", {"aspects": ASPECTS}, "prompt 2 of 3"),
        (
            "\n---\n".join(f"fruit {i}" for i in range(5)),
            {"models": MODELS, "aspects": ("1:1", "16:9", "4:3", "3:4", "9:16", "21:9", "auto")},
            "a grid of 70 cells",
        ),
    ],
    ids=["one-cell", "no-prompt", "empty-prompt-block", "too-many-cells"],
)
def test_a_bad_grid_is_refused_in_one_line_and_nothing_is_sent(
    panel: Panel, sandbox: Sandbox, prompt: str, chips: dict[str, Any], words: str
) -> None:
    """A grid that cannot be made says why in the status line (one line, red); no request."""
    compare(panel, prompt, **chips)
    assert panel.compare.grid is None
    assert words in panel.status_text
    assert "\n" not in panel.status_text
    assert "color:" in panel.status_html.value and "inherit" not in panel.status_html.value
    assert panel.compare.view.layout.display == "none"
    assert sandbox.ledger.submits_received == 0


def test_a_grid_over_the_budget_is_refused_whole(
    panel: Panel, session: Session, sandbox: Sandbox
) -> None:
    """Under a budget that fits two cells of four, none is sent and the status line says so."""
    session.budget = 1
    compare(panel, "A kiwi", models=MODELS, aspects=ASPECTS)
    assert panel.compare.grid is None
    assert "budget" in panel.status_text.lower()
    assert "\n" not in panel.status_text
    assert sandbox.ledger.submits_received == 0
