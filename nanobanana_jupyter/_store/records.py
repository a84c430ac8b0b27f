"""The local records of a task and its images: what the history store keeps.

Data only (standard library); Pillow is imported inside :meth:`ImageRecord.to_pil` alone.
Records are immutable; the store and the session replace them as a task moves on.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobanana_jupyter._wire.errors import redact
from nanobanana_jupyter._wire.models import TaskStatus

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["RECORD_COLUMNS", "ImageRecord", "TaskRecord"]


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One result image, kept on disk under its content hash."""

    sha256: str
    """Hex digest of the file's bytes; also its name in the image store."""
    path: str
    """The full-size file."""
    media_type: str
    """``image/png``, ``image/jpeg``, ``image/webp`` or ``image/gif``."""
    width: int
    height: int
    size: int
    """Bytes of the full-size file."""
    thumb_path: str | None = None
    """A downscaled JPEG preview for notebooks (long side at most 512 px by default)."""
    url: str | None = None
    """Where it was fetched from, when it came as a URL (such URLs expire); secrets masked."""

    def __post_init__(self) -> None:
        if self.url:
            object.__setattr__(self, "url", redact(self.url, limit=None))

    def to_pil(self) -> PILImage.Image:
        """Open the full-size image with Pillow (loaded into memory, file closed)."""
        from PIL import Image

        with Image.open(self.path) as img:
            img.load()
            copy: PILImage.Image = img.copy()
            return copy

    def read_bytes(self) -> bytes:
        """The full-size file's bytes."""
        return Path(self.path).read_bytes()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """Everything known locally about one generation, from intent to images.

    ``local_id`` exists from the moment the intent is written, before the submit is sent;
    ``task_id`` (the server's id) once the submit answered.
    """

    local_id: str
    status: TaskStatus
    prompt: str
    model: str
    fingerprint: str
    created_at: float
    """Epoch seconds when the intent was written."""
    updated_at: float
    task_id: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    callback_url: str | None = None
    references: tuple[str, ...] = ()
    """Reference images: URLs as given, credentials masked (``https://***@host/...``);
    inline images as ``sha256:<hex>`` descriptors."""
    submitted_at: float | None = None
    finished_at: float | None = None
    consumed: Decimal | None = None
    """Credits the server says it charged."""
    error: str | None = None
    """Why it ended badly (server reason or local explanation), redacted."""
    result_urls: tuple[str, ...] = ()
    """Result URLs as the server gave them (data URIs are not repeated here)."""
    images: tuple[ImageRecord, ...] = ()
    texts: tuple[str, ...] = ()
    """Text answers, when the model replied in words."""
    polls: int = 0
    """Queries made for this task."""
    reuses: int = 0
    """How many later identical requests were handed this task instead of paying again."""

    def __post_init__(self) -> None:
        # A record is what is stored and shown, so it never holds a secret: a key (the
        # configured one, or dk-shaped) or URL credentials in a prompt, reference, reason or
        # text answer are masked here, once for every path. What is sent to the server is
        # the user's own request, kept apart from the record.
        for name in ("prompt", "callback_url", "error"):
            value = getattr(self, name)
            if value:
                object.__setattr__(self, name, redact(value, limit=None))
        for name in ("references", "result_urls", "texts"):
            values = getattr(self, name)
            if values:
                object.__setattr__(self, name, tuple(redact(v, limit=None) for v in values))

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def duration(self) -> float | None:
        """Seconds from submit to the end, when both are known."""
        if self.submitted_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.submitted_at)

    def replace(self, **changes: Any) -> TaskRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (str, float, int, None, lists, dicts): for tables and JSON."""
        return {
            "local_id": self.local_id,
            "task_id": self.task_id,
            "status": self.status.value,
            "prompt": self.prompt,
            "model": self.model,
            "aspect_ratio": self.aspect_ratio,
            "image_size": self.image_size,
            "callback_url": self.callback_url,
            "references": list(self.references),
            "fingerprint": self.fingerprint,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "submitted_at": self.submitted_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "consumed": None if self.consumed is None else float(self.consumed),
            "error": self.error,
            "result_urls": list(self.result_urls),
            "paths": [i.path for i in self.images],
            "texts": list(self.texts),
            "polls": self.polls,
            "reuses": self.reuses,
        }


RECORD_COLUMNS: tuple[str, ...] = (
    "local_id", "task_id", "status", "prompt", "model", "aspect_ratio", "image_size",
    "callback_url", "references", "fingerprint", "created_at", "updated_at", "submitted_at",
    "finished_at", "duration", "consumed", "error", "result_urls", "paths", "texts", "polls",
    "reuses",
)  # fmt: skip
"""The keys of :meth:`TaskRecord.to_dict`, in order: the columns of ``History.to_pandas()``."""
