"""Issue 16 in a real kernel: the unknown-model warning is one clean line, told once."""

from __future__ import annotations

import pytest

from tests.kernel.conftest import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_an_unknown_model_is_one_line_once_per_kernel(kernel: Kernel) -> None:
    """Two magic cells, a cell that changes the warning filters (as the panel and many
    libraries do), and a Session call: one stderr line in the first cell, nothing after."""
    cells = [
        "%nanobanana --model acme/kernel a cat",
        "%nanobanana --model acme/kernel a dog",
        "import warnings\nwith warnings.catch_warnings():\n    pass",
        "from nanobanana_jupyter import get_default_session\n"
        "_ = get_default_session().generate('a fish', model='acme/kernel')",
    ]
    told: list[list[str]] = []
    for code in cells:
        ex = kernel.execute(code)
        assert ex.reply is not None and ex.reply["content"]["status"] == "ok", ex.reply
        text = "".join(
            m["content"]["text"] for m in ex.of_type("stream") if m["content"]["name"] == "stderr"
        )
        told.append([line for line in text.splitlines() if "acme/kernel" in line])
    assert told[1:] == [[], [], []], told
    (line,) = told[0]
    assert line.startswith("nanobanana: unknown model 'acme/kernel'; sending it anyway (known: ")
    assert ".py" not in line and "UnknownModelWarning" not in line
