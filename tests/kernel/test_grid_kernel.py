"""A compare grid in a real kernel (issue 17, item 1): ``%%nanobanana --grid`` with two
``---``-separated prompts is one output, updated in place until it ends with four
previews and a total; saved headless with nbclient, the notebook keeps that final table as
static HTML (no widget JavaScript). Each case runs twice: the table races the engine
thread that starts and finishes the cells (the flush after a wait once retired the table
while its last cell ended, so the final table was never sent from the cell's thread; see
tests/unit/test_grid.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from nanobanana_jupyter.sandbox import Sandbox
from tests.kernel.conftest import Kernel
from tests.kernel.test_magic_kernel import _run_notebook

GRID_CELL = "%%nanobanana --grid aspect_ratio=1:1,16:9\na red fox\n---\na blue whale"
WIDGET_TYPES = ("application/vnd.jupyter.widget-view+json", "application/javascript")


def _is_final_table(html: str) -> bool:
    """Four previews and a total that is no longer "so far"."""
    total = re.search(r'class="nanobanana-grid-total"[^>]*>([^<]*)<', html)
    return (
        html.count("<img ") == 4
        and total is not None
        and total.group(1).startswith("total ")
        and "so far" not in total.group(1)
    )


@pytest.mark.parametrize("run", range(2))
def test_a_grid_cell_is_one_output_updated_in_place_to_its_final_table(
    kernel: Kernel, run: int
) -> None:
    """One display_data with a display id; every later change is an update_display_data of
    that id (no new output anywhere), the last one the finished table."""
    ex = kernel.execute(GRID_CELL)
    outputs = ex.of_type("display_data", "execute_result", "error")
    assert [m["msg_type"] for m in outputs] == ["display_data"], outputs
    first = outputs[0]["content"]
    display_id = first["transient"]["display_id"]
    assert 'class="nanobanana-grid' in first["data"]["text/html"]
    assert not _is_final_table(first["data"]["text/html"])  # it returned before the end
    waited = kernel.execute("_ = _nanobanana.wait(90)", timeout=120)
    assert waited.of_type("display_data", "execute_result", "error") == []
    messages: list[dict[str, Any]] = [
        m for _, m in ex.messages + kernel.stray + waited.messages + kernel.collect(1.0)
    ]
    updates = [
        m
        for m in messages
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == display_id
    ]
    assert updates, "the table was never updated"
    # The lists above are grouped by the request they answer, not by time: updates sent
    # from the engine's threads carry the first cell's parent, the wait's flush the second's.
    # What a front end shows is the one that came last, so order them as they were sent.
    updates.sort(key=lambda m: str(m["header"]["date"]))
    strays = [m for m in messages if m["msg_type"] in ("display_data", "execute_result")]
    assert strays == [m for _, m in ex.messages if m["msg_type"] == "display_data"]
    last = updates[-1]["content"]["data"]
    assert _is_final_table(last["text/html"]), last["text/plain"]
    assert "image/jpeg" not in last and "image/png" not in last  # previews live in the HTML
    assert not any(t in m["content"].get("data", {}) for m in updates for t in WIDGET_TYPES)


@pytest.mark.parametrize("run", range(2))
def test_a_saved_headless_notebook_keeps_the_final_grid_table(
    slow_sandbox: Sandbox, tmp_path: Path, run: int
) -> None:
    """nbclient (NANOBANANA_WAIT=1) saves the grid cell with one output: the final table,
    readable without widget JavaScript."""
    nb = _run_notebook(["%load_ext nanobanana_jupyter", GRID_CELL], slow_sandbox, tmp_path)
    outputs = nb.cells[1].get("outputs", [])
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    data = outputs[0]["data"]
    assert _is_final_table(data["text/html"]), data["text/plain"]
    assert not any(t in data for t in WIDGET_TYPES)
    assert "a red fox" in data["text/html"] and "16:9" in data["text/html"]
