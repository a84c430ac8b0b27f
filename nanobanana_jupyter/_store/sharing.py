"""An export of tasks to share: a self-contained folder (or one ``.zip`` of it).

``history.export(path)`` writes::

    path/
        index.html      a contact sheet: one tile per task, opened from the file, offline
        history.csv     one row per task (UTF-8, comma-separated, formula-safe)
        images/         each task's images, carrying their recipe (``read_provenance``)

The images leave the image store through :func:`.export.save_images`, like every other copy,
so they carry their provenance and untouched pixels. The page is written by the display layer
(above the store), installed into :mod:`.presenter` by the package's top: this module hands it
a :class:`ContactSheet`, plain data, and writes what comes back.

The folder is built in a temporary folder beside the target and renamed into place, so a
reader never sees half an export and a failure leaves nothing; an existing folder that is
not empty is replaced only when asked. A zip holds the same files, under one folder named
like the zip.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import io
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from nanobanana_jupyter._wire.credits import normalize_credits
from nanobanana_jupyter._wire.errors import ValidationError

from . import lineage as _lineage
from . import presenter
from .annotations import Annotation
from .export import EXTENSIONS, save_images
from .provenance import shareable_reference
from .records import TaskRecord
from .store import Store

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "ContactSheet",
    "SheetTile",
    "csv_text",
    "formula_safe",
    "write_export",
]

FORMATS = ("html", "zip")
"""What ``history.export(format=...)`` writes: a folder, or one zip of the same files."""

INDEX, CSV_NAME, IMAGES = "index.html", "history.csv", "images"

CSV_COLUMNS = (
    "local_id", "task_id", "status", "prompt", "model", "aspect_ratio", "image_size",
    "references", "parent_hashes", "parent_ids", "consumed", "reuses", "created_at",
    "submitted_at", "finished_at", "duration", "error", "texts", "rating", "tags", "note",
    "images", "image_sha256", "fingerprint",
)  # fmt: skip
"""The columns of ``history.csv``: those of ``history.to_pandas()`` that mean something in a
shared file. Left out: local paths (replaced by ``images``, relative to the folder), result
URLs (they expire and may be signed), the callback URL and the poll count."""

_TEMP_PREFIX = ".nanobanana-export-"
# Cells a spreadsheet would read as a formula (or that hide one behind a tab or a return).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclasses.dataclass(frozen=True)
class SheetTile:
    """One task of an export, with what its tile and its CSV row show."""

    record: TaskRecord
    annotation: Annotation
    files: tuple[str | None, ...]
    """Each image's file, relative to the export's folder (``images/<id>.png``), in the order
    of ``record.images``; ``None`` for an image whose stored file is gone."""
    parents: tuple[TaskRecord, ...] = ()
    """The tasks whose results this one used as references (in the export or not)."""
    children: tuple[TaskRecord, ...] = ()
    """The tasks made from this one's results (in the export or not)."""

    @property
    def anchor(self) -> str:
        """The tile's id in ``index.html`` (``t-<local id>``, made fit for a fragment)."""
        return anchor_of(self.record.local_id)


@dataclasses.dataclass(frozen=True)
class ContactSheet:
    """What ``index.html`` shows: every exported task, and the totals of the header."""

    tiles: tuple[SheetTile, ...]
    total_cost: Decimal | None
    """The credits charged for the exported tasks (``None`` when none is known)."""
    pretend: bool
    """A sandbox's history: its costs are pretend credits."""
    exported_at: float
    """Epoch seconds when the export was made."""

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def local_ids(self) -> frozenset[str]:
        return frozenset(tile.record.local_id for tile in self.tiles)


def anchor_of(local_id: str) -> str:
    """``t-<local id>``: letters, digits, ``-`` and ``_`` kept, anything else as ``_``."""
    return "t-" + re.sub(r"[^A-Za-z0-9_-]", "_", local_id)


# -- the CSV ---------------------------------------------------------------------------------


def formula_safe(value: str) -> str:
    """``value`` as a spreadsheet shows it, never run: a cell starting with ``=``, ``+``,
    ``-``, ``@`` (or a tab or carriage return, which some hide a formula behind) gets a
    leading ``'``. NUL, which some readers stop at, is shown as ``␀``."""
    value = value.replace("\x00", "\u2400")
    return "'" + value if value.startswith(_FORMULA_START) else value


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="seconds")


def _number(value: float | Decimal | None) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(normalize_credits(value), "f")
    return f"{value:g}"


def _row(tile: SheetTile) -> dict[str, str]:
    record, note = tile.record, tile.annotation
    return {
        "local_id": record.local_id,
        "task_id": record.task_id or "",
        "status": record.status.value,
        "prompt": record.prompt,
        "model": record.model,
        "aspect_ratio": record.aspect_ratio or "",
        "image_size": record.image_size or "",
        "references": ";".join(shareable_reference(ref) for ref in record.references),
        "parent_hashes": ";".join(_lineage.reference_hashes(record)),
        "parent_ids": ";".join(parent.local_id for parent in tile.parents),
        "consumed": _number(record.consumed),
        "reuses": str(record.reuses),
        "created_at": _iso(record.created_at),
        "submitted_at": _iso(record.submitted_at),
        "finished_at": _iso(record.finished_at),
        "duration": _number(record.duration),
        "error": record.error or "",
        "texts": "\n\n".join(record.texts),
        "rating": "" if note.rating is None else str(note.rating),
        "tags": ";".join(note.tags),
        "note": note.note or "",
        "images": ";".join(name for name in tile.files if name),
        "image_sha256": ";".join(image.sha256 for image in record.images),
        "fingerprint": record.fingerprint,
    }


def csv_text(tiles: Sequence[SheetTile]) -> str:
    """``history.csv``: a header of :data:`CSV_COLUMNS`, then one row per task; several
    values in one cell (tags, images, hashes) joined with ``;``; times ISO 8601 in UTC."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for tile in tiles:
        row = _row(tile)
        writer.writerow([formula_safe(row[column]) for column in CSV_COLUMNS])
    return out.getvalue()


# -- writing ---------------------------------------------------------------------------------


def _file_stem(local_id: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", local_id).strip("_")[:80] or "task"
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _copy_images(folder: Path, records: Sequence[TaskRecord]) -> list[tuple[str | None, ...]]:
    """Copy every task's images into ``folder/images``; each task's relative names."""
    taken: set[str] = set()
    names: list[tuple[str | None, ...]] = []
    for record in records:
        stem = _file_stem(record.local_id, taken)
        numbered = len(record.images) > 1
        files: list[str | None] = []
        for i, image in enumerate(record.images, start=1):
            suffix = EXTENSIONS.get(image.media_type, "")
            name = f"{IMAGES}/{stem}-{i}{suffix}" if numbered else f"{IMAGES}/{stem}{suffix}"
            try:
                save_images(record, [image], [folder / name])
            except FileNotFoundError:
                files.append(None)  # the stored file is gone: the tile says so
                continue
            files.append(name)
        names.append(tuple(files))
    return names


def _build(
    folder: Path, store: Store, records: Sequence[TaskRecord], *, pretend: bool, now: float
) -> None:
    """Write the export's files into the empty ``folder``."""
    files = _copy_images(folder, records)
    notes = store.annotations([record.local_id for record in records])
    tiles = tuple(
        SheetTile(
            record=record,
            annotation=notes.get(record.local_id) or Annotation(),
            files=names,
            parents=tuple(_lineage.parents(store, record)),
            children=tuple(_lineage.children(store, record)),
        )
        for record, names in zip(records, files, strict=True)
    )
    costs = [record.consumed for record in records if record.consumed is not None]
    total = normalize_credits(sum(costs, Decimal(0))) if costs else None
    sheet = ContactSheet(tiles=tiles, total_cost=total, pretend=pretend, exported_at=now)
    (folder / INDEX).write_text(presenter.contact_sheet(sheet), encoding="utf-8")
    (folder / CSV_NAME).write_text(csv_text(tiles), encoding="utf-8", newline="")


def write_export(
    store: Store,
    records: Sequence[TaskRecord],
    path: str | os.PathLike[str],
    *,
    format: str = "html",
    overwrite: bool = False,
    pretend: bool = False,
    clock: Callable[[], float] = time.time,
) -> Path:
    """Export ``records`` (in this order) to ``path``: a folder, or for ``"zip"`` a zip file
    (``.zip`` added when the name has no such suffix). Returns the path written.

    Raises:
        ValidationError: no tasks, an unknown format, or ``path`` is in the way (a file where
            the folder goes, a folder that is not empty, an existing zip) and ``overwrite``
            is false. Nothing is written then.
    """
    if format not in FORMATS:
        raise ValidationError(
            f"format must be {' or '.join(map(repr, FORMATS))}, not {format!r}; nothing was written"
        )
    if not records:
        raise ValidationError(
            "nothing to export: no tasks were given or matched (check the filters or the "
            "search); nothing was written"
        )
    target = Path(path).expanduser()
    if format == "zip" and target.suffix.lower() != ".zip":
        target = target.with_name(target.name + ".zip")
    _check_target(target, format=format, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=target.parent))
    try:
        _build(work, store, records, pretend=pretend, now=clock())
        if format == "zip":
            _zip_into(target, work, top=target.stem, overwrite=overwrite)
        else:
            _move_into(target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _check_target(target: Path, *, format: str, overwrite: bool) -> None:
    if format == "zip":
        if target.is_dir():
            raise ValidationError(f"{str(target)!r} is a folder; nothing was written")
        if target.exists() and not overwrite:
            raise ValidationError(
                f"{str(target)!r} exists; pass overwrite=True (--overwrite) to replace it; "
                "nothing was written"
            )
        return
    if target.exists() and not target.is_dir():
        raise ValidationError(
            f"{str(target)!r} is a file, not a folder; name a folder to export into; "
            "nothing was written"
        )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValidationError(
            f"{str(target)!r} is a folder that is not empty; name a new folder or pass "
            "overwrite=True (--overwrite) to replace it; nothing was written"
        )


def _move_into(target: Path, work: Path) -> None:
    """Put the built folder at ``target``: a rename, the old folder set aside first and
    removed after, so ``target`` is always either the old export or the new one."""
    if not target.exists():
        os.rename(work, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX + "old-", dir=target.parent))
    aside.rmdir()
    os.rename(target, aside)
    try:
        os.rename(work, target)
    except OSError:
        os.rename(aside, target)  # put the old one back
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _zip_into(target: Path, work: Path, *, top: str, overwrite: bool) -> None:
    """Write every file of ``work`` into the zip ``target``, under ``top/``, atomically."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".zip", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            for path in sorted(p for p in work.rglob("*") if p.is_file()):
                name = f"{top}/{path.relative_to(work).as_posix()}"
                packed = path.suffix in {".html", ".csv", ".json"}
                kind = zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED
                archive.write(path, name, compress_type=kind)
        if not overwrite and target.exists():
            raise ValidationError(f"{str(target)!r} exists; pass overwrite=True to replace it")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
