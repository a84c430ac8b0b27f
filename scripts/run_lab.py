"""`make lab`: JupyterLab on 127.0.0.1 with the default session pointed at a local sandbox.

The sandbox runs as long as JupyterLab does; stop both with Ctrl+C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nanobanana_jupyter.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    with Sandbox(time_scale=0.2, accept_any_key=True) as sandbox:
        env = {
            **os.environ,
            "NANOBANANA_BASE_URL": sandbox.url,
            "NANOBANANA_ALLOW_LOCAL_URLS": "1",
            "NANOBANANA_API_KEY": sandbox.api_key,
            "NANOBANANA_DATA_DIR": str(ROOT / "out" / "lab-data"),
        }
        print(f"sandbox: {sandbox.url} (offline; the kernels' default session uses it)")
        command = [
            sys.executable, "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={ROOT / 'notebooks'}",
        ]  # fmt: skip
        if os.geteuid() == 0:
            command.append("--allow-root")
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
