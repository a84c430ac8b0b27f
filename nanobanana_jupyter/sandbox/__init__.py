"""A local server that speaks the defapi.org Nano Banana API and draws images offline.

It backs the demo, offline use without an API key, the test suite and the benchmarks::

    from nanobanana_jupyter.sandbox import Fault, Sandbox, TaskPlan

    with Sandbox(time_scale=0.01) as sb:          # 1 API second = 10 ms
        sb.faults.add("submit", Fault.RATE_LIMIT)  # the next submit gets a 429
        sb.plan(TaskPlan(outcome="failed", reason="no bananas"))
        ...                                        # talk to sb.url with sb.api_key
        assert sb.ledger.duplicate_submits() == []

From a shell: ``python -m nanobanana_jupyter.sandbox --port 8765``. A prompt containing
``[text only]`` (:data:`TEXT_ONLY_MARK`) is answered in words, with no image.

The sandbox imports nothing from the rest of the package on purpose: it must not share parsing
or serialisation code with the client it is used to test.
"""

from __future__ import annotations

from ._faults import Fault, FaultScript
from ._ledger import CallbackRecord, Ledger, RequestRecord
from ._server import Sandbox, serve
from ._state import TEXT_ONLY_MARK, TaskPlan

__all__ = [  # noqa: RUF022 -- plain sorted order (tests/sandbox/test_surface.py)
    "CallbackRecord",
    "Fault",
    "FaultScript",
    "Ledger",
    "RequestRecord",
    "Sandbox",
    "TEXT_ONLY_MARK",
    "TaskPlan",
    "serve",
]
