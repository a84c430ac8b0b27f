"""notebooks/papermill_batch.ipynb, run by the papermill command against a sandbox.

One run of the real CLI (``python -m papermill in.ipynb out.ipynb -p prompt ...``, the
python3 kernel of this interpreter), without ``NANOBANANA_WAIT``: the notebook itself must
wait (without its ``--wait`` the run fails, its tasks still running when it saves them). Then
every image is
looked for where the notebook promises it (the data directory's history, ``out_dir`` with
its ``summary.json``, previews in the output notebook), the injected prompt in each, and the
key nowhere.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from nanobanana_jupyter import Session, read_provenance
from nanobanana_jupyter.sandbox import Sandbox
from tests.conftest import SENTINEL_KEY

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "papermill_batch.ipynb"
# Quotes and braces: papermill must write it as a Python literal, and --expand must not
# read the value's braces as fields.
PROMPT = 'A fox\'s "winter" map of {the} north, batch 7f3a'
SAMPLES = 3  # not the notebook's default, so the injected value is what ran
PREVIEW_SIDE = 512  # the magic's default preview_size
FULL_SIDE = 1024  # the sandbox's images: larger than a preview, so embedding one would show


@pytest.mark.kernel
@pytest.mark.slow
def test_papermill_run_saves_every_image_with_the_injected_prompt(tmp_path: Path) -> None:
    tagged = [
        c
        for c in nbformat.read(NOTEBOOK, as_version=4).cells
        if "parameters" in c.metadata.get("tags", [])
    ]
    assert len(tagged) == 1 and "\nprompt: str = " in tagged[0].source  # what papermill replaces
    with Sandbox(time_scale=0.05, max_side=FULL_SIDE, api_key=SENTINEL_KEY) as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOBANANA_", "DEFAPI_"))}
        env.update(
            NANOBANANA_BASE_URL=sandbox.url,
            NANOBANANA_ALLOW_LOCAL_URLS="1",
            NANOBANANA_API_KEY=SENTINEL_KEY,
            NANOBANANA_DATA_DIR=str(tmp_path / "data"),
        )
        out = tmp_path / "out.ipynb"
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "papermill",
                str(NOTEBOOK),
                str(out),
                "-k",
                "python3",
                "--cwd",
                str(tmp_path),
                "--no-progress-bar",
                "-p",
                "prompt",
                PROMPT,
                "-p",
                "n",
                str(SAMPLES),
                "-p",
                "out_dir",
                "renders",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=110,
            check=False,
        )
        elapsed = time.monotonic() - started
        charges = len(sandbox.ledger.charges)
    assert result.returncode == 0, f"papermill failed after {elapsed:.1f} s:\n{result.stderr}"
    assert charges == SAMPLES  # one paid task per sample, none twice

    text = out.read_text(encoding="utf-8")
    assert SENTINEL_KEY not in text and SENTINEL_KEY[3:] not in text
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "batch 7f3a" in injected[0].source

    # The output notebook: one preview per image, each a small JPEG carrying the prompt.
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/jpeg" in o.get("data", {})]
    assert not [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == SAMPLES, f"{len(images)} image outputs after {elapsed:.1f} s"
    for output in images:
        meta = output["metadata"]["nanobanana"]
        assert meta["status"] == "success" and meta["prompt"] == PROMPT
        data = base64.b64decode(output["data"]["image/jpeg"])
        with Image.open(io.BytesIO(data)) as preview:
            assert max(preview.size) <= PREVIEW_SIDE, preview.size

    # out_dir: a copy of every image, carrying its recipe, and the summary listing them.
    summary = json.loads((tmp_path / "renders" / "summary.json").read_text(encoding="utf-8"))
    assert len(summary) == SAMPLES
    assert len({entry["task_id"] for entry in summary}) == SAMPLES
    files = [Path(f) for entry in summary for f in entry["files"]]
    assert len(files) == SAMPLES
    assert all(entry["status"] == "success" and entry["prompt"] == PROMPT for entry in summary)
    for path in files:
        path = path if path.is_absolute() else tmp_path / path
        assert path.parent == tmp_path / "renders"
        assert read_provenance(path).prompt == PROMPT
        with Image.open(path) as full:
            assert max(full.size) == FULL_SIDE  # the full-size image is on disk, not in out.ipynb
        assert SENTINEL_KEY.encode() not in path.read_bytes()

    # The data directory's history: the same tasks, the injected prompt, their image files.
    with Session(api_key=SENTINEL_KEY, data_dir=tmp_path / "data") as session:
        records = list(session.history)
    assert {r.task_id for r in records} == {entry["task_id"] for entry in summary}
    for record in records:
        assert record.prompt == PROMPT and record.status.value == "success"
        assert [Path(image.path).is_file() for image in record.images] == [True]
    print(f"papermill run: {elapsed:.1f} s")
