"""One cell, one output that stays current, in a real kernel (issue 16, item 3).

The stale second line (``Out: <NanoBanana local task ... submitting 0.0 s ...>``) showed in a
kernel, not in a plain InteractiveShell: ipykernel's display hook is where it lives, so this
runs there. Each case is repeated a few times: the card and the cell's result race the engine
thread that starts the task.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import Execution, Kernel


def _outputs(ex: Execution) -> list[dict[str, Any]]:
    """The rich outputs the front end adds to the cell: display_data, execute_result and
    errors (update_display_data replaces an output in place; it adds none). Streams are left
    out: a log line from the engine thread lands in whichever cell is running."""
    return ex.of_type("display_data", "execute_result", "error")


def _describe(outputs: list[dict[str, Any]]) -> list[str]:
    return [
        f"{m['msg_type']}: {str(m['content'].get('data', m['content']))[:120]}" for m in outputs
    ]


@pytest.mark.parametrize("run", range(3))
def test_a_bare_line_magic_is_one_live_card(kernel: Kernel, run: int) -> None:
    ex = kernel.execute(f"%nanobanana a teapot number {run}")
    outputs = _outputs(ex)
    assert [m["msg_type"] for m in outputs] == ["display_data"], _describe(outputs)
    assert outputs[0]["content"]["transient"]["display_id"]  # live: the engine updates it


@pytest.mark.parametrize("run", range(3))
def test_assigning_and_showing_in_one_cell_is_one_output(kernel: Kernel, run: int) -> None:
    ex = kernel.execute(f"t = %nanobanana a kettle number {run}\nt")
    outputs = _outputs(ex)
    assert [m["msg_type"] for m in outputs] == ["display_data"], _describe(outputs)


def test_a_task_shown_in_a_later_cell_gets_one_card_that_stays_current(kernel: Kernel) -> None:
    kernel.execute("t = %nanobanana a lamp")
    later = kernel.execute("t")
    outputs = _outputs(later)
    assert [m["msg_type"] for m in outputs] == ["display_data"], _describe(outputs)
    display_id = outputs[0]["content"]["transient"]["display_id"]
    waited = kernel.execute("t.wait(60)", timeout=90)
    updates = [
        m
        for _, m in waited.messages + kernel.stray + kernel.collect(1.0)
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == display_id
    ]
    assert any("image/jpeg" in m["content"]["data"] for m in updates), "the card never updated"
