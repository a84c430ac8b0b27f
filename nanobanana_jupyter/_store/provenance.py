"""Provenance: the recipe a copy of a stored image carries, and reading it back from a file.

The image store keeps what the service returned, byte for byte. A copy that leaves it
(``task.save(path)``, the terminal's ``--out``) carries, as a versioned JSON object inside the
file (see :mod:`.embedding`; a GIF gets a ``<name>.nanobanana.json`` sidecar instead), what
made it: prompt, model, options, task ids, the references (URLs, or ``sha256:<hash>`` of the
image bytes a reference came from: a parent result's own hash), when the task was created,
the package version and the stored original's own sha256. Never the API key (records are
redacted already), and never a URL's query string or credentials (either may be a token).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nanobanana_jupyter._version import __version__
from nanobanana_jupyter._wire.errors import ValidationError, redact
from nanobanana_jupyter._wire.models import sniff_image_type

from .embedding import UnsupportedFormat, extract
from .records import ImageRecord, TaskRecord

__all__ = [
    "SCHEMA",
    "SIDECAR_SUFFIX",
    "Provenance",
    "read_provenance",
    "shareable_reference",
    "sidecar_of",
]

SCHEMA = 1
"""The version of the JSON layout; a reader refuses a newer one it does not know."""
SIDECAR_SUFFIX = ".nanobanana.json"
"""Added to the file name of a copy whose format holds no metadata (GIF)."""
MAX_READ_BYTES = 256 * 1024 * 1024
"""Largest file :func:`read_provenance` reads."""
WITHHELD = "***"
"""What stands for a URL's query string (or credentials) left out of a file."""

_HASH_REF = re.compile(r"sha256:([0-9a-f]{64})")


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What made an image file: read with ``nanobanana_jupyter.read_provenance(path)``,
    re-run with ``session.generate_like(path)``."""

    prompt: str
    model: str
    aspect_ratio: str | None = None
    image_size: str | None = None
    task_id: str | None = None
    """The server's task id."""
    local_id: str | None = None
    """The task's id in the history it came from."""
    references: tuple[str, ...] = ()
    """Reference images: ``sha256:<hex>`` of an inline image's bytes (a parent result's own
    hash), or a URL; a URL's query string or credentials are withheld as ``***``."""
    created_at: float | None = None
    """Epoch seconds when the task was created."""
    image_sha256: str | None = None
    """The sha256 of the stored original (the service's bytes, before metadata was added)."""
    image_index: int = 0
    """Which of the task's images this is (0 for the first)."""
    package_version: str | None = None
    """The nanobanana-jupyter version that wrote the file."""
    schema: int = SCHEMA

    @property
    def parent_hashes(self) -> tuple[str, ...]:
        """The sha256 of every inline reference image (parents in the history's lineage)."""
        return tuple(m.group(1) for ref in self.references if (m := _HASH_REF.fullmatch(ref)))

    @classmethod
    def of(cls, record: TaskRecord, image: ImageRecord) -> Provenance:
        """The provenance of one image of a task."""
        index = next((i for i, im in enumerate(record.images) if im.sha256 == image.sha256), 0)
        return cls(
            prompt=record.prompt,
            model=record.model,
            aspect_ratio=record.aspect_ratio,
            image_size=record.image_size,
            task_id=record.task_id,
            local_id=record.local_id,
            references=tuple(shareable_reference(ref) for ref in record.references),
            created_at=record.created_at,
            image_sha256=image.sha256,
            image_index=index,
            package_version=__version__,
        )

    def to_json(self) -> str:
        """The JSON object files carry (keys sorted; ``generator`` names the package)."""
        data: dict[str, Any] = {"generator": "nanobanana-jupyter", **dataclasses.asdict(self)}
        data["references"] = list(self.references)
        return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Provenance:
        """Read what :meth:`to_json` wrote.

        Raises:
            ValueError: not such an object, or of a newer schema than this version reads.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise ValueError("it is not a recipe object")
        schema = data.get("schema", SCHEMA)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise ValueError(
                f"it is of schema {schema!r}, newer than this version reads ({SCHEMA}); "
                "upgrade nanobanana-jupyter"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        refs = values.get("references", ())
        if not isinstance(refs, (list, tuple)) or not all(isinstance(r, str) for r in refs):
            raise ValueError("its references are not a list of text")
        values["references"] = tuple(refs)
        for name, types in _TYPES.items():
            if name in values and not isinstance(values[name], types):
                raise ValueError(f"its {name!r} is a {type(values[name]).__name__}")
        if not isinstance(values.get("model"), str):
            raise ValueError("it names no model")
        return cls(**values)


_OPTIONAL_TEXT = (str, type(None))
_TYPES: dict[str, tuple[type, ...]] = {
    "aspect_ratio": _OPTIONAL_TEXT,
    "image_size": _OPTIONAL_TEXT,
    "task_id": _OPTIONAL_TEXT,
    "local_id": _OPTIONAL_TEXT,
    "image_sha256": _OPTIONAL_TEXT,
    "package_version": _OPTIONAL_TEXT,
    "created_at": (int, float, type(None)),
    "image_index": (int,),
}


def shareable_reference(ref: str) -> str:
    """A reference fit for a file: no query string, fragment or credentials (tokens)."""
    if _HASH_REF.fullmatch(ref) or not ref.startswith(("http://", "https://")):
        return redact(ref, limit=None)
    parts = urlsplit(ref)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    userinfo = f"{WITHHELD}@" if "@" in parts.netloc else ""
    query = f"?{WITHHELD}" if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{userinfo}{host}{port}{parts.path}{query}"


def sidecar_of(path: Path) -> Path:
    """The sidecar file next to ``path`` (for formats that hold no metadata)."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """The recipe an image file carries, or ``None`` when it carries none.

    Reads the metadata a copy saved by this package holds (``task.save``, the terminal's
    ``--out``): a PNG text chunk, or the XMP of a JPEG or WebP; a GIF's sidecar
    ``<name>.nanobanana.json``.

    Raises:
        FileNotFoundError: there is no such file.
        ValidationError: the file is not a PNG, JPEG, WebP or GIF image, is damaged, or its
            metadata cannot be read.
    """
    file = Path(os.fspath(path)).expanduser()
    if not file.is_file():
        if file.exists():
            raise ValidationError(f"{str(file)!r} is not a file; give an image file's path")
        raise FileNotFoundError(f"no such file: {str(file)!r}; give an image file's path")
    if file.stat().st_size > MAX_READ_BYTES:
        raise ValidationError(f"{str(file)!r} is larger than {MAX_READ_BYTES >> 20} MiB")
    data = file.read_bytes()
    kind = sniff_image_type(data)
    if kind is None:
        raise ValidationError(
            f"{str(file)!r} is not a PNG, JPEG, WebP or GIF image (checked by its first bytes)"
        )
    try:
        text = extract(data)
    except UnsupportedFormat:
        sidecar = sidecar_of(file)
        text = sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None
    except ValueError as exc:
        raise ValidationError(f"{str(file)!r} could not be read: {exc}") from None
    if text is None:
        return None
    try:
        return Provenance.from_json(text)
    except ValueError as exc:
        raise ValidationError(f"the metadata of {str(file)!r} cannot be read: {exc}") from None
