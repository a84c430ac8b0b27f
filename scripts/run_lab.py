"""`make lab`: JupyterLab on 127.0.0.1 with the default session pointed at a local sandbox.

The lab works in ``out/lab/`` (ignored by git), seeded with copies of ``notebooks/*.ipynb``
that never overwrite a copy you edited, so new notebooks never land in the source tree. The
sandbox's history is kept in ``out/lab-data/sandbox``, apart from any real key's. Kernels are
reached over local sockets (IPC), so none warns about unencrypted TCP. The sandbox runs as
long as JupyterLab does; stop both with Ctrl+C.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from nanobanana_jupyter.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]


def seed_workspace(source: Path, workspace: Path) -> list[Path]:
    """Copy each notebook of ``source`` into ``workspace`` unless a copy is there already;
    the copies made."""
    workspace.mkdir(parents=True, exist_ok=True)
    made = []
    for notebook in sorted(source.glob("*.ipynb")):
        target = workspace / notebook.name
        if not target.exists():
            shutil.copyfile(notebook, target)
            made.append(target)
    return made


def lab_command(workspace: Path) -> list[str]:
    """The JupyterLab command: loopback only, the workspace as its root, IPC kernels."""
    command = [
        sys.executable, "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={workspace}", "--KernelManager.transport=ipc",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    return command


def lab_environ(url: str, api_key: str, data_root: Path) -> dict[str, str]:
    """What every kernel of the lab inherits: its default session talks to the sandbox,
    knows it is one (badge, pretend credits) and keeps its history in
    ``<data_root>/sandbox``, apart from a real key's."""
    return {
        "NANOBANANA_BASE_URL": url,
        "NANOBANANA_ALLOW_LOCAL_URLS": "1",
        "NANOBANANA_API_KEY": api_key,
        "NANOBANANA_DATA_DIR": str(data_root),
        "NANOBANANA_SANDBOX": "1",
    }


def main() -> int:
    workspace = ROOT / "out" / "lab"
    data_root = ROOT / "out" / "lab-data"
    data_dir = data_root / "sandbox"  # where NANOBANANA_SANDBOX=1 keeps the history
    seed_workspace(ROOT / "notebooks", workspace)
    with Sandbox(time_scale=0.2, accept_any_key=True) as sandbox:
        env = {**os.environ, **lab_environ(sandbox.url, sandbox.api_key, data_root)}
        print(
            f"sandbox:   {sandbox.url} (offline, pretend credits; every kernel's default session)"
        )
        print(f"workspace: {workspace} (copies of notebooks/; your edits stay here)")
        print(f"history:   {data_dir} (the sandbox's own, apart from a real key's)")
        try:
            return subprocess.call(lab_command(workspace), env=env)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
