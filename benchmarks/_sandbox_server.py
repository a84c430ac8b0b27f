"""A sandbox in its own process, for benchmarks: ``python -m benchmarks._sandbox_server CONFIG``.

The benchmarks run the sandbox apart from the client so that the client's CPU time and memory
are measured alone, and so that the two do not share one interpreter lock. The sandbox CLI has
no flags for capacity, per-prompt durations or the image side, so this launcher builds the
:class:`~nanobanana_jupyter.sandbox.Sandbox` itself from a JSON config file::

    {"time_scale": 0.05, "capacity": 100, "image_side": 256, "max_side": 1024,
     "url_ttl": 1e6, "durations": "/tmp/durations.json", "duration": 30.0}

``durations`` names a JSON list: the prompt ``bench-<i>`` takes ``durations[i]`` API seconds;
any other prompt takes ``duration`` (or the sandbox's default rule when that is absent).

Protocol on stdout: ``url=...``, ``api_key=...``, then ``ready``. On stdin, one command per
line: ``ledger PATH`` writes a JSON summary of the ledger to PATH and answers
``ledger-ok``; ``stop`` (or end of input) stops the server and exits.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from nanobanana_jupyter.sandbox import Ledger, Sandbox

_BENCH_PROMPT = re.compile(r"bench-(\d+)")


def _duration_rule(config: dict[str, Any]) -> Any:
    """The ``duration=`` argument for the sandbox: a table lookup by prompt, else a constant."""
    table: list[float] = []
    if config.get("durations"):
        table = [float(v) for v in json.loads(Path(config["durations"]).read_text())]
    fallback = config.get("duration")
    if not table:
        return None if fallback is None else float(fallback)

    def rule(prompt: str) -> float:
        match = _BENCH_PROMPT.search(prompt)
        if match is not None and int(match.group(1)) < len(table):
            return table[int(match.group(1))]
        return 10.0 if fallback is None else float(fallback)

    return rule


def ledger_summary(ledger: Ledger) -> dict[str, Any]:
    """What the benchmarks read from the ledger, as JSON-ready data (counts, not records)."""
    requests = ledger.requests
    kinds: Counter[str] = Counter()
    for record in requests:
        if record.origin == "cdn":
            kinds["cdn"] += 1
        elif record.method == "POST":
            kinds["submit"] += 1
        else:
            kinds["query"] += 1
    callbacks = ledger.callbacks
    return {
        "tasks": ledger.tasks,
        "charges": len(ledger.charges),
        "total_charged": ledger.total_charged,
        "queries": ledger.queries,
        "completed_at": ledger.completed_at,
        "submits_received": ledger.submits_received,
        "duplicate_submits": ledger.duplicate_submits(),
        "double_charges": ledger.double_charges(),
        "requests": dict(kinds),
        "callbacks_ok": sum(1 for c in callbacks if c.ok),
        "callbacks_failed": sum(1 for c in callbacks if not c.ok),
    }


def main(argv: list[str]) -> int:
    """Start the sandbox from the config file, answer commands on stdin, stop on EOF."""
    config: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    sandbox = Sandbox(
        time_scale=float(config.get("time_scale", 1.0)),
        capacity=config.get("capacity"),
        image_side=config.get("image_side"),
        max_side=int(config.get("max_side", 1024)),
        url_ttl=float(config.get("url_ttl", 1e6)),
        duration=_duration_rule(config),
        accept_any_key=bool(config.get("accept_any_key", False)),
    )
    with sandbox:
        print(f"url={sandbox.url}", flush=True)
        print(f"api_key={sandbox.api_key}", flush=True)
        print("ready", flush=True)
        for line in sys.stdin:  # bounded by the parent, which always ends with "stop" or EOF
            command, _, arg = line.strip().partition(" ")
            if command == "ledger":
                Path(arg).write_text(json.dumps(ledger_summary(sandbox.ledger)))
                print("ledger-ok", flush=True)
            elif command == "stop":
                break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
