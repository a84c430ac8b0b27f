"""Jupyter mimebundles: a task's (its card, its line of text, its first image, and metadata
naming it) and a batch's progress line.

A bundle holds only static data (``text/plain``, ``text/html``, ``image/jpeg`` or
``image/png``), so a saved notebook, nbconvert HTML and GitHub show it without JavaScript.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.records import TaskRecord

from .annotations import annotation_text
from .html import task_html
from .previews import PreviewLike, previews_for, usable_previews
from .progress import Progress
from .words import MODEL_CHARS, PROMPT_META_CHARS, clean, coarse_elapsed, shorten, task_text

__all__ = ["Bundle", "batch_bundle", "record_bundle", "shown_as", "task_bundle"]

Bundle = tuple[dict[str, Any], dict[str, Any]]

# Media types a Jupyter front end, nbconvert and GitHub all show as an image output.
_BUNDLE_IMAGE_TYPES = ("image/jpeg", "image/png")


def _json_number(value: Decimal | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def task_bundle(
    record: TaskRecord,
    *,
    previews: Sequence[PreviewLike] = (),
    elapsed: float | None = None,
    embed_first_image: bool = True,
    reused: bool = False,
    pretend: bool = False,
    annotation: Annotation | None = None,
) -> tuple[dict[str, object], dict[str, object]]:
    """A Jupyter mimebundle ``(data, metadata)`` for ``_repr_mimebundle_`` and display handles.

    ``data`` holds ``text/plain``, ``text/html`` and, when ``embed_first_image`` and a JPEG or
    PNG preview is given, that image as base64 under its own type, so saved notebooks,
    nbconvert and GitHub show it without any JavaScript. ``metadata["nanobanana"]`` names the
    task (ids, status, model, prompt cut to 500 characters, paths, credits) for tools that
    read notebooks; everything in it is JSON-serialisable and redacted. ``reused`` and
    ``pretend`` as in :func:`.html.task_html`; ``annotation`` (rating, tags, note) is shown
    when set.
    """
    usable = usable_previews(previews)
    plain = task_text(record, elapsed=elapsed, reused=reused, pretend=pretend)
    said = annotation_text(annotation)
    data: dict[str, object] = {
        "text/plain": f"{plain}\n  {said}" if said else plain,
        "text/html": task_html(
            record,
            previews=usable,
            elapsed=elapsed,
            reused=reused,
            pretend=pretend,
            annotation=annotation,
        ),
    }
    metadata: dict[str, object] = {
        "nanobanana": {
            "local_id": clean(record.local_id),
            "task_id": None if record.task_id is None else clean(record.task_id),
            "status": str(record.status.value),
            "model": shorten(clean(record.model), MODEL_CHARS),
            "prompt": shorten(clean(record.prompt), PROMPT_META_CHARS),
            "paths": [clean(image.path) for image in record.images],
            "consumed": _json_number(record.consumed),
            "reused": reused,
        }
    }
    if embed_first_image:
        first = next((p for p in usable if p.media_type in _BUNDLE_IMAGE_TYPES), None)
        if first is not None:
            data[first.media_type] = base64.b64encode(first.data).decode("ascii")
            if first.width is not None and first.height is not None:
                metadata[first.media_type] = {"width": first.width, "height": first.height}
    return data, metadata


def record_bundle(
    record: TaskRecord,
    *,
    embed: str,
    side: int,
    now: float | None = None,
    reused: bool = False,
    pretend: bool = False,
    annotation: Annotation | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task's mimebundle with its previews for ``embed`` and ``side``
    (:func:`.previews.previews_for`): what a live card and a cell's result both show.

    While the task runs, the card shows the time since it was created (``now``: the wall
    clock, by default).
    """
    previews = previews_for(record, embed=embed, side=side)
    elapsed = None
    if not record.is_terminal:
        elapsed = coarse_elapsed(
            max(0.0, (time.time() if now is None else now) - record.created_at)
        )
    return task_bundle(
        record,
        previews=previews,
        elapsed=elapsed,
        reused=reused,
        pretend=pretend,
        annotation=annotation,
    )


def shown_as(task: Any) -> dict[str, bool]:
    """How a task's card words its cost: ``reused`` (handed back for an identical request)
    and ``pretend`` (its session talks to a sandbox)."""
    session = getattr(task, "session", None)
    return {
        "reused": bool(getattr(task, "reused", False)),
        "pretend": bool(getattr(session, "is_sandbox", False)),
    }


def batch_bundle(tasks: Sequence[Any]) -> dict[str, object]:
    """A one-line progress bar for a batch of tasks, as text and escaped HTML.

    ``tasks`` are objects with ``status`` (a :class:`TaskStatus`) and ``done()``.
    """
    progress = Progress.of(tasks)
    return {"text/plain": progress.text(), "text/html": progress.html()}
