"""`make demo`: run notebooks/quickstart.ipynb against a local sandbox and keep the results.

Starts the sandbox (a local server that speaks the API and draws images offline), executes
the quickstart with nbclient in a fresh kernel pointed at it, and writes the executed
notebook and an HTML copy whose images anyone can look at. Prints where they are.

    python scripts/run_demo.py [--out DIR] [--time-scale 0.1]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from nanobanana_jupyter.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]


def count_images(nb: nbformat.NotebookNode) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if any(k.startswith("image/") for k in output.get("data", {}))
    )


class LocalKernelManager(AsyncKernelManager):
    """A kernel reached over local (IPC) sockets: nothing listens on the network, so the
    kernel has nothing to warn about (it warns about unencrypted TCP). nbclient makes it
    and shuts it down."""

    def __init__(self, **kwargs: object) -> None:
        # The socket files' prefix must be absolute: the kernel runs in the output folder.
        folder = tempfile.mkdtemp(prefix="nb-demo-")
        atexit.register(shutil.rmtree, folder, True)
        sockets = Path(folder) / "kernel"
        super().__init__(transport="ipc", ip=str(sockets), **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=ROOT / "notebooks" / "quickstart.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--time-scale", type=float, default=0.1)
    args = parser.parse_args()

    out: Path = args.out.resolve()
    data_root = out / "demo-data"
    data_dir = data_root / "sandbox"  # where NANOBANANA_SANDBOX=1 keeps the history
    shutil.rmtree(data_root, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Sandbox(time_scale=args.time_scale) as sandbox:
        print(f"sandbox: {sandbox.url} (offline; pretend credits; time x{1 / args.time_scale:g})")
        # The kernel inherits these: the default session talks to the sandbox, keeps its
        # history in out/demo-data/sandbox, says it is a sandbox (pretend credits), and
        # --wait is on (a headless run loses late updates).
        os.environ.update(
            {
                "NANOBANANA_BASE_URL": sandbox.url,
                "NANOBANANA_ALLOW_LOCAL_URLS": "1",
                "NANOBANANA_API_KEY": sandbox.api_key,
                "NANOBANANA_DATA_DIR": str(data_root),
                "NANOBANANA_SANDBOX": "1",
                "NANOBANANA_WAIT": "1",
            }
        )
        nb = nbformat.read(args.notebook, as_version=4)
        client = NotebookClient(
            nb,
            kernel_manager_class=LocalKernelManager,
            timeout=300,
            startup_timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(out)}},
        )
        client.execute()
        charges = sandbox.ledger.total_charged
    executed = out / args.notebook.name
    nbformat.write(nb, executed)
    html_path = executed.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nb)
    html_path.write_text(body, encoding="utf-8")
    images = count_images(nb)
    print(
        f"executed in {time.monotonic() - started:.1f} s: {images} image outputs, "
        f"{charges:g} sandbox credits"
    )
    print(f"notebook: {executed}")
    print(f"html:     {html_path}")
    full_images = sorted((data_dir / "images").glob("??/*.png"))
    print(f"images:   {data_dir / 'images'} ({len(full_images)} full-size files)")
    if full_images:
        print(f"first:    {full_images[0]}")
    if images == 0:
        print("error: the executed notebook shows no image", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
