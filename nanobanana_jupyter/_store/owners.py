"""Who wrote a row and who holds a lease, and whether that process still runs.

A ``submitting`` or ``waiting_to_send`` row names its writer, and a lease names its owner,
as ``host|pid|token``, so another kernel on the machine can tell "in flight" from "its
process died" (a crashed kernel's rows are settled and its leases taken over at once).
Anything uncertain counts as alive; the lease then simply runs out. POSIX process probes;
standard library only.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = [
    "SUBMIT_GRACE",
    "new_lease_owner",
    "owner_process_gone",
    "writer_alive",
    "writer_closed",
    "writer_id",
    "writer_opened",
]

SUBMIT_GRACE = 600.0
"""Seconds after which a ``submitting`` row is interrupted even if its writer looks alive.

A submit answers or times out within ``submit_timeout`` (30 s by default); ten minutes
leaves room for any setting while bounding the harm of a recycled process id.
"""

# Writer tokens of the Store objects open in this process: their ``submitting`` rows are in
# flight.
_OPEN_TOKENS: set[str] = set()
_HOST = socket.gethostname()


def new_lease_owner() -> str:
    """A lease owner id naming this host and process, so a crashed owner can be recognised."""
    return f"{_HOST}|{os.getpid()}|{uuid.uuid4().hex}"


def writer_id(token: str) -> str:
    """The writer id a Store with this token puts on the rows it writes."""
    return f"{_HOST}|{os.getpid()}|{token}"


def writer_opened(token: str) -> None:
    """A Store with this token is open: the local rows it wrote count as in flight."""
    _OPEN_TOKENS.add(token)


def writer_closed(token: str) -> None:
    """The Store with this token closed: its rows no longer count as in flight."""
    _OPEN_TOKENS.discard(token)


def owner_process_gone(owner: str) -> bool:
    """Whether a lease owner's process provably no longer exists (same host, POSIX only).

    Anything uncertain (another host, this process, an old-style id, no permission to
    probe) counts as alive: the lease then simply runs out.
    """
    host, _, rest = owner.partition("|")
    pid_text, _, _ = rest.partition("|")
    if host != _HOST or os.name != "posix" or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def writer_alive(writer: str | None, age: float) -> bool:
    """Whether the process that wrote a local (unsent or sending) row may still send it."""
    if not writer or age > SUBMIT_GRACE:
        return False
    host, _, rest = writer.partition("|")
    pid_text, _, token = rest.partition("|")
    if token in _OPEN_TOKENS:
        return True
    if host != _HOST:
        # Another machine's process cannot be checked; sharing a store across machines is
        # unsupported anyway (WAL needs one host), so its row is treated as interrupted.
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid() or os.name != "posix":
        # This process, whose Store that wrote the row is closed; or a platform where
        # os.kill(pid, 0) is no probe (on Windows it would terminate the process).
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    return True
