"""A deadline for an ``await`` that never swallows a cancel.

``asyncio.wait_for`` on Python 3.10 and 3.11 returns the inner result instead of raising
when it is cancelled just as the inner awaitable completes: a loop waiting that way goes on
as if never cancelled (a closed session's poll loop kept polling, tests/reliability H14).
``async with time_limit(seconds):`` raises the cancel as it should, and
``asyncio.TimeoutError`` (the builtin ``TimeoutError`` from 3.11; catch it by the asyncio
name, which works on 3.10 too) when the deadline passes; ``None`` waits without a deadline.
The package uses only this.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout as time_limit
else:  # the same context manager, from the package asyncio's was made from
    from async_timeout import timeout as time_limit

__all__ = ["time_limit"]
