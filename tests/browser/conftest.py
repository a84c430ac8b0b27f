"""A real JupyterLab (which also serves Notebook 7) on 127.0.0.1 and headless Debian Chromium.

What research/jupyter-async.md section 5 learnt the hard way is built in: ``--allow-root``, a
temporary workspaces and settings directory (no restored tabs, no news pop-up), the app exposed
as ``window.jupyterapp`` so cells are run through JupyterLab's own commands, and every selector
scoped to the visible notebook panel.

The tests skip, loudly, where Chromium or Playwright is missing, and fail instead when
``NANOBANANA_REQUIRE_BROWSER=1`` (CI sets it once Chromium is installed).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
STEP_TIMEOUT_MS = 30_000
SERVER_START_TIMEOUT = 60.0
# The visible notebook: hidden panels (restored tabs) must never be driven by mistake.
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _missing(reason: str) -> None:
    """Skip with a loud reason, or fail when the browser is required (CI)."""
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if os.environ.get("NANOBANANA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message} (NANOBANANA_REQUIRE_BROWSER=1 demands them)", pytrace=False)
    pytest.skip(message)


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, or a skip (a failure under NANOBANANA_REQUIRE_BROWSER=1)."""
    path = _chromium()
    if path is None:
        _missing("Chromium is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright for Python is not installed (pip install playwright)")
    assert path is not None
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JupyterServer:
    """A running server: where it is and where its notebooks live."""

    url: str
    token: str
    root: Path
    log: Path

    def lab(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def notebook7(self, name: str) -> str:
        return f"{self.url}/notebooks/{name}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def write_notebook(self, name: str, cells: list[str]) -> str:
        """A notebook whose first cell points its kernel at its own sandbox data directory."""
        data_dir = self.root / f"data-{Path(name).stem}"
        setup = (
            "import os\n"
            f"os.environ['NANOBANANA_DATA_DIR'] = {str(data_dir)!r}\n"
            "%load_ext nanobanana_jupyter\n"
            "%nanobanana sandbox"
        )
        notebook = new_notebook(cells=[new_code_cell(setup), *map(new_code_cell, cells)])
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        }
        nbformat.write(notebook, self.root / name)
        return name


DARK_THEME = "JupyterLab Dark"


def _settings_dir(base: Path, theme: str | None = None) -> Path:
    """User settings that silence the news and update notifications, and pick ``theme``
    (the themes plugin's own setting, written before the server starts: no palette clicks,
    nothing for the page to restore or race)."""
    settings = base / "settings"
    apputils = settings / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    if theme is not None:
        (apputils / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    return settings


@pytest.fixture(scope="module")
def jupyter_server(
    chromium_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    """JupyterLab on 127.0.0.1 with temporary root, workspaces, settings and data dirs.

    Module scope: it stops (kernels and all) before the rest of the suite runs.
    """
    yield from _serve(tmp_path_factory, theme=None)


@pytest.fixture(scope="module")
def dark_jupyter_server(
    chromium_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    """The same JupyterLab, started with the "JupyterLab Dark" theme in its user settings.

    Only the dark-theme test asks for it, so the other browser tests pay nothing for it.
    """
    yield from _serve(tmp_path_factory, theme=DARK_THEME)


def _serve(tmp_path_factory: pytest.TempPathFactory, theme: str | None) -> Iterator[JupyterServer]:
    base = tmp_path_factory.mktemp("jupyter-dark" if theme else "jupyter")
    root = base / "root"
    root.mkdir()
    port = _free_port()
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOBANANA_", "DEFAPI_"))}
    env.update(
        NANOBANANA_DATA_DIR=str(base / "data"),
        JUPYTERLAB_SETTINGS_DIR=str(_settings_dir(base, theme)),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    # ``-m jupyterlab``, not ``-m jupyter lab``: the latter runs the ``jupyter-lab`` script,
    # whose shebang may name another environment's Python (a venv copied from another
    # checkout), and its kernels would then import that checkout's package, not this one.
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
        f"--LabApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
        "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
    ]  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / ("jupyter-server-dark.log" if theme else "jupyter-server.log")
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited at start ({process.returncode}); see {log}")
            try:
                server.api("status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in {SERVER_START_TIMEOUT} s; see {log}")
                time.sleep(0.2)
        yield server
    finally:
        _stop(server, process)


def _stop(server: JupyterServer, process: subprocess.Popen[bytes]) -> None:
    """Shut kernels down through the API, then the server: terminate, then kill its group."""
    with contextlib.suppress(Exception):
        for kernel in server.api("kernels"):
            server.api(f"kernels/{kernel['id']}", method="DELETE")
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # Anything the server started in its own process group and left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Headless Chromium (Debian's, not Playwright's download), for one test module.

    Module scope on purpose: while Playwright's sync API is open, its event loop counts as
    running on the main thread, which would break ``asyncio.run()`` in every later test.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; console errors are kept for failure messages."""
    context = browser.new_context(viewport={"width": 1360, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"))
        context.close()
