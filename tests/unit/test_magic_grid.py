"""The magic's compare grids in-process, on IPython's InteractiveShell: ``--grid`` axes,
prompts separated by ``---`` as rows, ``{field}`` templates, the grid as the cell's one
output, and bad input refused before anything is sent.

The API is :class:`tests.helpers.mock_api.Accepting` (every task stays in progress); the
shell's display publisher is a recorder (as in test_one_output.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nanobanana_jupyter import Grid, Session, ValidationError
from nanobanana_jupyter._core.defaults import set_default_session
from nanobanana_jupyter._core.grid import parse_grid, split_prompts
from nanobanana_jupyter._views.magic import NanoBananaMagics, expand_prompt
from tests.helpers.mock_api import Accepting, mock_session
from tests.unit.test_one_output import Published


@pytest.fixture
def api() -> Accepting:
    return Accepting()


@pytest.fixture
def session(tmp_path: Path, api: Accepting) -> Iterator[Session]:
    s = mock_session(tmp_path / "data", api)
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


def grids(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if 'class="nanobanana-grid' in str(o.get("text/html", ""))]


def test_grid_options_split_on_commas_and_keep_colons() -> None:
    assert parse_grid(["model=a, b", "aspect-ratio=1:1,16:9", "size=2k"]) == {
        "model": ["a", "b"],
        "aspect_ratio": ["1:1", "16:9"],
        "image_size": ["2k"],
    }
    for bad, message in (
        (["model"], "NAME=v1,v2"),
        (["model=a", "model=b"], "given twice"),
        (["model="], "no values"),
        (["9x=a"], "not an axis"),
    ):
        with pytest.raises(ValidationError, match=message):
            parse_grid(bad)


def test_prompts_split_on_lines_of_three_dashes_only() -> None:
    assert split_prompts("a cat\n---\na dog\n  ---  \na bird") == ["a cat", "a dog", "a bird"]
    assert split_prompts("a cat --- on a mat\n----\nstill one") == [
        "a cat --- on a mat\n----\nstill one"
    ]
    with pytest.raises(ValidationError, match="prompt 2 of 3"):
        split_prompts("a\n---\n\n---\nb")


def test_expand_keeps_the_grids_fields_and_literal_braces() -> None:
    """--expand fills notebook names but leaves the grid's fields for the grid."""
    out = expand_prompt(
        "a {animal} in {place}, {{braces}}", {"place": "a {hat}"}, keep=frozenset({"animal"})
    )
    assert out == "a {animal} in a {{hat}}, {{braces}}"


def test_a_grid_cell_is_one_table_output_and_sends_one_task_per_cell(
    shell: tuple[InteractiveShell, Published], session: Session, api: Accepting
) -> None:
    ip, published = shell
    result = ip.run_cell(
        "%%nanobanana --grid model=google/gempix2,google/nano-banana-pro "
        "--grid aspect_ratio=1:1,16:9 -o g\na fox in the snow\n",
        store_history=True,
    )
    assert result.error_in_exec is None, result.error_in_exec
    grid = ip.user_ns["g"]
    assert isinstance(grid, Grid) and len(grid) == 4
    assert len(published.outputs) == 1 and len(grids(published.outputs)) == 1
    assert published.display_ids[0] is not None  # live: updated in place
    assert published.results == []  # type: ignore[attr-defined]
    html = published.outputs[0]["text/html"]
    assert "model \\ aspect_ratio" in html and "16:9" in html
    for task in grid.tasks:
        api.submitted.wait(5)
        assert task.prompt == "a fox in the snow"
    assert ip.user_ns["_nanobanana"] is grid


def test_several_prompts_separated_by_dashes_are_the_rows(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, published = shell
    ip.run_cell("%%nanobanana -o g --grid size=1K,2K\na cat\n---\na <b>dog</b>\n")
    grid = ip.user_ns["g"]
    assert [a.name for a in grid.axes] == ["prompt", "image_size"]
    assert grid.layout().rows.name == "prompt"
    html = grids(published.outputs)[0]["text/html"]
    assert "&lt;b&gt;dog&lt;/b&gt;" in html and "<b>dog" not in html
    # Dashes alone (no --grid) make a grid too.
    ip.run_cell("%%nanobanana -o h\none\n---\ntwo\n")
    assert len(ip.user_ns["h"]) == 2


def test_a_grid_field_fills_the_prompt_template(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, _ = shell
    ip.user_ns["style"] = "watercolour"
    ip.run_cell("%%nanobanana -e -o g --grid animal=cat,dog\na {animal} in {style}\n")
    grid = ip.user_ns["g"]
    assert [c.prompt for c in grid] == ["a cat in watercolour", "a dog in watercolour"]
    assert grid.axes[0].name == "animal"


def test_a_line_magic_grid_is_returned_and_shown_once(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, published = shell
    result = ip.run_cell(
        "%nanobanana --grid model=google/gempix2,google/nano-banana a red fox", store_history=True
    )
    assert isinstance(result.result, Grid)
    assert len(published.outputs) == 1
    assert published.results == []  # type: ignore[attr-defined]  # no second copy as Out[]


@pytest.mark.parametrize(
    ("line", "body", "message"),
    [
        ("--grid size=1K,9K", "a cat", "image size '9K'"),
        ("--grid model=a,b --model c", "a cat", "--grid model and --model"),
        ("--grid model=a,b -n 2", "a cat", "-n does not go with a grid"),
        ("--grid prompt=a,b", "a cat", "prompts are given twice"),
        ("--grid colour=red,blue", "a cat", "no {colour} field"),
        ("--grid model", "a cat", "NAME=v1,v2"),
    ],
)
def test_a_bad_grid_is_refused_and_nothing_is_sent(
    shell: tuple[InteractiveShell, Published],
    session: Session,
    api: Accepting,
    line: str,
    body: str,
    message: str,
) -> None:
    ip, published = shell
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ip.run_cell_magic("nanobanana", line, body)
    assert api.submits == [] and session.tasks == [] and published.outputs == []


def test_a_running_grid_shown_in_a_later_cell_gets_a_live_table(
    shell: tuple[InteractiveShell, Published],
) -> None:
    ip, published = shell
    ip.run_cell("g = %nanobanana --grid size=1K,2K a red fox", store_history=True)
    assert len(published.outputs) == 1
    ip.run_cell("g", store_history=True)
    assert len(grids(published.outputs)) == 2
    assert published.display_ids[1] is not None
    assert published.display_ids[1] != published.display_ids[0]
    assert published.results == []  # type: ignore[attr-defined]
    magics = ip.magics_manager.registry["NanoBananaMagics"]
    assert magics._live is not None and magics._live.grids == 2
