"""`make lab`'s set-up without a browser: its workspace outside the tracked tree, seeded
without overwriting edits, and a kernel started with its kernel settings does not warn."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("run_lab", ROOT / "scripts" / "run_lab.py")
assert spec is not None and spec.loader is not None
run_lab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lab)


def test_the_workspace_is_seeded_once_and_never_overwrites_an_edit(tmp_path: Path) -> None:
    source = tmp_path / "notebooks"
    source.mkdir()
    (source / "a.ipynb").write_text("original a")
    (source / "b.ipynb").write_text("original b")
    workspace = tmp_path / "out" / "lab"
    made = run_lab.seed_workspace(source, workspace)
    assert sorted(p.name for p in made) == ["a.ipynb", "b.ipynb"]
    (workspace / "a.ipynb").write_text("my edit")
    assert run_lab.seed_workspace(source, workspace) == []
    assert (workspace / "a.ipynb").read_text() == "my edit"


def test_the_lab_serves_a_folder_git_ignores_and_starts_ipc_kernels() -> None:
    workspace = ROOT / "out" / "lab"
    command = run_lab.lab_command(workspace)
    assert f"--ServerApp.root_dir={workspace}" in command
    assert "--KernelManager.transport=ipc" in command
    assert "--ServerApp.ip=127.0.0.1" in command
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(workspace / "new.ipynb")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "out/lab must be ignored by git"


def test_a_kernel_the_lab_starts_does_not_warn_about_tcp(tmp_path: Path) -> None:
    """A Jupyter server with the lab's kernel settings starts a kernel that runs code and
    prints no "TCP without encryption" warning."""
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "jupyter", "server", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", f"--ServerApp.root_dir={tmp_path}",
        "--IdentityProvider.token=lab-test", "--ServerApp.open_browser=False",
        "--KernelManager.transport=ipc", "--allow-root",
    ]  # fmt: skip
    assert "--KernelManager.transport=ipc" in run_lab.lab_command(tmp_path)
    log = tmp_path / "server.log"
    # IPC sockets are files named after the connection file: a socket path has at most
    # about 107 characters, so the runtime folder must be short (pytest's tmp_path is not).
    runtime = Path(tempfile.mkdtemp(prefix="nbl-"))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    with log.open("w") as sink:
        server = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, env=env
        )
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": "token lab-test"}
        for _ in range(300):  # bounded: up to 30 s for the server to listen
            try:
                httpx.get(f"{base}/api/status", headers=headers, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        kernel = httpx.post(f"{base}/api/kernels", headers=headers, json={}, timeout=60)
        assert kernel.status_code == 201, kernel.text
        kernel_id = kernel.json()["id"]
        # Talk to it as the lab's browser tab would, through its connection file: it runs
        # code, so the IPC sockets work.
        from jupyter_client.blocking import BlockingKernelClient

        connection = runtime / f"kernel-{kernel_id}.json"
        client = BlockingKernelClient()
        client.load_connection_file(str(connection))
        assert client.transport == "ipc"
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            reply = client.execute_interactive("40 + 2", timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            client.stop_channels()
        httpx.delete(f"{base}/api/kernels/{kernel_id}", headers=headers, timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(runtime, ignore_errors=True)
    text = log.read_text()
    assert "Kernel started" in text, text
    assert "TCP without encryption" not in text, text


def test_the_lab_kernels_session_says_sandbox_and_keeps_its_history_apart(tmp_path: Path) -> None:
    """The environment every lab kernel inherits gives a default session that knows it talks
    to a sandbox (so the panel shows the badge and costs read pretend credits), with its
    history in out/lab-data/sandbox, before it sends anything."""
    from nanobanana_jupyter import Session, Settings
    from nanobanana_jupyter.sandbox import Sandbox

    with Sandbox(time_scale=0.01, duration=1.0, accept_any_key=True) as sandbox:
        env = run_lab.lab_environ(sandbox.url, sandbox.api_key, tmp_path / "lab-data")
        settings = Settings.resolve(environ=env, colab=lambda name: None)
        with Session(settings=settings) as session:
            assert session.is_sandbox and session.history.is_sandbox
            assert session.data_dir == tmp_path / "lab-data" / "sandbox"
            assert repr(session).startswith(f"<Session sandbox at {sandbox.url} ")
            assert session.credits.pretend
