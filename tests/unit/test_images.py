"""The image store and previews: content addressing, refusals, atomic writes (D4, D6, R5-R8)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
import time
import zlib
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image, JpegImagePlugin

from nanobanana_jupyter._store import images as _images
from nanobanana_jupyter._store.decoding import make_preview
from nanobanana_jupyter._store.images import ORPHAN_AGE, TEMP_PREFIX, ImageStore


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A small image with structure (not a flat colour), so codecs have work to do."""
    return Image.linear_gradient("L").resize(size).convert(mode)


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(picture(size), "PNG")


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


# -- storing ---------------------------------------------------------------------------


def test_put_stores_the_bytes_under_their_hash(store: ImageStore) -> None:
    """put() keeps the exact bytes at root/<sha[:2]>/<sha>.png and describes them."""
    data = png((64, 48))
    record = store.put(data, url="https://cdn.example.com/a.png")
    sha = hashlib.sha256(data).hexdigest()
    assert record.sha256 == sha
    assert Path(record.path) == store.root / sha[:2] / f"{sha}.png"
    assert Path(record.path).is_absolute()
    assert Path(record.path).read_bytes() == data
    assert (record.width, record.height, record.size) == (64, 48, len(data))
    assert record.media_type == "image/png"
    assert record.url == "https://cdn.example.com/a.png"
    assert record.thumb_path == str(store.root / "thumbs" / sha[:2] / f"{sha}-512.jpg")
    assert record.to_pil().size == (64, 48)


@pytest.mark.parametrize(
    ("fmt", "media_type", "ext"),
    [
        ("PNG", "image/png", "png"),
        ("JPEG", "image/jpeg", "jpg"),
        ("WEBP", "image/webp", "webp"),
        ("GIF", "image/gif", "gif"),
    ],
)
def test_put_accepts_each_raster_type(
    store: ImageStore, fmt: str, media_type: str, ext: str
) -> None:
    """PNG, JPEG, WebP and GIF are stored with the type their bytes really have."""
    record = store.put(encode(picture((40, 30)), fmt))
    assert record.media_type == media_type
    assert record.path.endswith(f".{ext}")
    assert (record.width, record.height) == (40, 30)


def test_put_twice_reuses_the_files_without_rewriting(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing the same bytes again returns the same record and writes nothing."""
    data = png()
    first = store.put(data)
    stat = Path(first.path).stat()

    def no_write(path: Path, data: bytes) -> None:
        raise AssertionError(f"rewrote {path}")

    monkeypatch.setattr(_images, "_atomic_write", no_write)
    again = store.put(data, url=None)
    assert again == first
    assert Path(first.path).stat().st_mtime_ns == stat.st_mtime_ns


def test_a_damaged_existing_file_is_replaced(store: ImageStore) -> None:
    """A final file whose size does not match its name is rewritten whole."""
    data = png()
    record = store.put(data)
    Path(record.path).write_bytes(data[:10])
    store.put(data)
    assert Path(record.path).read_bytes() == data


def test_get_finds_a_stored_image_by_hash(store: ImageStore) -> None:
    """get(sha256) describes a stored image; unknown or malformed hashes give None."""
    record = store.put(png((20, 10)))
    got = store.get(record.sha256)
    assert got is not None
    assert (got.path, got.width, got.height, got.size) == (
        record.path,
        20,
        10,
        record.size,
    )
    assert got.thumb_path == record.thumb_path
    assert store.get("0" * 64) is None
    assert store.get("../../etc/passwd") is None


# -- thumbnails and previews -----------------------------------------------------------


def test_thumbnail_is_a_jpeg_that_fits_the_side(tmp_path: Path) -> None:
    """The thumbnail is a JPEG whose long side is thumb_side, aspect ratio kept."""
    store = ImageStore(tmp_path, thumb_side=256)
    record = store.put(png((1024, 600)))
    assert record.thumb_path is not None
    assert record.thumb_path.endswith("-256.jpg")
    with Image.open(record.thumb_path) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.mode == "RGB"
        assert thumb.size == (256, 150)


def test_thumbnail_never_upscales(store: ImageStore) -> None:
    """A small image keeps its size in the thumbnail."""
    record = store.put(png((100, 50)))
    assert record.thumb_path is not None
    with Image.open(record.thumb_path) as thumb:
        assert thumb.size == (100, 50)


def test_transparency_is_flattened_on_white(store: ImageStore) -> None:
    """Transparent pixels become white in the JPEG thumbnail; opaque ones keep their colour."""
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    img.paste((200, 0, 0, 255), (16, 16, 48, 48))
    record = store.put(encode(img, "PNG"))
    assert record.thumb_path is not None
    with Image.open(record.thumb_path) as thumb:
        corner = thumb.getpixel((2, 2))
        centre = thumb.getpixel((32, 32))
    assert isinstance(corner, tuple)
    assert isinstance(centre, tuple)
    assert min(corner) > 240
    assert centre[0] > 180
    assert centre[1] < 40


def test_palette_transparency_is_flattened_too(store: ImageStore) -> None:
    """A palette PNG with a transparent index is flattened on white as well."""
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (8, 8, 24, 24))
    record = store.put(encode(img, "PNG", transparency=0))
    assert record.thumb_path is not None
    with Image.open(record.thumb_path) as thumb:
        corner = thumb.getpixel((1, 1))
    assert isinstance(corner, tuple)
    assert min(corner) > 240


def test_make_preview_fits_the_requested_side_and_format() -> None:
    """make_preview returns bytes of the asked type, long side at most `side`."""
    data, media_type = make_preview(png((1024, 1024)))
    assert media_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.size) == ("JPEG", (512, 512))
    data, media_type = make_preview(png((300, 200)), side=1000, fmt="webp")
    assert media_type == "image/webp"
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (300, 200)


def test_make_preview_keeps_alpha_in_png() -> None:
    """A PNG preview of a transparent image stays transparent."""
    data, media_type = make_preview(encode(picture((80, 40), "RGBA"), "PNG"), side=40, fmt="PNG")
    assert media_type == "image/png"
    with Image.open(io.BytesIO(data)) as img:
        assert (img.mode, img.size) == ("RGBA", (40, 20))


def test_make_preview_reads_paths(tmp_path: Path) -> None:
    """A path (str or Path) is read like bytes."""
    path = tmp_path / "a.png"
    path.write_bytes(png((100, 40)))
    for source in (path, str(path)):
        data, _ = make_preview(source, side=50)
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (50, 20)


def test_make_preview_decodes_jpeg_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large JPEG is decoded via Image.draft, at no less than the requested size."""
    decoded: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Any, mode: str | None, size: tuple[int, int] | None) -> Any:
        result = original(self, mode, size)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data, _ = make_preview(encode(picture((2000, 1500)), "JPEG"), side=200)
    assert decoded == [(500, 375)]  # 1/4 scale: the smallest at least twice the side
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (200, 150)


def test_make_preview_honours_exif_orientation() -> None:
    """A photo stored sideways with an EXIF orientation is previewed upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data, _ = make_preview(encode(picture((200, 100)), "JPEG", exif=exif), side=100)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (50, 100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"fmt": "GIF"}, "format"), ({"fmt": "SVG"}, "format"), ({"side": 0}, "side")],
)
def test_make_preview_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    """Only JPEG, PNG and WEBP previews of a positive size exist."""
    with pytest.raises(ValueError, match=match):
        make_preview(png(), **kwargs)


def test_make_preview_refuses_non_images() -> None:
    """SVG or HTML never becomes a preview."""
    with pytest.raises(ValueError, match="not a PNG"):
        make_preview(b"<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>")


# -- refusals --------------------------------------------------------------------------

VALID_PNG = png((120, 90))
VALID_JPEG = encode(picture((120, 90)), "JPEG")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "not a PNG"),
        (b"<!doctype html><html><body>expired</body></html>", "not a PNG"),
        (b"", "not a PNG"),
        (os.urandom(2048), "not a PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "damaged"),
        (VALID_PNG[: len(VALID_PNG) // 2], "truncated"),
        (VALID_JPEG[: len(VALID_JPEG) // 2], "truncated"),
        (b"GIF89a" + b"\0" * 10, "damaged"),
    ],
    ids=["svg", "html", "empty", "random", "png-garbage", "png-cut", "jpeg-cut", "gif-stub"],
)
def test_put_refuses_what_is_not_a_whole_raster_image(
    store: ImageStore, data: bytes, match: str
) -> None:
    """Non-images, scripts and truncated files are refused and nothing is written."""
    with pytest.raises(ValueError, match=match):
        store.put(data)
    assert files_under(store.root) == []


def test_put_refuses_more_bytes_than_the_limit(tmp_path: Path) -> None:
    """Bytes beyond max_bytes are refused before any decoding."""
    store = ImageStore(tmp_path, max_bytes=1000)
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    assert len(data) > 1000
    with pytest.raises(ValueError, match="byte limit"):
        store.put(data)
    assert files_under(tmp_path) == []


def test_put_refuses_a_header_declaring_too_many_pixels(tmp_path: Path) -> None:
    """A small file declaring more pixels than max_pixels is refused before decoding."""
    store = ImageStore(tmp_path, max_pixels=1_000_000)
    bomb = png_header_only(2000, 2000)
    assert len(bomb) < 200
    with pytest.raises(ValueError, match="pixel limit"):
        store.put(bomb)
    assert files_under(tmp_path) == []


def test_put_refuses_a_decompression_bomb_beyond_pillows_own_limit(store: ImageStore) -> None:
    """A header declaring 10^10 pixels is refused, not decoded, and raises no warning."""
    with pytest.raises(ValueError, match="pixels"):
        store.put(png_header_only(100_000, 100_000))
    with pytest.raises(ValueError, match="pixels"):
        make_preview(png_header_only(100_000, 100_000))


# -- durability (D4, D6) ---------------------------------------------------------------


def fail_half_way(file: IO[bytes], data: bytes, sync: bool = True) -> None:
    file.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_the_write_leaves_nothing_behind(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC mid-write raises OSError and leaves neither a partial file nor a temp file."""
    monkeypatch.setattr(_images, "_write_and_sync", fail_half_way)
    with pytest.raises(OSError, match="No space") as caught:
        store.put(png())
    assert caught.value.errno == errno.ENOSPC
    assert files_under(store.root) == []


def test_disk_full_while_writing_the_thumbnail_leaves_only_whole_files(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If only the thumbnail fails, the full file is complete and no temp file remains."""
    calls = {"n": 0}
    real = _images._write_and_sync

    def second_write_fails(file: IO[bytes], data: bytes, sync: bool = True) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            assert not sync, "a thumbnail is made again from its image: no fsync needed"
            fail_half_way(file, data)
        real(file, data, sync)

    monkeypatch.setattr(_images, "_write_and_sync", second_write_fails)
    data = png()
    with pytest.raises(OSError):
        store.put(data)
    (only,) = files_under(store.root)
    assert only.read_bytes() == data
    monkeypatch.setattr(_images, "_write_and_sync", real)
    record = store.put(data)  # a retry completes the thumbnail
    assert record.thumb_path is not None
    assert Path(record.thumb_path).is_file()


def test_failed_rename_leaves_no_temp_file(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error from os.replace is raised and the temporary file is removed."""
    data = png()
    with monkeypatch.context() as patch:

        def refuse(src: str, dst: object) -> None:
            raise OSError(errno.EIO, "I/O error")

        patch.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="I/O error"):
            store.put(data)
    assert files_under(store.root) == []


def test_cleanup_temp_removes_only_old_temp_files(store: ImageStore) -> None:
    """cleanup_temp counts and removes old .tmp- files and never touches stored images."""
    record = store.put(png())
    nested = store.root / "thumbs" / "ab"
    nested.mkdir(parents=True)
    old = time.time() - ORPHAN_AGE - 1
    orphans = [store.root / f"{TEMP_PREFIX}a", nested / f"{TEMP_PREFIX}b"]
    for path in orphans:
        path.write_bytes(b"partial")
        os.utime(path, (old, old))
    fresh = store.root / f"{TEMP_PREFIX}fresh"
    fresh.write_bytes(b"in progress")
    assert store.cleanup_temp() == 2
    assert not any(p.exists() for p in orphans)
    assert fresh.exists()
    assert store.cleanup_temp(min_age=0) == 1
    assert Path(record.path).is_file()
    assert record.thumb_path is not None
    assert Path(record.thumb_path).is_file()


# -- thread safety (H17) ---------------------------------------------------------------


def test_concurrent_decodes_leave_the_process_wide_warning_filters_unchanged(
    tmp_path: Path,
) -> None:
    """Many decodes at once in threads (as the executor runs them) change no warnings filter."""
    import threading
    import warnings

    before = list(warnings.filters)
    store = ImageStore(tmp_path)
    inputs = [png((32 + i, 24)) for i in range(6)] + [png_header_only(100_000, 100_000)] * 6
    start = threading.Barrier(12)

    def work(data: bytes) -> None:
        start.wait(5)
        for _ in range(30):
            try:
                make_preview(data, side=16)
                store.put(data)
            except ValueError:
                pass  # the bomb headers are refused; that is not what this test checks

    threads = [threading.Thread(target=work, args=(data,)) for data in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert warnings.filters == before


def test_a_header_between_pillows_warning_and_error_limits_is_refused_without_a_warning(
    store: ImageStore,
) -> None:
    """10^8 pixels (over Pillow's warning threshold) is refused by our check; Pillow never warns."""
    import warnings

    assert Image.MAX_IMAGE_PIXELS is not None
    assert Image.MAX_IMAGE_PIXELS < 100_000_000 < 2 * Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="pixel limit"):
            store.put(png_header_only(10_000, 10_000))
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []


# -- streaming into the store (H13) ------------------------------------------------------


def test_an_incoming_image_is_stored_like_put_without_holding_its_bytes(
    store: ImageStore,
) -> None:
    """Chunks written to incoming() are hashed as they come; put_incoming files them whole."""
    data = png((300, 200))
    with store.incoming() as incoming:
        for start in range(0, len(data), 1000):
            incoming.write(data[start : start + 1000])
        record = store.put_incoming(incoming, url="https://cdn.example/a.png")
    assert record.sha256 == hashlib.sha256(data).hexdigest() and record.size == len(data)
    assert Path(record.path).read_bytes() == data and record.url == "https://cdn.example/a.png"
    assert record == store.put(data, url="https://cdn.example/a.png")
    assert [p for p in files_under(store.root) if p.name.startswith(TEMP_PREFIX)] == []


def test_a_restarted_incoming_image_forgets_the_bytes_before(store: ImageStore) -> None:
    """seek(0) + truncate() (a retried download) starts the hash and the size again."""
    data = png()
    with store.incoming() as incoming:
        incoming.write(b"half of a broken first attempt")
        incoming.seek(0)
        incoming.truncate()
        incoming.write(data)
        record = store.put_incoming(incoming)
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(record.path).read_bytes() == data


def test_an_incoming_image_over_the_byte_limit_is_refused_while_writing(tmp_path: Path) -> None:
    """The size cap applies chunk by chunk; the temporary file is removed."""
    store = ImageStore(tmp_path, max_bytes=5000)
    with store.incoming() as incoming:
        for _ in range(5):
            incoming.write(b"\0" * 1000)
        with pytest.raises(ValueError, match="byte limit"):
            incoming.write(b"\0")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "data", [b"<svg onload=alert(1)>", png((300, 200))[:400], png_header_only(9000, 9000)]
)
def test_put_incoming_refuses_what_put_refuses_and_leaves_nothing(
    store: ImageStore, data: bytes
) -> None:
    """Not an image, truncated, or a bomb header: refused, and no file stays behind."""
    with store.incoming() as incoming:
        incoming.write(data)
        with pytest.raises(ValueError):
            store.put_incoming(incoming)
    assert files_under(store.root) == []
