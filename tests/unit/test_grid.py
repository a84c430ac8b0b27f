"""Compare grids: the axes' product, validation before anything is sent, the layout, the
escaped static HTML and text, the live table, and ``Grid.to_pandas``.

No server: requests go to :class:`tests.helpers.mock_api.Accepting` (every task stays in
progress), so "nothing was sent" is checked on its list of submits.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter import Grid, Session, ValidationError
from nanobanana_jupyter._core.grid import (
    MAX_GRID_CELLS,
    GridPlan,
    fill_template,
    layout,
    plan_grid,
)
from nanobanana_jupyter._core.task import Task, TaskState
from nanobanana_jupyter._display.grid import grid_bundle, grid_html, grid_text
from nanobanana_jupyter._wire.models import TaskStatus
from tests.helpers.mock_api import Accepting, mock_session
from tests.unit.test_magic import FakeSession, Sends, live_outputs
from tests.unit.test_render import make_record

# -- planning: the product and its checks -------------------------------------------------


def test_the_cells_are_the_product_of_the_list_axes_first_axis_slowest() -> None:
    """Lists are axes, scalars fixed; cells come in product order with their labels."""
    plan = plan_grid(prompt=["a cat", "a dog"], model=["m1", "m2", "m3"], aspect_ratio="1:1")
    assert [a.name for a in plan.axes] == ["prompt", "model"]
    assert len(plan.cells) == 6
    assert [(c.prompt, c.model) for c in plan.cells[:4]] == [
        ("a cat", "m1"),
        ("a cat", "m2"),
        ("a cat", "m3"),
        ("a dog", "m1"),
    ]
    assert all(c.aspect_ratio == "1:1" for c in plan.cells)
    assert plan.fixed == {"aspect_ratio": "1:1"}
    assert dict(plan.cells[5].labels) == {"prompt": "a dog", "model": "m3"}
    assert dict(plan.cells[5].index) == {"prompt": 1, "model": 2}


def test_an_images_axis_takes_single_references_or_lists_of_them() -> None:
    """images=[a, [b, c]] is two cells: one reference, then two; a scalar is fixed."""
    plan = plan_grid(prompt="x", images=["https://h/a.png", ["https://h/b.png", "c.png"]])
    assert [c.images for c in plan.cells] == [
        ("https://h/a.png",),
        ("https://h/b.png", "c.png"),
    ]
    assert plan.axes[0].labels == ("a.png", "b.png + c.png")
    fixed = plan_grid(prompt=["x", "y"], images="https://h/a.png")
    assert [c.images for c in fixed.cells] == [("https://h/a.png",)] * 2
    assert fixed.fixed["images"] == "a.png"


def test_a_prompt_template_fills_its_fields_and_a_list_field_is_an_axis() -> None:
    """fill={"animal": [...]} makes an axis named animal; a scalar fill value is fixed."""
    plan = plan_grid(
        prompt="a {animal} in a {hat} hat, {{literal}}",
        fill={"animal": ["cat", "dog"], "hat": "red"},
        model=["m1", "m2"],
    )
    assert [a.name for a in plan.axes] == ["animal", "model"]
    assert plan.cells[2].prompt == "a dog in a red hat, {literal}"
    assert plan.fixed["hat"] == "red"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "x", "model": []}, "model axis is empty"),
        ({"prompt": ["a", "a"]}, "lists 'a' twice"),
        ({"prompt": "x", "image_size": ["2k", "2K"]}, "lists '2K' twice"),
        ({"prompt": "{animal}", "fill": {"colour": ["r"]}}, "no {colour} field"),
        ({"prompt": "{animal} {x}", "fill": {"animal": ["c"]}}, "fill gives no 'x'"),
        ({"prompt": "{status}", "fill": {"status": ["a"]}}, "taken by the request"),
        ({"prompt": 3}, "not a int"),
        ({"prompt": "x", "model": [1, 2]}, "model is text"),
    ],
)
def test_a_wrong_axis_is_refused_with_what_to_do(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        plan_grid(**kwargs)


def test_more_cells_than_the_cap_are_refused_naming_the_axes() -> None:
    prompts = [f"p{i}" for i in range(MAX_GRID_CELLS // 2 + 1)]
    with pytest.raises(ValidationError, match=rf"{len(prompts) * 2} cells .*more than 64"):
        plan_grid(prompt=prompts, model=["m1", "m2"])
    assert len(plan_grid(prompt=prompts[:-1], model=["m1", "m2"]).cells) == MAX_GRID_CELLS


def test_fill_template_refuses_private_attributes() -> None:
    with pytest.raises(ValidationError, match="private"):
        fill_template("{x.__class__}", {"x": 1})


def test_layout_rows_then_columns_then_tables_and_one_value_axes_change_nothing() -> None:
    plan = plan_grid(
        prompt=["a", "b"], model=["only"], aspect_ratio=["1:1", "16:9"], image_size=["1K", "2K"]
    )
    shape = layout(plan.axes)
    assert shape.rows is not None and shape.rows.name == "prompt"
    assert shape.columns is not None and shape.columns.name == "aspect_ratio"
    assert [a.name for a in shape.rest] == ["image_size"]
    single = layout(plan_grid(prompt="a", model=["m1", "m2"]).axes)
    assert single.rows is not None and single.rows.name == "model" and single.columns is None


# -- Session.grid: everything checked before anything is sent --------------------------------


@pytest.fixture
def api() -> Accepting:
    return Accepting()


@pytest.fixture
def session(tmp_path: Path, api: Accepting) -> Iterator[Session]:
    s = mock_session(tmp_path / "data", api)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": ["1K", "8K"]}, "image size '8K'"),
        ({"aspect_ratio": ["1:1", "7:5"]}, "aspect ratio '7:5'"),
        ({"model": ["google/gempix2", " "]}, "model is empty"),
        ({"images": ["https://h/a.png", "ftp://h/b.png"]}, "does not exist"),
    ],
)
def test_one_bad_cell_fails_the_whole_grid_and_nothing_is_sent(
    session: Session, api: Accepting, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        session.grid(["a cat", "a dog"], **kwargs)
    assert api.submits == [] and session.tasks == [] and len(session.history) == 0


def test_two_cells_making_the_same_request_are_refused(session: Session, api: Accepting) -> None:
    """1K and 1k are one size: the two cells would be one task."""
    with pytest.raises(ValidationError, match="lists '1K' twice"):
        session.grid("a cat", image_size=["1K", "1k"])
    with pytest.raises(ValidationError, match="same request"):
        session.grid("a cat", images=["https://h/a.png", ["https://h/a.png"]])
    assert api.submits == []


def test_a_grid_starts_one_task_per_cell_with_the_cells_options(
    session: Session, api: Accepting
) -> None:
    grid = session.grid(["a cat", "a dog"], aspect_ratio=["1:1", "16:9"], image_size="2k")
    assert isinstance(grid, Grid) and len(grid) == 4 and len(grid.tasks) == 4
    api.submitted.wait(5)
    for task in grid.tasks:
        assert task.record.image_size == "2K"
    assert [(c.task.prompt, c.task.record.aspect_ratio) for c in grid if c.task] == [
        ("a cat", "1:1"),
        ("a cat", "16:9"),
        ("a dog", "1:1"),
        ("a dog", "16:9"),
    ]
    frame = grid.to_pandas()
    assert list(frame.columns[:3]) == ["prompt", "aspect_ratio", "reused"]
    assert "status" in frame.columns and "local_id" in frame.columns
    assert list(frame["aspect_ratio"]) == ["1:1", "16:9", "1:1", "16:9"]
    assert len(frame) == 4


# -- rendering ---------------------------------------------------------------------------------


class _Owner:
    """What a Task asks of its session, for grids built by hand."""

    data_dir = Path(".")
    is_sandbox = False

    def in_engine_thread(self) -> bool:
        return False

    def after_wait(self) -> None:
        pass

    def events_delivered(self) -> None:
        pass


def _thumb_file(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "thumb.jpg"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path, format="JPEG")
    return str(path)


def hand_grid(plan: GridPlan, statuses: list[TaskStatus], owner: Any = None, **extra: Any) -> Grid:
    tasks = []
    for i, (cell, status) in enumerate(zip(plan.cells, statuses, strict=True)):
        record = make_record(
            status,
            prompt=cell.prompt,
            model=cell.model or "google/gempix2",
            paths=extra.get("paths", ()),
        ).replace(local_id=f"loc-{i}", task_id=f"ta{i:04d}", aspect_ratio=cell.aspect_ratio)
        if status is not TaskStatus.SUCCESS:
            record = record.replace(consumed=None)
        tasks.append(Task(owner or _Owner(), TaskState(record)))  # type: ignore[arg-type]
    return Grid(plan, tasks)


def test_the_html_is_a_labelled_escaped_table_with_costs_and_the_total() -> None:
    """Prompts with markup are escaped in headings, titles and alts; costs and total shown."""
    plan = plan_grid(prompt=["<script>alert(1)</script>", "a dog"], model=["m1", "m2"])
    statuses = [TaskStatus.SUCCESS, TaskStatus.SUCCESS, TaskStatus.IN_PROGRESS, TaskStatus.FAILED]
    grid = hand_grid(plan, statuses)
    html = grid_html(grid)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<table") == 1 and html.count("<tr>") == 3  # header row + 2 rows
    assert ">m1</bdi></th>" in html and ">m2</bdi></th>" in html
    assert "prompt \\ model" in html
    assert html.count("0.5 credits") == 2
    assert "total 1 credit" in html and "so far" in html
    assert "1/4 done" not in html and "3/4 done" in html  # the progress line while it runs
    assert "javascript" not in html.lower()


def test_a_third_axis_makes_one_table_per_value_headed_by_it() -> None:
    plan = plan_grid(prompt=["a", "b"], model=["m1", "m2"], aspect_ratio=["1:1", "16:9"])
    grid = hand_grid(plan, [TaskStatus.SUCCESS] * 8)
    html = grid_html(grid)
    assert html.count("<table") == 2
    assert "aspect_ratio = 1:1" in html and "aspect_ratio = 16:9" in html
    assert "so far" not in html and "total 4 credits" in html


def test_cells_embed_their_thumbnail_once_in_the_html_and_no_image_output(
    tmp_path: Path,
) -> None:
    plan = plan_grid(prompt=["a", "b"])
    grid = hand_grid(plan, [TaskStatus.SUCCESS] * 2, paths=(_thumb_file(tmp_path),))
    data = grid_bundle(grid)
    assert set(data) == {"text/plain", "text/html"}
    html = data["text/html"]
    assert html.count('src="data:image/') == 2
    src = html.split('src="', 1)[1].split('"', 1)[0]
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
        assert max(img.size) <= 192


def test_the_text_form_says_each_cell_and_the_total() -> None:
    plan = plan_grid(prompt="a <cat>", model=["m1", "m2"])
    grid = hand_grid(plan, [TaskStatus.SUCCESS, TaskStatus.FAILED])
    text = grid_text(grid)
    assert text.splitlines()[0] == "<Grid: grid · 2 cells · model (2) · prompt: 'a <cat>'>"
    assert "model='m1': success · 0.5 credits · ta0000" in text
    assert "model='m2': failed · — · ta0001" in text
    assert text.splitlines()[-1] == "total 0.5 credits"
    assert repr(grid) == text
    assert grid.total_cost == Decimal("0.5") and grid.new_cost == Decimal("0.5")


# -- live: one table updated in place ------------------------------------------------------


def test_a_live_grid_is_one_output_updated_in_place_and_flushed_when_done() -> None:
    """Changes update the one table (throttled, the last at once); the flush after a wait
    sends the final table from the waiting thread and retires it."""
    fake = FakeSession()
    sends = Sends()
    plan = plan_grid(prompt=["a", "b"])
    grid = hand_grid(plan, [TaskStatus.IN_PROGRESS] * 2, owner=fake)
    for task in grid.tasks:
        fake._handles[task.local_id] = task
    live = live_outputs(fake, sends)
    now = [100.0]
    live._clock = lambda: now[0]
    shown: list[tuple[str, str]] = []

    def record(data: Any, **kwargs: Any) -> None:
        shown.append((kwargs["display_id"], data["text/plain"]))

    live._show = live._update = record
    display_id = live.open_grid(grid)
    assert len(shown) == 1 and live.grids == 1
    first, second = grid.tasks
    fake.move(first, first.record.replace(status=TaskStatus.SUCCESS, updated_at=2e9))
    assert len(shown) == 1  # within the throttle: marked for the next tick
    now[0] += 1.0
    live._refresh_running(now[0])
    assert len(shown) == 2 and "1/2 done" in shown[-1][1]
    fake.move(second, second.record.replace(status=TaskStatus.SUCCESS, updated_at=2e9))
    assert len(shown) == 3 and "so far" not in shown[-1][1]  # the last one at once
    assert {d for d, _ in shown} == {display_id}
    live.flush()
    assert live.grids == 0
    live.close()


def test_a_cell_ending_while_the_flush_draws_the_table_does_not_retire_it_stale() -> None:
    """The race behind the saved notebooks that kept "3/4 done": the flush after a wait drew
    the table, the last cell ended while it drew (on the engine thread), and the flush then
    saw the grid done and retired the table, so the final one was never sent from the
    cell's thread. The flush retires a table only once it has sent a table drawn from the
    final state."""
    import nanobanana_jupyter._display.live as live_module

    fake = FakeSession()
    sends = Sends()
    plan = plan_grid(prompt=["a", "b"])
    grid = hand_grid(plan, [TaskStatus.IN_PROGRESS] * 2, owner=fake)
    for task in grid.tasks:
        fake._handles[task.local_id] = task
    live = live_outputs(fake, sends)
    shown: list[str] = []

    def record(data: Any, **kwargs: Any) -> None:
        shown.append(data["text/plain"])

    live._show = live._update = record
    live.open_grid(grid)
    first, second = grid.tasks
    real_bundle = live_module.grid_bundle
    ended = second.record.replace(status=TaskStatus.SUCCESS, updated_at=2e9)

    def drawn_while_the_cell_ends(g: Grid) -> Any:
        bundle = real_bundle(g)  # drawn from "1/2 done" ...
        if second.record.status is not TaskStatus.SUCCESS:
            second._state.update(ended)  # ... and the cell ends before the flush looks again
        return bundle

    live_module.grid_bundle = drawn_while_the_cell_ends  # type: ignore[assignment]
    try:
        first._state.update(first.record.replace(status=TaskStatus.SUCCESS, updated_at=2e9))
        live.flush()
    finally:
        live_module.grid_bundle = real_bundle  # type: ignore[assignment]
    assert "so far" in shown[-1]  # what that flush sent: drawn before the end
    assert live.grids == 1  # kept: its final table was not sent yet
    live.flush()  # the next flush (the next wait's, or the magic's own) sends it
    assert "so far" not in shown[-1] and live.grids == 0
    live.close()
