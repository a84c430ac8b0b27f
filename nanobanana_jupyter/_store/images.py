"""The image store: result images kept on disk under their content hash, with previews.

Result URLs expire, so every image is saved the moment a task succeeds (design.md section
4). A file's name is the SHA-256 of its bytes, which makes saving idempotent (the same image
twice is one file) and lets a history row point at a file that can never change under it.

Writes are atomic and durable (research/reliability.md section 5): the bytes go to a
temporary file in the store's folder of temporary files (``root/.incoming``), which is
flushed and fsynced, renamed over the final name with :func:`os.replace`, and then the
target directory is fsynced. A crash leaves either the complete file or none, plus at worst
a ``.tmp-`` file in that one folder, which every start clears of orphans: a look at one
small folder, not a walk of every image. (Releases before that folder put their temporary
files beside the targets; the first start that makes the folder sweeps the whole store
once for theirs, and :meth:`ImageStore.cleanup_temp` sweeps it whole on demand.)

Every image is checked (:mod:`.decoding`: a raster type, decoded fully within a pixel
budget) before it reaches the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from PIL import Image

from nanobanana_jupyter._wire.models import sniff_image_type

from .decoding import PREVIEW_QUALITY, decode_as, encode_preview
from .records import ImageRecord

__all__ = ["ORPHAN_AGE", "TEMP_DIR", "TEMP_PREFIX", "ImageStore", "IncomingImage"]

TEMP_PREFIX = ".tmp-"
"""Every temporary file starts with this, so orphans from a crash can be found."""

TEMP_DIR = ".incoming"
"""The folder (under the store's root) that holds every temporary file while it is written."""

ORPHAN_AGE = 600.0
"""Seconds before a temporary file counts as orphaned.

Another kernel may be writing into the same store right now; its temporary file is seconds
old at most, so anything this old was left by a process that died between write and rename.
"""

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class ImageStore:
    """Content-addressed image files under ``root``, each with a JPEG thumbnail.

    Layout: ``root/<sha[:2]>/<sha>.<ext>`` for the full file and
    ``root/thumbs/<sha[:2]>/<sha>-<side>.jpg`` for its thumbnail. Safe for several threads
    and processes at once: every write is an atomic rename of a complete file.

    Args:
        root: the directory; created if missing.
        thumb_side: the thumbnail's longest side in pixels.
        max_bytes: larger inputs are refused before anything is decoded.
        max_pixels: images whose header declares more pixels are refused before decoding
            (a small file can declare a huge image: a decompression bomb).
    """

    def __init__(
        self,
        root: Path,
        *,
        thumb_side: int = 512,
        max_bytes: int = 50 * 1024 * 1024,
        max_pixels: int = 64_000_000,
    ) -> None:
        if thumb_side < 1 or max_bytes < 1 or max_pixels < 1:
            raise ValueError("thumb_side, max_bytes and max_pixels must be positive")
        self.root = Path(root).expanduser().absolute()
        self.thumb_side = thumb_side
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._temp = self.root / TEMP_DIR
        if self._temp.is_dir():
            _clear_orphans(self._temp)
        else:
            # Made by this release: temporary files of an older one may lie anywhere.
            self.root.mkdir(parents=True, exist_ok=True)
            self.cleanup_temp()
            self._temp.mkdir(exist_ok=True)

    def put(self, data: bytes, *, url: str | None = None) -> ImageRecord:
        """Check, store and thumbnail one image; return its record.

        Storing the same bytes again reuses the existing files and rewrites nothing.

        Raises:
            ValueError: the bytes are too large, not a PNG/JPEG/WebP/GIF, declare too many
                pixels, or cannot be decoded (truncated, damaged). The message says which.
            OSError: the files could not be written (disk full, permissions). Nothing
                partial is left behind.
        """
        if len(data) > self.max_bytes:
            raise ValueError(
                f"image is {len(data)} bytes, more than the {self.max_bytes} byte limit"
            )
        media_type = sniff_image_type(data)
        if media_type is None:
            raise ValueError(
                "the data is not a PNG, JPEG, WebP or GIF image (checked by its first bytes); "
                "other types such as SVG or HTML are never stored"
            )
        image = decode_as(data, media_type, self.max_pixels)
        digest = hashlib.sha256(data).hexdigest()
        return self._keep(
            digest,
            media_type,
            image,
            len(data),
            url,
            lambda path: _atomic_write(path, data, temp_dir=self._temp),
        )

    def incoming(self) -> IncomingImage:
        """A temporary file in the store to stream one image into; see :meth:`put_incoming`.

        Use it as a context manager: whatever was not stored is removed on exit.
        """
        self._temp.mkdir(parents=True, exist_ok=True)  # in case it was removed by hand
        return IncomingImage(self._temp, self.max_bytes)

    def put_incoming(self, incoming: IncomingImage, *, url: str | None = None) -> ImageRecord:
        """Check, store and thumbnail an image streamed into ``incoming``; return its record.

        The same checks as :meth:`put`, decoding from the temporary file (the bytes are never
        all in memory at once); the file is then renamed into place, so a stored image is
        always whole. ``incoming`` is used up either way.

        Raises:
            ValueError, OSError: as :meth:`put`; the temporary file is removed.
        """
        with incoming:
            size, digest, head = incoming.finish()
            media_type = sniff_image_type(head)
            if media_type is None:
                raise ValueError(
                    "the data is not a PNG, JPEG, WebP or GIF image (checked by its first "
                    "bytes); other types such as SVG or HTML are never stored"
                )
            with open(incoming.path, "rb") as file:
                image = decode_as(file, media_type, self.max_pixels)
            return self._keep(digest, media_type, image, size, url, incoming.move_to)

    def _keep(
        self,
        digest: str,
        media_type: str,
        image: Image.Image,
        size: int,
        url: str | None,
        place: Callable[[Path], None],
    ) -> ImageRecord:
        """File a checked image under its hash (``place`` writes it there) with a thumbnail."""
        path = self.root / digest[:2] / f"{digest}.{_EXTENSIONS[media_type]}"
        # Same name means same bytes; the size check guards against a file damaged by hand.
        if not _is_file_of_size(path, size):
            place(path)
        thumb = self.root / "thumbs" / digest[:2] / f"{digest}-{self.thumb_side}.jpg"
        if not _is_file_of_size(thumb, None):
            preview = encode_preview(image, self.thumb_side, "JPEG", PREVIEW_QUALITY)
            _atomic_write(thumb, preview, durable=False, temp_dir=self._temp)
        return ImageRecord(
            sha256=digest,
            path=str(path),
            media_type=media_type,
            width=image.width,
            height=image.height,
            size=size,
            thumb_path=str(thumb),
            url=url,
        )

    def get(self, sha256: str) -> ImageRecord | None:
        """The record of a stored image by its hash, or ``None`` when it is not stored."""
        digest = sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return None
        for media_type, ext in _EXTENSIONS.items():
            path = self.root / digest[:2] / f"{digest}.{ext}"
            if not path.is_file():
                continue
            with Image.open(path) as img:
                width, height = img.size
            thumb = self.root / "thumbs" / digest[:2] / f"{digest}-{self.thumb_side}.jpg"
            return ImageRecord(
                sha256=digest,
                path=str(path),
                media_type=media_type,
                width=width,
                height=height,
                size=path.stat().st_size,
                thumb_path=str(thumb) if thumb.is_file() else None,
            )
        return None

    def cleanup_temp(self, *, min_age: float = ORPHAN_AGE) -> int:
        """Remove temporary files older than ``min_age`` seconds left by a crash; count them.

        Younger ones may belong to a write in progress in another kernel and are kept. This
        walks the whole store (every image), wherever a release put its temporary files; a
        start only clears the folder of temporary files.
        """
        return sum(
            _clear_orphans(Path(directory), names, min_age=min_age)
            for directory, _dirs, names in os.walk(self.root)
        )

    def __repr__(self) -> str:
        return f"<ImageStore {str(self.root)!r}>"


class IncomingImage:
    """One image being streamed into the store: a temporary file, hashed and counted as the
    bytes arrive, so a large download never sits in memory whole.

    A download that is retried starts again with ``seek(0)`` and ``truncate()``. More than
    the store's ``max_bytes`` is refused while writing. Removed on exit unless it was moved
    into the store by :meth:`ImageStore.put_incoming`.
    """

    _HEAD = 16  # enough bytes to recognise the image type

    def __init__(self, root: Path, max_bytes: int) -> None:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=root)
        self.path = Path(name)
        try:
            self._file: IO[bytes] = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = b""

    def write(self, chunk: bytes) -> int:
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise ValueError(f"image is more than the {self._max_bytes} byte limit")
        if len(self._head) < self._HEAD:
            self._head += chunk[: self._HEAD - len(self._head)]
        self._hash.update(chunk)
        return self._file.write(chunk)

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise ValueError("an incoming image can only start again from the beginning")
        return self._file.seek(0)

    def truncate(self, size: int | None = None) -> int:
        """Start again (size 0 only): the bytes so far and their hash are dropped."""
        if size not in (None, 0) or self._file.tell() != 0:
            raise ValueError("an incoming image can only be truncated to nothing, after seek(0)")
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = b""
        return self._file.truncate(0)

    def finish(self) -> tuple[int, str, bytes]:
        """Flush, sync and close the file: ``(size, sha256 hex, first bytes)``."""
        if not self._file.closed:
            _write_and_sync(self._file, b"")
            self._file.close()
        return self._size, self._hash.hexdigest(), self._head

    def move_to(self, path: Path) -> None:
        """Rename the (finished) file to ``path`` atomically, and make the rename durable."""
        directory = path.parent
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if created:
            _fsync_dir(directory.parent)
        os.replace(self.path, path)
        _fsync_dir(directory)

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> IncomingImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _clear_orphans(
    directory: Path, names: list[str] | None = None, *, min_age: float = ORPHAN_AGE
) -> int:
    """Remove the temporary files in one folder older than ``min_age``; count them."""
    if names is None:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return 0
    removed = 0
    cutoff = time.time() - min_age
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        path = directory / name
        try:
            if path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # another process cleaned it up first
    return removed


# -- durable files -----------------------------------------------------------------------


def _is_file_of_size(path: Path, size: int | None) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return stat.st_size > 0 if size is None else stat.st_size == size


def _write_and_sync(file: IO[bytes], data: bytes, sync: bool = True) -> None:
    """Write all of ``data`` and, if ``sync``, force it to the disk (a test seam for disk-full
    errors)."""
    file.write(data)
    if sync:
        file.flush()
        os.fsync(file.fileno())


def _atomic_write(
    path: Path, data: bytes, *, durable: bool = True, temp_dir: Path | None = None
) -> None:
    """Make ``path`` hold ``data`` completely or not at all, durably unless told otherwise.

    The bytes are written to a temporary file in ``temp_dir`` (on the same file system;
    the target's own directory by default) and renamed into place.

    ``durable=False`` (for thumbnails, which are made again from the image) skips the two
    fsyncs: the rename is still atomic, and a process crash loses nothing; only a power cut
    may leave the file out.

    Raises:
        OSError: the write, sync or rename failed; the temporary file is removed and
            ``path`` is untouched.
    """
    directory = path.parent
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    if created and durable:
        # A new directory entry is only durable once its parent is synced too.
        _fsync_dir(directory.parent)
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)  # in case it was removed by hand
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=temp_dir or directory)
    try:
        file = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with file:
            _write_and_sync(file, data, durable)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    """Persist a directory's entries (the rename); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows cannot open directories; its rename is durable enough there.
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is synced
    finally:
        os.close(fd)
