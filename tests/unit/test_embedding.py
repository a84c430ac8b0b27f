"""Metadata written into PNG, JPEG and WebP bytes without re-encoding (``_store.embedding``).

Every case checks the pixels are the same as the original's (decoded by Pillow), that Pillow
still opens and verifies the file and finds the text where other tools look for it (PNG text
chunks, the XMP packet), and that an independent structure walk written here (chunk CRCs,
JPEG segment lengths, RIFF sizes) finds a well-formed file.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image, PngImagePlugin

from nanobanana_jupyter._store.embedding import UnsupportedFormat, embed, extract

HOSTILE = [
    "a cat <b>bold</b> & </nanobanana:Recipe> ]]> --> <!-- <?xpacket end='w'?>",
    "nul \x00 and bell \x07 and unit \x1f",
    "non-ASCII: café, 猫, emoji 🍌, rtl שלום, combining é",
    "lone surrogate \ud800 and \ufffe \uffff",
    "quotes \" ' and backslash \\ and </rdf:Description></rdf:RDF>",
]


def _image(mode: str = "RGB", size: tuple[int, int] = (23, 17)) -> Image.Image:
    img = Image.new(mode, size)
    pixels = [
        tuple((x * 11 + y * 7 + c * 50) % 256 for c in range(len(mode)))
        if len(mode) > 1
        else (x * 13 + y) % 256
        for y in range(size[1])
        for x in range(size[0])
    ]
    img.putdata(pixels)  # type: ignore[arg-type]
    return img


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def _pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.mode, img.size, img.tobytes()


def _pillow_checks(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# -- an independent structure walk ---------------------------------------------------------


def _walk_png(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big")
        assert zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and pos == len(data)
    return kinds


def _walk_jpeg(data: bytes) -> list[bytes]:
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    pos, heads = 2, []
    while data[pos + 1] != 0xDA:
        assert data[pos] == 0xFF
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        assert length >= 2 and pos + 2 + length < len(data)
        heads.append(data[pos + 1 : pos + 2] + data[pos + 4 : pos + 4 + 34])
        pos += 2 + length
    return heads


def _walk_webp(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    pos, kinds = 12, []
    while pos < len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        kinds.append(data[pos : pos + 4])
        pos += 8 + size + (size & 1)
    assert pos == len(data)
    return kinds


def _recipe(prompt: str) -> str:
    return json.dumps({"prompt": prompt, "model": "m"}, ensure_ascii=False)


# -- PNG -----------------------------------------------------------------------------------

PNGS: dict[str, Callable[[], bytes]] = {
    "rgb": lambda: _encode(_image("RGB"), "PNG"),
    "rgba": lambda: _encode(_image("RGBA"), "PNG"),
    "palette": lambda: _encode(_image("RGB").convert("P"), "PNG"),
    "grey": lambda: _encode(_image("L"), "PNG"),
}


@pytest.mark.parametrize("make", PNGS.values(), ids=PNGS.keys())
@pytest.mark.parametrize("prompt", HOSTILE)
def test_png_gets_an_itxt_chunk_and_keeps_its_pixels(
    make: Callable[[], bytes], prompt: str
) -> None:
    original = make()
    text = _recipe(prompt)
    copy = embed(original, text)
    assert _pixels(copy) == _pixels(original)
    kinds = _walk_png(copy)
    assert kinds[1] == b"iTXt" and kinds.count(b"iTXt") == 1
    assert json.loads(extract(copy) or "") == json.loads(text.replace("\ud800", "\\ud800"))
    img = _pillow_checks(copy)
    assert json.loads(img.text["nanobanana"])["model"] == "m"  # type: ignore[attr-defined]


def test_png_rewrite_replaces_the_text_and_keeps_other_chunks() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Comment", "someone else's 猫", zip=True)
    info.add_text("nanobanana", '{"old": "tEXt from an older tool"}')
    original = _encode(_image(), "PNG", pnginfo=info)
    once = embed(original, _recipe("first"))
    twice = embed(once, _recipe("second"))
    assert json.loads(extract(twice) or "")["prompt"] == "second"
    assert _walk_png(twice).count(b"iTXt") == 2  # ours once, and the other Comment
    assert _pixels(twice) == _pixels(original)
    assert _pillow_checks(twice).text["Comment"] == "someone else's 猫"  # type: ignore[attr-defined]


def test_png_huge_metadata_fits() -> None:
    original = PNGS["rgb"]()
    prompt = "🍌" * 200_000
    copy = embed(original, _recipe(prompt))
    assert json.loads(extract(copy) or "")["prompt"] == prompt
    assert _pixels(copy) == _pixels(original)
    _walk_png(copy)


def test_png_without_metadata_reads_none() -> None:
    assert extract(PNGS["rgb"]()) is None


# -- JPEG ----------------------------------------------------------------------------------


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "an Exif description"
    return exif.tobytes()


FOREIGN_XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    b'Iptc4xmpExt:DigitalSourceType="trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>'
    b'<?xpacket end="w"?>'
)

JPEGS: dict[str, Callable[[], bytes]] = {
    "jfif": lambda: _encode(_image(), "JPEG", quality=85),
    "exif": lambda: _encode(_image(), "JPEG", exif=_exif()),
    "progressive": lambda: _encode(_image("RGB", (64, 48)), "JPEG", progressive=True),
    "grey": lambda: _encode(_image("L"), "JPEG"),
    "foreign-xmp": lambda: _encode(_image(), "JPEG", xmp=FOREIGN_XMP),
}


@pytest.mark.parametrize("make", JPEGS.values(), ids=JPEGS.keys())
@pytest.mark.parametrize("prompt", HOSTILE)
def test_jpeg_gets_an_xmp_segment_and_keeps_its_pixels(
    make: Callable[[], bytes], prompt: str
) -> None:
    original = make()
    text = _recipe(prompt)
    copy = embed(original, text)
    assert _pixels(copy) == _pixels(original)
    heads = _walk_jpeg(copy)
    assert sum(h.startswith(b"\xe1http://ns.adobe.com/xap/1.0/\0") for h in heads) == 1
    assert (
        json.loads(extract(copy) or "")["prompt"]
        == json.loads(text.replace("\ud800", "\\ud800"))["prompt"]
    )
    img = _pillow_checks(copy)
    xmp = img.info["xmp"]
    assert b"nanobanana:Recipe" in xmp
    if b"Exif" in original[:64]:
        assert img.getexif()[0x010E] == "an Exif description"


def test_jpeg_keeps_a_foreign_xmp_packet_and_replaces_only_its_own_text() -> None:
    original = JPEGS["foreign-xmp"]()
    twice = embed(embed(original, _recipe("first")), _recipe("second"))
    xmp = _pillow_checks(twice).info["xmp"]
    assert b"trainedAlgorithmicMedia" in xmp and xmp.count(b"nanobanana:Recipe>") == 2
    assert json.loads(extract(twice) or "")["prompt"] == "second"
    assert _pixels(twice) == _pixels(original)


@pytest.mark.parametrize("make", [JPEGS["jfif"], JPEGS["foreign-xmp"]], ids=["plain", "foreign"])
def test_jpeg_huge_metadata_goes_into_extended_xmp(make: Callable[[], bytes]) -> None:
    original = make()
    prompt = "猫🍌<&>" * 30_000  # far past one segment's 64 KiB
    once = embed(original, _recipe("short"))
    copy = embed(once, _recipe(prompt))
    heads = _walk_jpeg(copy)
    extended = [h for h in heads if h.startswith(b"\xe1http://ns.adobe.com/xmp/extension/")]
    assert len(extended) > 2
    assert json.loads(extract(copy) or "")["prompt"] == prompt
    assert _pixels(copy) == _pixels(original)
    _pillow_checks(copy)
    # Short again: the extended segments go, nothing is left twice.
    back = embed(copy, _recipe("short again"))
    assert not [h for h in _walk_jpeg(back) if h.startswith(b"\xe1http://ns.adobe.com/xmp/ext")]
    assert json.loads(extract(back) or "")["prompt"] == "short again"
    assert len(back) < len(original) + 2000


# -- WebP ----------------------------------------------------------------------------------

WEBPS: dict[str, Callable[[], bytes]] = {
    "lossy": lambda: _encode(_image(), "WEBP", quality=80),
    "lossless": lambda: _encode(_image(), "WEBP", lossless=True),
    "lossless-alpha": lambda: _encode(_image("RGBA"), "WEBP", lossless=True),
    "lossy-alpha": lambda: _encode(_image("RGBA"), "WEBP", quality=80),
    "extended-exif": lambda: _encode(_image(), "WEBP", exif=_exif()),
    "foreign-xmp": lambda: _encode(_image(), "WEBP", xmp=FOREIGN_XMP),
    "odd-size": lambda: _encode(_image("RGB", (1, 3)), "WEBP", lossless=True),
}


@pytest.mark.parametrize("make", WEBPS.values(), ids=WEBPS.keys())
@pytest.mark.parametrize("prompt", HOSTILE[:3])
def test_webp_gets_an_xmp_chunk_and_keeps_its_pixels(
    make: Callable[[], bytes], prompt: str
) -> None:
    original = make()
    copy = embed(original, _recipe(prompt))
    assert _pixels(copy) == _pixels(original)
    kinds = _walk_webp(copy)
    assert kinds[0] == b"VP8X" and kinds.count(b"XMP ") == 1 and kinds[-1] == b"XMP "
    assert copy[20] & 0x04  # the VP8X header's XMP flag
    width, height = (int.from_bytes(copy[24 + 3 * i : 27 + 3 * i], "little") + 1 for i in (0, 1))
    assert (width, height) == _pixels(original)[1]
    assert json.loads(extract(copy) or "")["prompt"] == prompt
    img = _pillow_checks(copy)
    assert b"nanobanana:Recipe" in img.info["xmp"]
    twice = embed(copy, _recipe("again"))
    assert _walk_webp(twice).count(b"XMP ") == 1
    assert json.loads(extract(twice) or "")["prompt"] == "again"
    if make is WEBPS["foreign-xmp"]:
        assert b"trainedAlgorithmicMedia" in _pillow_checks(twice).info["xmp"]


# -- hostile files -------------------------------------------------------------------------

CONTAINERS = {f"png-{k}": v for k, v in PNGS.items()}
CONTAINERS.update({f"webp-{k}": v for k, v in WEBPS.items()})


@pytest.mark.parametrize("make", CONTAINERS.values(), ids=CONTAINERS.keys())
@pytest.mark.parametrize("keep", [1 / 3, 0.9, 0.99])
def test_a_truncated_png_or_webp_is_refused_not_patched(
    make: Callable[[], bytes], keep: float
) -> None:
    data = make()
    with pytest.raises(ValueError, match=r"truncated|damaged"):
        embed(data[: int(len(data) * keep)], _recipe("x"))


@pytest.mark.parametrize("make", JPEGS.values(), ids=JPEGS.keys())
def test_a_jpeg_cut_in_its_headers_is_refused_and_one_cut_later_keeps_its_tail(
    make: Callable[[], bytes],
) -> None:
    data = make()
    with pytest.raises(ValueError, match=r"truncated|damaged"):
        embed(data[:40], _recipe("x"))
    short = data[:-50]  # cut inside the compressed data: the headers parse
    copy = embed(short, _recipe("x"))
    assert copy.endswith(short[-len(short) // 2 :]) and extract(copy) == _recipe("x")


def test_a_damaged_png_chunk_is_refused() -> None:
    data = bytearray(PNGS["rgb"]())
    data[20] ^= 0xFF  # inside IHDR
    with pytest.raises(ValueError, match="checksum"):
        embed(bytes(data), "{}")


def test_gif_and_unknown_bytes_are_unsupported() -> None:
    gif = _encode(_image("RGB").convert("P"), "GIF")
    for data in (gif, b"not an image at all", b""):
        with pytest.raises(UnsupportedFormat):
            embed(data, "{}")
        with pytest.raises(UnsupportedFormat):
            extract(data)


def test_a_riff_size_past_the_end_is_refused() -> None:
    data = bytearray(WEBPS["lossy"]())
    data[4:8] = struct.pack("<I", len(data) * 2)
    with pytest.raises(ValueError, match="truncated"):
        embed(bytes(data), "{}")
