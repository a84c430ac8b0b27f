"""Comparison 4: bytes a displayed 1024x1024 image adds to a saved notebook.

Two measurements, because the sandbox's pictures (flat shapes and text) compress far better
than photographs and would flatter every format:

* **sandbox image, end to end.** A notebook runs under nbclient against a sandbox (1K images
  are 1024x1024): ``%load_ext``, then ``k`` cells ``%%nanobanana -o tN`` with default
  settings (``NANOBANANA_WAIT=1``, as for any headless run), then ``k`` cells
  ``display(Image(filename=tN.path))`` of the same files, which is what embedding the full
  PNG costs. It is saved with nbformat; a cell's weight is the saved size minus the size with
  that cell's outputs cleared.
* **photo-like image, same code path.** A synthetic photo-like 1024x1024 PNG
  (:mod:`benchmarks._images`) goes through the library's image store and the magic's own
  bundle (``LiveOutputs.bundle`` with the magic's default ``embed`` and ``preview_size``), and
  through IPython's display formatter for ``Image(filename=...)``; each output is weighed in a
  one-cell notebook the same way.
"""

# nbformat and IPython ship no type information (as for the package's own views).
# mypy: disallow-untyped-calls=False, warn-return-any=False

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from ._common import Row, SandboxProcess, child_env, rounded
from ._images import photo_like_png

IMAGES = 3
GOAL_BYTES = 80 * 1024
GOAL_RATIO = 20.0


def _notebook(k: int) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell("%load_ext nanobanana_jupyter")]
    cells += [
        nbformat.v4.new_code_cell(f"%%nanobanana -o t{i}\nA still life with bananas, number {i}")
        for i in range(k)
    ]
    cells += [
        nbformat.v4.new_code_cell(
            f"from IPython.display import Image, display\ndisplay(Image(filename=t{i}.path))"
        )
        for i in range(k)
    ]
    return nbformat.v4.new_notebook(cells=cells)


def _weight(nb: nbformat.NotebookNode, index: int) -> int:
    """Bytes cell ``index``'s outputs add to the saved notebook."""
    full = len(nbformat.writes(nb).encode())
    bare = nbformat.from_dict(nb)
    bare.cells[index].outputs = []
    bare.cells[index].execution_count = None
    return full - len(nbformat.writes(bare).encode())


def sandbox_images(root: Path, k: int) -> dict[str, Any]:
    """Run the notebook against a sandbox; weigh each magic cell and each full-PNG cell."""
    from nbclient import NotebookClient

    nb = _notebook(k)
    with SandboxProcess(root / "sandbox", time_scale=0.02, max_side=1024) as sandbox:
        env = child_env(
            NANOBANANA_BASE_URL=sandbox.url,
            NANOBANANA_ALLOW_LOCAL_URLS="1",
            NANOBANANA_API_KEY=sandbox.api_key,
            NANOBANANA_DATA_DIR=str(root / "data"),
            NANOBANANA_WAIT="1",
        )
        (root / "cwd").mkdir(parents=True, exist_ok=True)
        client = NotebookClient(
            nb,
            timeout=120,
            startup_timeout=60,
            kernel_name="python3",
            resources={"metadata": {"path": str(root / "cwd")}},
        )
        with (root / "kernel.log").open("ab") as log:
            client.execute(env=env, stdout=log, stderr=log)
    nbformat.write(nb, root / "executed.ipynb")
    magic = [_weight(nb, 1 + i) for i in range(k)]
    full = [_weight(nb, 1 + k + i) for i in range(k)]
    sizes = [len(Path(p).read_bytes()) for p in sorted((root / "data" / "images").glob("??/*"))]
    return {
        "images": k,
        "default_bytes": sum(magic) / k,
        "full_bytes": sum(full) / k,
        "png_bytes": sum(sizes) / max(1, len(sizes)),
    }


def photo_image(root: Path) -> dict[str, Any]:
    """Weigh the magic's default output and a full ``Image`` output of a photo-like PNG."""
    import time

    from IPython.core.formatters import DisplayFormatter
    from IPython.display import Image

    from nanobanana_jupyter import Session, TaskStatus
    from nanobanana_jupyter._core.task import Task, TaskState
    from nanobanana_jupyter._store.records import TaskRecord
    from nanobanana_jupyter._views.magic import LiveOutputs, NanoBananaMagics

    png = photo_like_png(1024, seed=3)
    session = Session(api_key="dk-benchmark", base_url="http://127.0.0.1:9", data_dir=root / "p")
    try:
        stored = session._images.put(png)
        now = time.time()
        record = TaskRecord(
            local_id="photo",
            status=TaskStatus.SUCCESS,
            prompt="A still life with bananas, photographed",
            model=session.settings.model,
            fingerprint="photo",
            created_at=now,
            updated_at=now,
            task_id="ta-photo",
            finished_at=now,
            images=(stored,),
        )
        traits = NanoBananaMagics.class_traits()
        live = LiveOutputs(session)
        data, metadata = live.bundle(
            Task(session, TaskState(record)),
            embed=traits["embed"].default_value,
            side=traits["preview_size"].default_value,
        )
        live.close()
    finally:
        session.close()
    # The formatter a kernel's display() uses, without starting an IPython shell here.
    full_data, full_metadata = DisplayFormatter().format(Image(filename=stored.path))
    weights = []
    for out_data, out_meta in ((data, metadata), (full_data, full_metadata)):
        cell = nbformat.v4.new_code_cell(
            "display(...)",
            outputs=[nbformat.v4.new_output("display_data", data=out_data, metadata=out_meta)],
        )
        nb = nbformat.v4.new_notebook(cells=[cell])
        weights.append(_weight(nb, 0))
    return {"default_bytes": weights[0], "full_bytes": weights[1], "png_bytes": len(png)}


def run(*, quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    k = 1 if quick else IMAGES
    root = Path(workdir or tempfile.mkdtemp(prefix="nb-bench-notebook-"))
    try:
        sandbox = sandbox_images(root / "sandbox-run", k)
        photo = photo_image(root / "photo")
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = []
    for label, figures in (("sandbox image", sandbox), ("photo-like image", photo)):
        default_kb = figures["default_bytes"] / 1024
        full_kb = figures["full_bytes"] / 1024
        ratio = figures["full_bytes"] / max(1.0, figures["default_bytes"])
        figures["ratio"] = rounded(ratio, 1)
        png_kb = figures["png_bytes"] / 1024
        rows.append(
            Row(
                "Notebook",
                f"KB added per displayed 1024x1024 image, default ({label}, PNG {png_kb:.0f} KB)",
                f"{default_kb:.1f} KB",
                f"{full_kb:.1f} KB full PNG",
                "<= 80 KB",
                figures["default_bytes"] <= GOAL_BYTES,
            )
        )
        rows.append(
            Row(
                "Notebook",
                f"full PNG / default ({label})",
                f"{ratio:.1f}x smaller",
                "",
                ">= 20x",
                ratio >= GOAL_RATIO,
            )
        )
    return {
        "sandbox_image": {k: rounded(v, 1) for k, v in sandbox.items()},
        "photo_like_image": {k: rounded(v, 1) for k, v in photo.items()},
        "rows": [dataclasses.asdict(r) for r in rows],
    }
