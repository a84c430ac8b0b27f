"""Reference images are decoded within a pixel budget; refusals are ValidationErrors (H16)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from nanobanana_jupyter import ValidationError
from nanobanana_jupyter._core.references import to_reference


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(20_000, 15_000), (10_000, 10_500)])
def test_a_huge_reference_file_is_a_validation_error_saying_to_downscale(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    """300 MP (past Pillow's bomb error) and 105 MP (past its warning) give a ValidationError."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(*size))
    with pytest.raises(ValidationError, match=r"downscale") as info:
        to_reference(path)
    assert f"{size[0]}x{size[1]}" in str(info.value) and "huge.png" in str(info.value)
    with pytest.raises(ValidationError, match=r"downscale"):
        to_reference(path.read_bytes())


def test_a_large_but_allowed_reference_is_downscaled() -> None:
    """A 4000x3000 JPEG becomes a data URI of at most MAX_REFERENCE_SIDE on its long side."""
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((4000, 3000)).convert("RGB").save(buf, format="JPEG")
    uri = to_reference(buf.getvalue())
    assert uri.startswith("data:image/jpeg;base64,")
