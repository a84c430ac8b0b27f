"""``python -m nanobanana_jupyter.sandbox``: run the sandbox until Ctrl-C or SIGTERM.

Prints two lines on stdout, ``url=...`` and ``api_key=...``, so that scripts (and the demo)
can read where to connect without parsing prose; human notes go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._server import Sandbox, serve
from ._state import RESULT_MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanobanana_jupyter.sandbox",
        description="Serve the Nano Banana API locally, drawing images offline.",
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: 0, any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per API second (default 1.0; 0.1 makes tasks 10x faster)",
    )
    parser.add_argument(
        "--result-mode",
        choices=RESULT_MODES,
        default="url",
        help="how results are delivered: CDN URLs, data URIs, or both alternately",
    )
    parser.add_argument(
        "--accept-any-key",
        action="store_true",
        help="accept any 'Bearer dk-...' key instead of only the printed one",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until interrupted, and return the exit status."""
    args = _parser().parse_args(argv)
    try:
        sandbox = Sandbox(
            args.host,
            args.port,
            time_scale=args.time_scale,
            result_mode=args.result_mode,
            accept_any_key=args.accept_any_key,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def announce(sb: Sandbox) -> None:
        print(f"url={sb.url}", flush=True)
        print(f"api_key={sb.api_key}", flush=True)
        print(
            f"nanobanana sandbox running; press Ctrl-C to stop. Point a client at it with "
            f"NANOBANANA_BASE_URL={sb.url}, NANOBANANA_ALLOW_LOCAL_URLS=1 (its images "
            "come from 127.0.0.1, which clients refuse unless told) and NANOBANANA_SANDBOX=1 "
            "(pretend credits; its history kept apart from a real key's)",
            file=sys.stderr,
            flush=True,
        )

    try:
        serve(sandbox, on_ready=announce)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
