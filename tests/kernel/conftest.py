"""A real ipykernel, talking to a sandbox in the test process, driven by jupyter_client."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from nanobanana_jupyter.sandbox import Sandbox
from tests.conftest import SENTINEL_KEY


@dataclass
class Execution:
    """What one execute request produced: the reply and every iopub message, timed."""

    msg_id: str
    sent: float
    reply: dict[str, Any] | None = None
    replied: float | None = None
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m["msg_type"] in types]


class Kernel:
    """A thin, bounded driver over a jupyter_client blocking client."""

    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.client = km.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.stray: list[tuple[float, dict[str, Any]]] = []

    def execute(self, code: str, *, timeout: float = 60) -> Execution:
        """Run a cell; return when its reply and its idle status have arrived.

        Each cell is sent alone, with ``stop_on_error=False``: an erring cell must not make
        the kernel abort the next one (ipykernel 6, which Colab runs, keeps aborting requests
        that reach it before its abort window closes, and under load the next cell does).
        """
        msg_id = self.client.execute(code, allow_stdin=False, stop_on_error=False)
        ex = Execution(msg_id, time.monotonic())
        deadline = time.monotonic() + timeout
        idle = False
        while time.monotonic() < deadline and not (idle and ex.reply is not None):
            if ex.reply is None:
                try:
                    reply = self.client.get_shell_msg(timeout=0.05)
                except queue.Empty:
                    reply = None
                if reply is not None and reply["parent_header"].get("msg_id") == ex.msg_id:
                    ex.reply, ex.replied = reply, time.monotonic()
            self._drain(ex)
            idle = any(
                m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                for _, m in ex.messages
            )
        if ex.reply is None or not idle:
            raise TimeoutError(f"cell did not finish in {timeout} s: {code[:60]!r}")
        if ex.reply["content"].get("status") == "aborted":
            raise RuntimeError(f"the kernel aborted the cell instead of running it: {code[:60]!r}")
        return ex

    def _drain(self, ex: Execution | None, wait: float = 0.05) -> None:
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=wait)
            except queue.Empty:
                return
            stamp = time.monotonic()
            parent = msg["parent_header"].get("msg_id")
            if ex is not None and (parent == ex.msg_id or msg["msg_type"] == "update_display_data"):
                ex.messages.append((stamp, msg))
            else:
                self.stray.append((stamp, msg))
            wait = 0.0

    def collect(self, seconds: float) -> list[tuple[float, dict[str, Any]]]:
        """Read iopub messages for a while (updates that come after a cell ended)."""
        end = time.monotonic() + seconds
        start = len(self.stray)
        while time.monotonic() < end:
            self._drain(None, wait=0.05)
        return self.stray[start:]

    def close(self) -> None:
        self.client.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def slow_sandbox() -> Iterator[Sandbox]:
    """A sandbox whose tasks take about 3 s, accepting the sentinel key."""
    with Sandbox(time_scale=0.5, duration=6.0, max_side=256, api_key=SENTINEL_KEY) as sb:
        yield sb


def start_kernel(
    sb: Sandbox, data_dir: Path, *, kernel_name: str = "python3", **extra_env: str
) -> Kernel:
    """A kernel whose default session talks to ``sb``; ``kernel_name``: which kernelspec
    (tests/colab gives one that runs Colab's pins)."""
    env = {
        **os.environ,
        "NANOBANANA_BASE_URL": sb.url,
        "NANOBANANA_ALLOW_LOCAL_URLS": "1",
        "NANOBANANA_API_KEY": sb.api_key,
        "NANOBANANA_DATA_DIR": str(data_dir),
        **extra_env,
    }
    env.pop("NANOBANANA_WAIT", None) if "NANOBANANA_WAIT" not in extra_env else None
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel(env=env, cwd=str(data_dir.parent))
    return Kernel(km)


@pytest.fixture
def kernel(slow_sandbox: Sandbox, tmp_path: Path) -> Iterator[Kernel]:
    k = start_kernel(slow_sandbox, tmp_path / "data")
    try:
        k.execute("%load_ext nanobanana_jupyter")
        yield k
    finally:
        k.close()
