"""Metadata put into an image file's bytes, and read back, without re-encoding it.

A copy of a stored image that leaves the store carries its recipe (see :mod:`.provenance`)
as text inside the file. The pixels must stay exactly as the service returned them, so
nothing here decodes or re-encodes an image: the text goes into the container around the
compressed data, which is copied unchanged.

- PNG: an ``iTXt`` chunk (UTF-8, uncompressed) keyword ``nanobanana``, right after ``IHDR``
  (so readers see it before the image data). Pillow shows it in ``img.text``.
- JPEG: the XMP segment (APP1, ``http://ns.adobe.com/xap/1.0/``), holding an
  ``rdf:Description`` of our namespace whose ``nanobanana:Recipe`` element is the text,
  XML-escaped. A packet already there (the service's, another tool's) is kept, and ours is
  added to it. When the packet would pass a segment's 64 KiB, our description goes into
  Extended XMP segments (``http://ns.adobe.com/xmp/extension/``, keyed by the MD5 of the
  extended packet), as the XMP specification part 3 lays out.
- WebP: the ``XMP `` chunk of the extended format, with the ``VP8X`` header's XMP flag set;
  a simple (``VP8 ``/``VP8L``) file is turned into the extended format by adding a ``VP8X``
  header with its canvas size read from the bitstream.

Writing again replaces our earlier text; it never adds a second copy. Anything damaged or
truncated is refused with a ``ValueError`` rather than patched: a copy is never worse than
its source. GIF and unknown formats raise :class:`UnsupportedFormat` (the caller writes a
sidecar file instead).
"""

from __future__ import annotations

import hashlib
import html
import re
import struct
import zlib

from nanobanana_jupyter._wire.models import sniff_image_type

__all__ = ["KEYWORD", "NAMESPACE", "UnsupportedFormat", "embed", "extract"]

KEYWORD = "nanobanana"
"""The PNG text keyword, and the XMP namespace prefix."""
NAMESPACE = "https://nanobanana-jupyter.invalid/ns/1.0/"
"""Our XMP namespace (an identifier, never fetched)."""


class UnsupportedFormat(ValueError):
    """The bytes are an image type that has no metadata slot we write (GIF, or unknown)."""


def embed(data: bytes, text: str) -> bytes:
    """``data`` with ``text`` (JSON) as its nanobanana metadata, replacing any earlier one.

    Characters no UTF-8 or XML file can hold (lone surrogates, U+FFFE, U+FFFF, controls) are
    written as JSON ``\\uXXXX`` escapes, so the JSON reads back the same.

    Raises:
        UnsupportedFormat: not a PNG, JPEG or WebP file.
        ValueError: the file is damaged or truncated (its structure does not parse).
    """
    kind = sniff_image_type(data)
    text = _JSON_UNSAFE.sub(_json_escape, text)
    if kind == "image/png":
        return _png_embed(data, text)
    if kind == "image/jpeg":
        return _jpeg_embed(data, text)
    if kind == "image/webp":
        return _webp_embed(data, text)
    raise UnsupportedFormat(f"{kind or 'this file type'} has no metadata slot written here")


def extract(data: bytes) -> str | None:
    """The nanobanana metadata text in ``data``, or ``None`` when it carries none.

    Raises:
        UnsupportedFormat: not a PNG, JPEG or WebP file.
        ValueError: the file's structure is damaged before any metadata was found.
    """
    kind = sniff_image_type(data)
    if kind == "image/png":
        return _png_extract(data)
    if kind == "image/jpeg":
        return _jpeg_extract(data)
    if kind == "image/webp":
        return _webp_extract(data)
    raise UnsupportedFormat(f"{kind or 'this file type'} has no metadata slot read here")


def _json_escape(match: re.Match[str]) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in match.group(0))


_JSON_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]+")


def _xml_safe(text: str) -> str:
    """``text`` escaped for XML element content (``<``, ``>``, ``&``)."""
    return html.escape(text, quote=False)


# -- PNG ---------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(type, data, whole chunk bytes) of every chunk up to and including IEND."""
    chunks: list[tuple[bytes, bytes, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ValueError("the PNG file is truncated (it ends before its IEND chunk)")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise ValueError("the PNG file is truncated or damaged (a chunk runs past its end)")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"the PNG file is damaged (chunk {kind!r} fails its checksum)")
        chunks.append((kind, body, data[pos:end]))
        pos = end
        if kind == b"IEND":
            return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_text_of(kind: bytes, body: bytes) -> str | None:
    """Our text, if this is our text chunk (iTXt, or a tEXt/zTXt another tool made of it)."""
    keyword, sep, rest = body.partition(b"\0")
    if not sep or keyword != KEYWORD.encode():
        return None
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return zlib.decompress(rest[1:]).decode("latin-1")
    if kind == b"iTXt" and len(rest) >= 2:
        compressed, rest = rest[0], rest[2:]
        _language, _, rest = rest.partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        raw = zlib.decompress(text) if compressed else text
        return raw.decode("utf-8", errors="replace")
    return None


def _png_embed(data: bytes, text: str) -> bytes:
    chunks = _png_chunks(data)
    if chunks[0][0] != b"IHDR":
        raise ValueError("the PNG file is damaged (it does not start with IHDR)")
    body = KEYWORD.encode() + b"\0\0\0\0\0" + text.encode("utf-8")
    ours = _png_chunk(b"iTXt", body)
    kept = [
        whole
        for kind, chunk_body, whole in chunks[1:]
        if not (kind in (b"iTXt", b"tEXt", b"zTXt") and chunk_body.startswith(b"nanobanana\0"))
    ]
    return _PNG_SIGNATURE + chunks[0][2] + ours + b"".join(kept)


def _png_extract(data: bytes) -> str | None:
    for kind, body, _whole in _png_chunks(data):
        if kind in (b"iTXt", b"tEXt", b"zTXt"):
            found = _png_text_of(kind, body)
            if found is not None:
                return found
    return None


# -- XMP packets -------------------------------------------------------------------------

_OUR_DESCRIPTION = re.compile(
    r'<rdf:Description rdf:about="" xmlns:nanobanana="'
    + re.escape(NAMESPACE)
    + r'"[^>]*?(?:/>|>.*?</rdf:Description>)\s*',
    re.DOTALL,
)
_RDF_END = re.compile(r"</(?:[A-Za-z_][\w.-]*:)?RDF\s*>")
_EXTENDED_GUID = re.compile(r'HasExtendedXMP\s*=\s*["\']([0-9A-Fa-f]{32})["\']')


def _description(text: str) -> str:
    return (
        f'<rdf:Description rdf:about="" xmlns:nanobanana="{NAMESPACE}">'
        f"<nanobanana:Recipe>{_xml_safe(text)}</nanobanana:Recipe></rdf:Description>\n"
    )


def _pointer(guid: str) -> str:
    return (
        f'<rdf:Description rdf:about="" xmlns:nanobanana="{NAMESPACE}" '
        f'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="{guid}"/>\n'
    )


def _packet(descriptions: str) -> str:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f"{descriptions}</rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


def _merge(packet: str | None, descriptions: str) -> str:
    """``packet`` (another tool's XMP, or ours from before) without our old description and
    with ``descriptions`` added; a fresh packet when there is none, or it cannot be read."""
    if packet is None:
        return _packet(descriptions)
    cleaned = _OUR_DESCRIPTION.sub("", packet)
    ends = list(_RDF_END.finditer(cleaned))
    if not ends:
        return _packet(descriptions)
    at = ends[-1].start()
    return cleaned[:at] + descriptions + cleaned[at:]


def _our_pointer(packet: str) -> str | None:
    """The GUID of the extended packet our description in ``packet`` points to."""
    for match in _OUR_DESCRIPTION.finditer(packet):
        guid = _EXTENDED_GUID.search(match.group(0))
        if guid:
            return guid.group(1).upper()
    return None


def _recipe_in(packet: str) -> str | None:
    """Our text in an XMP packet, whatever prefix a tool that rewrote it gave our namespace."""
    for prefix in re.findall(
        r'xmlns:([A-Za-z_][\w.-]*)\s*=\s*["\']' + re.escape(NAMESPACE), packet
    ):
        name = re.escape(prefix) + r":Recipe"
        element = re.search(rf"<{name}>(.*?)</{name}>", packet, re.DOTALL)
        if element:
            return html.unescape(element.group(1))
        attribute = re.search(rf'{name}\s*=\s*"([^"]*)"', packet)
        if attribute:
            return html.unescape(attribute.group(1))
    return None


def _decode_packet(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


# -- JPEG --------------------------------------------------------------------------------

_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
_EXT_HEADER = b"http://ns.adobe.com/xmp/extension/\0"
_MAX_SEGMENT = 65533  # the bytes after a segment's two length bytes, at most
_MAX_EXT_CHUNK = _MAX_SEGMENT - len(_EXT_HEADER) - 32 - 8


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes, bytes]], int]:
    """(marker, payload, whole segment) of every segment before the scan, and where the
    scan starts (its SOS marker), which is copied as it is."""
    segments: list[tuple[int, bytes, bytes]] = []
    pos = 2
    while True:
        while (
            pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF
        ):
            pos += 1  # fill bytes
        if pos + 2 > len(data) or data[pos] != 0xFF:
            raise ValueError("the JPEG file is truncated or damaged (no image data was found)")
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the compressed image follows
            return segments, pos
        if marker == 0xD9:
            raise ValueError("the JPEG file is damaged (it ends before any image data)")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            segments.append((marker, b"", data[pos : pos + 2]))
            pos += 2
            continue
        if pos + 4 > len(data):
            raise ValueError("the JPEG file is truncated (a segment header is cut)")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise ValueError("the JPEG file is truncated or damaged (a segment runs past its end)")
        segments.append((marker, data[pos + 4 : end], data[pos:end]))
        pos = end


def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_embed(data: bytes, text: str) -> bytes:
    segments, scan = _jpeg_segments(data)
    xmp_at: int | None = None
    packet: str | None = None
    for i, (marker, payload, _whole) in enumerate(segments):
        if marker == 0xE1 and payload.startswith(_XMP_HEADER) and xmp_at is None:
            xmp_at, packet = i, _decode_packet(payload[len(_XMP_HEADER) :])
    old_guid = _our_pointer(packet) if packet is not None else None

    def ours_extended(payload: bytes) -> bool:
        guid = payload[len(_EXT_HEADER) : len(_EXT_HEADER) + 32].decode("ascii", "replace")
        return payload.startswith(_EXT_HEADER) and guid.upper() == old_guid

    merged = _merge(packet, _description(text))
    extended: list[bytes] = []
    if len(_XMP_HEADER) + len(merged.encode("utf-8")) > _MAX_SEGMENT:
        if packet is not None and _EXTENDED_GUID.search(_OUR_DESCRIPTION.sub("", packet)):
            raise ValueError(
                "the JPEG file already has Extended XMP of another tool, and the recipe is "
                "too long to fit beside it"
            )
        ext_packet = _packet(_description(text)).encode("utf-8")
        guid = hashlib.md5(ext_packet, usedforsecurity=False).hexdigest().upper()
        merged = _merge(packet, _pointer(guid))
        if len(_XMP_HEADER) + len(merged.encode("utf-8")) > _MAX_SEGMENT:
            raise ValueError("the JPEG file's XMP packet is full (64 KiB); nothing was added")
        for offset in range(0, len(ext_packet), _MAX_EXT_CHUNK):
            extended.append(
                _app1(
                    _EXT_HEADER
                    + guid.encode("ascii")
                    + struct.pack(">II", len(ext_packet), offset)
                    + ext_packet[offset : offset + _MAX_EXT_CHUNK]
                )
            )
    ours = [_app1(_XMP_HEADER + merged.encode("utf-8")), *extended]
    kept: list[bytes] = []
    placed = False
    for i, (marker, payload, whole) in enumerate(segments):
        if i == xmp_at:
            kept.extend(ours)
            placed = True
            continue
        if marker == 0xE1 and ours_extended(payload):
            continue
        if not placed and xmp_at is None and not _leading(marker, payload):
            kept.extend(ours)
            placed = True
        kept.append(whole)
    if not placed:
        kept.extend(ours)
    return data[:2] + b"".join(kept) + data[scan:]


def _leading(marker: int, payload: bytes) -> bool:
    """Segments that stay before the XMP one: JFIF/JFXX (APP0) and Exif (APP1)."""
    return marker == 0xE0 or (marker == 0xE1 and payload.startswith(b"Exif\0"))


def _jpeg_extract(data: bytes) -> str | None:
    segments, _scan = _jpeg_segments(data)
    packets = [
        _decode_packet(payload[len(_XMP_HEADER) :])
        for marker, payload, _ in segments
        if marker == 0xE1 and payload.startswith(_XMP_HEADER)
    ]
    for packet in packets:
        found = _recipe_in(packet)
        if found is not None:
            return found
        guid_match = _EXTENDED_GUID.search(packet)
        if guid_match is None:
            continue
        guid = guid_match.group(1).upper().encode("ascii")
        parts: dict[int, bytes] = {}
        for marker, payload, _ in segments:
            head = len(_EXT_HEADER)
            if (
                marker == 0xE1
                and payload.startswith(_EXT_HEADER)
                and payload[head : head + 32].upper() == guid
            ):
                (offset,) = struct.unpack(">I", payload[head + 36 : head + 40])
                parts[offset] = payload[head + 40 :]
        whole = b"".join(parts[k] for k in sorted(parts))
        found = _recipe_in(_decode_packet(whole))
        if found is not None:
            return found
    return None


# -- WebP --------------------------------------------------------------------------------

_VP8X_XMP = 0x04
_VP8X_ALPHA = 0x10


def _webp_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(fourcc, payload) of every chunk in the RIFF container, and any bytes after it."""
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = 8 + riff_size
    if end > len(data) or riff_size < 4:
        raise ValueError("the WebP file is truncated (it is shorter than its RIFF header says)")
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise ValueError("the WebP file is damaged (a chunk header is cut)")
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if pos + 8 + size > end:
            raise ValueError("the WebP file is truncated or damaged (a chunk runs past its end)")
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    if not chunks:
        raise ValueError("the WebP file holds no image")
    return chunks, data[end:]


def _webp_chunk(fourcc: bytes, payload: bytes) -> bytes:
    pad = b"\0" if len(payload) & 1 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + pad


def _webp_canvas(fourcc: bytes, payload: bytes) -> tuple[int, int, bool]:
    """(width, height, alpha) of a simple WebP's bitstream."""
    if fourcc == b"VP8L":
        if len(payload) < 5 or payload[0] != 0x2F:
            raise ValueError("the WebP file is damaged (a lossless header is wrong)")
        (bits,) = struct.unpack("<I", payload[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    if fourcc == b"VP8 ":
        if len(payload) < 10 or payload[3:6] != b"\x9d\x01\x2a":
            raise ValueError("the WebP file is damaged (a lossy frame header is wrong)")
        width, height = struct.unpack("<HH", payload[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    raise ValueError(f"the WebP file starts with an unknown chunk {fourcc!r}")


def _vp8x(flags: int, width: int, height: int) -> bytes:
    w, h = width - 1, height - 1
    return bytes([flags, 0, 0, 0]) + w.to_bytes(3, "little") + h.to_bytes(3, "little")


def _webp_embed(data: bytes, text: str) -> bytes:
    chunks, trailing = _webp_chunks(data)
    first, payload = chunks[0]
    if first == b"VP8X":
        if len(payload) < 10:
            raise ValueError("the WebP file is damaged (its VP8X header is short)")
        header = bytes([payload[0] | _VP8X_XMP]) + payload[1:]
        rest = chunks[1:]
    else:
        width, height, alpha = _webp_canvas(first, payload)
        header = _vp8x(_VP8X_XMP | (_VP8X_ALPHA if alpha else 0), width, height)
        rest = chunks
    packet = next((_decode_packet(p) for c, p in rest if c == b"XMP "), None)
    xmp = _merge(packet, _description(text)).encode("utf-8")
    body = [_webp_chunk(b"VP8X", header)]
    body += [_webp_chunk(c, p) for c, p in rest if c != b"XMP "]
    body.append(_webp_chunk(b"XMP ", xmp))
    inner = b"WEBP" + b"".join(body)
    return b"RIFF" + struct.pack("<I", len(inner)) + inner + trailing


def _webp_extract(data: bytes) -> str | None:
    chunks, _trailing = _webp_chunks(data)
    for fourcc, payload in chunks:
        if fourcc == b"XMP ":
            found = _recipe_in(_decode_packet(payload))
            if found is not None:
                return found
    return None
