"""Generate an image from a plain Python script, wait for it, and list the history.

Runs offline against the sandbox (no API key needed):

    python examples/script_quickstart.py [DATA_DIR]

With a real key in NANOBANANA_API_KEY, replace ``Session.sandbox(...)`` by ``Session()``.
"""

from __future__ import annotations

import sys
import tempfile

from nanobanana_jupyter import Session


def main() -> int:
    data_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="nanobanana-")
    with Session.sandbox(data_dir=data_dir, time_scale=0.05) as session:
        task = session.generate("A banana astronaut floating above Earth", aspect_ratio="16:9")
        print(f"submitted; status now: {task.status}")  # returns at once
        task.wait(timeout=60)
        images = task.result()  # raises the task's failure, if any
        print(f"done: {task.status}, cost {task.cost} credits")
        for image in images:
            print(f"image: {image.path} ({image.width}x{image.height})")

        batch = session.map(["a red apple", "a green pear", "a yellow lemon"], aspect_ratio="1:1")
        for t in batch:
            t.wait(timeout=60)
        frame = session.history.to_pandas()
        print(frame[["task_id", "status", "prompt", "consumed", "duration"]].to_string())
        print(f"total cost: {session.history.total_cost} credits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
