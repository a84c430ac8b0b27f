"""A real ipykernel driven with jupyter_client, for the kernel and import benchmarks.

Round trip = from sending an ``execute_request`` to receiving its ``execute_reply`` on the
shell channel: what a person waits for between pressing Shift-Enter and the cell being done
(the front end shows the result when the reply and its outputs are in; for ``1`` they come
together).
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from ._common import child_env


class Kernel:
    """One kernel and a blocking client to it; every wait is bounded."""

    def __init__(self, km: KernelManager, client: BlockingKernelClient) -> None:
        self.km = km
        self.client = client

    def _reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply in {timeout} s")
            try:
                msg: dict[str, Any] = self.client.get_shell_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def round_trip(self, code: str, *, timeout: float = 60.0) -> float:
        """Seconds from sending ``code`` to its reply; raises if the cell failed."""
        sent = time.perf_counter()
        msg_id = self.client.execute(code)
        reply = self._reply(msg_id, timeout)
        elapsed = time.perf_counter() - sent
        self.drain()
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"cell failed: {code[:60]!r}: {reply['content'].get('evalue')}")
        return elapsed

    def value(self, code: str, *, timeout: float = 60.0) -> str:
        """The ``text/plain`` result of an expression cell."""
        msg_id = self.client.execute(code)
        reply = self._reply(msg_id, timeout)
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"cell failed: {code[:60]!r}: {reply['content'].get('evalue')}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=1.0)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_result":
                text: str = msg["content"]["data"].get("text/plain", "")
                return text
        raise TimeoutError(f"no result for {code[:60]!r}")

    def drain(self) -> None:
        """Throw away pending iopub messages (so none pile up between measurements)."""
        for _ in range(10_000):
            try:
                self.client.get_iopub_msg(timeout=0)
            except queue.Empty:
                return


@contextlib.contextmanager
def running_kernel(cwd: Path, **env: str) -> Iterator[Kernel]:
    """A fresh ``python3`` kernel with this environment (no user NANOBANANA_* settings)."""
    cwd.mkdir(parents=True, exist_ok=True)
    km = KernelManager(kernel_name="python3")
    # The kernel's own log (e.g. ipykernel's warning about plain TCP on loopback) goes to a
    # file beside it rather than into the benchmark's table.
    log = (cwd / "kernel.log").open("ab")
    try:
        km.start_kernel(env=child_env(**env), cwd=str(cwd), stdout=log, stderr=log)
    finally:
        log.close()
    client = km.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        kernel = Kernel(km, client)
        kernel.drain()
        yield kernel
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
