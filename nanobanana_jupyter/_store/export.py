"""Copies of stored images that leave the image store, each carrying its provenance.

Every way a file is written out of the store (``task.save(path)``, the terminal's
``--out``) goes through :func:`save_images`: the stored original's bytes, with the recipe
added as metadata (:mod:`.provenance`, :mod:`.embedding`) and the pixels untouched, written
atomically (a temporary file in the target folder, then a rename), never over an existing
file unless asked. A GIF, whose format has no slot for it, is copied unchanged with a
``<name>.nanobanana.json`` sidecar beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nanobanana_jupyter._wire.errors import ValidationError

from .embedding import UnsupportedFormat, embed
from .images import TEMP_PREFIX
from .provenance import Provenance, sidecar_of
from .records import ImageRecord, TaskRecord

__all__ = ["EXTENSIONS", "save_images", "targets_for", "with_provenance"]

logger = logging.getLogger("nanobanana_jupyter")

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}
"""The suffix a copy of each stored type gets."""
_SUFFIXES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


def with_provenance(record: TaskRecord, image: ImageRecord) -> tuple[bytes, str | None]:
    """The bytes of a copy of ``image`` (of task ``record``): the stored file with its recipe
    inside, and the sidecar's text when the format holds none (else ``None``).

    Raises:
        FileNotFoundError: the stored file is gone.
    """
    data = Path(image.path).read_bytes()
    text = Provenance.of(record, image).to_json()
    try:
        return embed(data, text), None
    except UnsupportedFormat:
        return data, text
    except ValueError as exc:
        # Decodable, yet its container does not parse strictly: copied as it is, with the
        # recipe beside it, rather than patched.
        logger.warning("%s: %s; its recipe goes into a sidecar file instead", image.path, exc)
        return data, text


def _safe_name(text: str) -> str:
    """A file name part from an id: letters, digits, ``-`` and ``_`` only, 80 at most."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:80]


def targets_for(record: TaskRecord, where: str | os.PathLike[str]) -> list[Path]:
    """Where the images of ``record`` go for ``task.save(path)``.

    A folder (an existing one, or text ending in a separator, created then): named from the
    task id, ``<id>.png``, or ``<id>-1.png``, ``<id>-2.png``... for several images. A file
    name: that name, numbered the same way for several images; its suffix must match the
    image's type (nothing is re-encoded), and is added when it has none.

    Raises:
        ValidationError: the suffix names another type than the image has.
    """
    raw = os.fspath(where)
    path = Path(raw).expanduser()
    is_folder = path.is_dir() or raw.endswith((os.sep, "/"))
    images = record.images
    numbered = len(images) > 1
    if is_folder:
        stem = _safe_name(record.task_id or "") or _safe_name(record.local_id) or "image"
        folder = path
    else:
        stem, folder = path.stem if path.suffix else path.name, path.parent
    targets: list[Path] = []
    for i, image in enumerate(images, start=1):
        suffix = EXTENSIONS.get(image.media_type, "")
        if not is_folder and path.suffix:
            given = _SUFFIXES.get(path.suffix.lower())
            if given != image.media_type:
                kind = image.media_type.partition("/")[2].upper() or "image"
                raise ValidationError(
                    f"the image is a {kind} and is saved as it is (never re-encoded): name "
                    f"the file {path.stem}{suffix} instead of {path.name}; nothing was written"
                )
            suffix = path.suffix
        name = f"{stem}-{i}{suffix}" if numbered else f"{stem}{suffix}"
        targets.append(folder / name)
    return targets


def save_images(
    record: TaskRecord,
    images: Sequence[ImageRecord],
    targets: Sequence[Path],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write a copy of each image, with its provenance, to its target; return the paths.

    Every target is checked before anything is written, so a refusal writes nothing.

    Raises:
        ValidationError: a target exists and ``overwrite`` is false, or is a folder.
        FileNotFoundError: a stored image file is gone.
        OSError: the copy could not be written (nothing partial is left).
    """
    targets = [Path(t).expanduser() for t in targets]
    for target in targets:
        if target.is_dir():
            raise ValidationError(f"{str(target)!r} is a folder; nothing was written")
        if not overwrite and target.exists():
            raise ValidationError(
                f"{str(target)!r} exists; pass overwrite=True to replace it (nothing was written)"
            )
    written: list[Path] = []
    for image, target in zip(images, targets, strict=True):
        data, sidecar = with_provenance(record, image)
        _atomic_write(target, data, overwrite=overwrite)
        if sidecar is not None:
            _atomic_write(sidecar_of(target), sidecar.encode("utf-8"), overwrite=True)
        written.append(target)
    return written


def _atomic_write(target: Path, data: bytes, *, overwrite: bool) -> None:
    """Make ``target`` hold ``data`` whole or not at all. Without ``overwrite``, a file that
    appeared meanwhile is never replaced (the temporary file is hard-linked into place, which
    fails on an existing name)."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise ValidationError(
                f"{str(target)!r} exists; pass overwrite=True to replace it"
            ) from None
        except OSError:
            # No hard links here (some filesystems): checked just above, then renamed.
            if target.exists():
                raise ValidationError(
                    f"{str(target)!r} exists; pass overwrite=True to replace it"
                ) from None
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
