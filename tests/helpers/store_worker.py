"""A separate process acting as a kernel on a shared history store (for tests/unit/test_store.py).

Run as ``python store_worker.py <mode> <args...>``; it prints one JSON line when done:

* ``crash <db> <images> <prefix>``: print ``ready``, then write tasks (intent, task id,
  image, success) in a loop until killed (D1: SIGKILL at a random moment).
* ``concurrent <db> <worker> <n> <go-file>``: wait for the go-file, then insert and update
  ``n`` tasks while other workers do the same, race for unique task ids and leases (D2).
* ``submit-and-exit <db> <local_id>``: write a ``submitting`` intent and exit at once, as a
  kernel that died mid-submit.
* ``open <db>``: open the store, write and read one task, report warnings or the error
  (D7: run with a read-only directory).
"""

from __future__ import annotations

import io
import json
import sys
import time
import warnings
from decimal import Decimal
from pathlib import Path

from PIL import Image

from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.errors import ConfigurationError
from nanobanana_jupyter._wire.models import TaskStatus


def intent(local_id: str, *, fingerprint: str = "fp") -> TaskRecord:
    now = time.time()
    return TaskRecord(
        local_id=local_id,
        status=TaskStatus.SUBMITTING,
        prompt=f"prompt of {local_id}",
        model="google/gempix2",
        fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
    )


def crash(db: str, images: str, prefix: str) -> None:
    store = Store(Path(db))
    image_store = ImageStore(Path(images))
    print("ready", flush=True)
    i = 0
    while True:
        local_id = f"{prefix}-{i}"
        record = intent(local_id)
        store.insert(record)
        record = store.update(
            record.replace(status=TaskStatus.PENDING, task_id=f"task-{local_id}", polls=1)
        )
        # A unique image each round, big enough that its write takes a moment.
        img = Image.frombytes("RGB", (96, 96), (local_id.encode() * 30_000)[: 96 * 96 * 3])
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        stored_image = image_store.put(buf.getvalue())
        store.update(
            record.replace(
                status=TaskStatus.SUCCESS,
                images=(stored_image,),
                consumed=Decimal("0.05"),
                finished_at=time.time(),
                polls=2,
            )
        )
        i += 1


def concurrent(db: str, worker: str, n: int, go_file: str) -> None:
    while not Path(go_file).exists():
        time.sleep(0.005)
    won_task_ids: list[int] = []
    won_leases: list[int] = []
    with Store(Path(db)) as store:
        for i in range(n):
            local_id = f"{worker}-{i}"
            record = intent(local_id, fingerprint=f"fp-{i}")
            store.insert(record)
            record = store.update(record.replace(status=TaskStatus.PENDING, polls=1))
            # Every worker claims the same server task id for its i-th task: exactly one
            # may have it, whatever the interleaving.
            try:
                record = store.update(record.replace(task_id=f"shared-task-{i}"))
                won_task_ids.append(i)
            except ValueError:
                record = store.update(record.replace(task_id=f"task-{local_id}"))
            if store.acquire_lease(f"shared-lease-{i}", worker, ttl=3600):
                won_leases.append(i)
            store.update(
                record.replace(status=TaskStatus.SUCCESS, consumed=Decimal("0.10"), polls=2)
            )
    print(json.dumps({"worker": worker, "task_ids": won_task_ids, "leases": won_leases}))


def submit_and_exit(db: str, local_id: str) -> None:
    store = Store(Path(db))
    store.insert(intent(local_id))
    # No close: the process ends as a crashed kernel would, mid-submit.
    print(json.dumps({"inserted": local_id}), flush=True)


def open_store(db: str) -> None:
    result: dict[str, object] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Store(Path(db)) as store:
                store.insert(intent("probe"))
                got = store.get("probe")
                result.update(
                    outcome="ok",
                    journal_mode=store.journal_mode,
                    read_back=got is not None and got.local_id == "probe",
                )
        except ConfigurationError as exc:
            result.update(outcome="ConfigurationError", message=str(exc))
    result["warnings"] = [[type(w.message).__name__, str(w.message)] for w in caught]
    print(json.dumps(result))


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "crash":
        crash(*args)
    elif mode == "concurrent":
        concurrent(args[0], args[1], int(args[2]), args[3])
    elif mode == "submit-and-exit":
        submit_and_exit(*args)
    elif mode == "open":
        open_store(*args)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
