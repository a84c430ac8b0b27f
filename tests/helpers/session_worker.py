"""A separate process acting as a kernel, for crash and multi-process tests.

    python -m tests.helpers.session_worker submit N   # submit N tasks, say so, then idle
    python -m tests.helpers.session_worker resume     # resume, wait for all, report
    python -m tests.helpers.session_worker queue N R  # map N tasks at R submits/s, say when
                                                      # the first is sent, then idle

It talks to the sandbox given by NANOBANANA_BASE_URL / NANOBANANA_API_KEY and keeps its
history in NANOBANANA_DATA_DIR. Its last stdout line is a JSON report.
"""

from __future__ import annotations

import faulthandler
import json
import sys
import time

from nanobanana_jupyter import PollPolicy, Session


def main(argv: list[str]) -> int:
    # If anything hangs, the test sees where: every thread's stack goes to stderr.
    faulthandler.dump_traceback_later(45, exit=True)
    scale = float(argv[2]) if len(argv) > 2 and argv[1] == "resume" else 0.05
    session = Session(poll_policy=PollPolicy().scaled(scale), lease_ttl=3.0)
    if argv[1] == "submit":
        count = int(argv[2])
        tasks = session.map([f"crash test image {i}" for i in range(count)], concurrency=4)
        deadline = time.monotonic() + 60
        while any(t.task_id is None for t in tasks) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("ALL_SUBMITTED", flush=True)
        faulthandler.cancel_dump_traceback_later()
        time.sleep(600)  # wait to be killed mid-flight
        return 1
    if argv[1] == "queue":
        count, rate = int(argv[2]), float(argv[3])
        session = Session(
            poll_policy=PollPolicy().scaled(scale), lease_ttl=3.0, max_submits_per_second=rate
        )
        tasks = session.map([f"queued image {i}" for i in range(count)])
        deadline = time.monotonic() + 30
        while all(t.task_id is None for t in tasks) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("SOME_SUBMITTED", flush=True)
        faulthandler.cancel_dump_traceback_later()
        time.sleep(600)  # wait to be killed with most still waiting for their turn
        return 1
    if argv[1] == "resume":
        tasks = session.resume()
        for task in tasks:
            task.wait(timeout=120)
        stats = session.stats()
        report = {
            "resumed": len(tasks),
            "statuses": sorted({t.status.value for t in tasks}),
            "polled": sorted(stats["queries_by_task"]),
        }
        session.close()
        print(json.dumps(report), flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
