"""An export's ``index.html``: a contact sheet of the exported tasks, one tile each.

The page stands alone, opened from the file with no network: styles inline, no script, no
font or image from elsewhere (a Content-Security-Policy forbids scripts, frames, plugins and
requests outright). Images are relative links to the export's own files. Every string from
a user or the server (prompt, model, reason, tags, note, ids, references) is escaped.

A tile shows the image(s) (or that a task failed, gave words, or has lost its file), the
prompt, model, options, status, cost (pretend credits for a sandbox), rating, tags, note,
created time, and the lineage: parents and children in the export link to their tiles
(``#t-<local id>``); the others are named by short id. A task made from one in the export
shows its prompt compared word by word with its parent's.
"""

from __future__ import annotations

import datetime as dt

from nanobanana_jupyter._store.annotations import Annotation
from nanobanana_jupyter._store.provenance import shareable_reference
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.sharing import CSV_NAME, ContactSheet, SheetTile, anchor_of
from nanobanana_jupyter._version import __version__

from .annotations import stars
from .html import badge, escape, html_text
from .lineage import prompt_diff_html
from .words import (
    PROMPT_CARD_CHARS,
    REASON_CHARS,
    format_cost,
    format_time,
    plural,
    reuse_words,
    short_id,
    shows_reason,
)

__all__ = ["contact_sheet_html"]

_POLICY = (
    "script-src 'none'; object-src 'none'; frame-src 'none'; connect-src 'none'; "
    "base-uri 'none'; form-action 'none'"
)
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:16px 24px;
color:#1f2328;background:#f6f8fa}
header{margin-bottom:16px}
h1{font-size:1.4em;margin:0 0 4px}
.muted{color:#59636e;font-size:0.9em}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
.tile{background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:10px;
overflow-wrap:anywhere}
.tile:target{outline:3px solid #0969da}
.images{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:8px}
.images img{max-width:100%;max-height:320px;height:auto;border-radius:4px;display:block}
.images a{flex:1 1 120px}
.noimage{padding:24px 8px;text-align:center;background:#eff2f5;border-radius:4px;
color:#59636e;margin-bottom:8px}
.prompt{white-space:pre-wrap;margin:6px 0}
.row{font-size:0.88em;margin:3px 0}
.rating{color:#8a5d00;letter-spacing:1px}
.tag{display:inline-block;padding:0 6px;margin:0 4px 2px 0;border-radius:8px;
background:#e6eaef;font-size:0.85em}
.note{font-style:italic;white-space:pre-wrap}
.reason{border-left:3px solid #cf222e;padding:2px 8px;background:#fff5f5}
.texts{white-space:pre-wrap;background:#eff2f5;padding:6px;border-radius:4px}
ins{background:rgba(46,160,67,0.22);text-decoration:none}
del{background:rgba(248,81,73,0.18)}
code{font-size:0.9em}
"""


def contact_sheet_html(sheet: ContactSheet) -> str:
    """The whole page for ``sheet``: a header with the count and total cost, then the tiles."""
    count = plural(len(sheet), "task")
    images = sum(len([f for f in tile.files if f]) for tile in sheet.tiles)
    cost = format_cost(sheet.total_cost, pretend=sheet.pretend)
    reuses = sum(tile.record.reuses for tile in sheet.tiles)
    again = reuse_words(reuses, None, pretend=sheet.pretend)
    exported = format_time(sheet.exported_at)
    inside = sheet.local_ids
    tiles = "\n".join(_tile(tile, inside, pretend=sheet.pretend) for tile in sheet.tiles)
    summary = f"{count}, {plural(images, 'image')}, {escape(cost)}"
    if again:
        summary += f"; {escape(again)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="nanobanana-jupyter {escape(__version__)}">\n'
        f"<title>Nano Banana export: {count}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>Nano Banana export: {count}</h1>\n<div class="summary">{summary}</div>\n'
        f'<div class="muted">exported {escape(exported)} with nanobanana-jupyter '
        f'{escape(__version__)}; every task also as a row of <a href="{CSV_NAME}">'
        f"{CSV_NAME}</a>; each image carries its recipe (read_provenance)</div></header>\n"
        f'<main class="sheet">\n{tiles}\n</main>\n</body>\n</html>\n'
    )


def _tile(tile: SheetTile, inside: frozenset[str], *, pretend: bool) -> str:
    record = tile.record
    label, ident = short_id(record)
    parts = [
        _images(tile),
        f'<div class="row">{badge(record.status)} <span class="muted">{escape(label)} '
        f"<code>{escape(ident)}</code></span></div>",
        f'<p class="prompt"><bdi>{escape(record.prompt)}</bdi></p>',
        _row("model", f"<code>{escape(record.model)}</code>"),
    ]
    options = _options(record)
    if options:
        parts.append(_row("options", options))
    cost = format_cost(record.consumed, pretend=pretend)
    if record.reuses:
        cost += f"; reused {plural(record.reuses, 'time')} without a new charge"
    parts.append(_row("cost", escape(cost)))
    parts.append(_row("created", _time(record.created_at)))
    parts.append(_annotation(tile.annotation))
    if shows_reason(record):
        reason = html_text(record.error, REASON_CHARS)
        parts.append(f'<div class="row reason">reason: <bdi>{reason}</bdi></div>')
    if record.texts:
        words = escape("\n\n".join(record.texts))
        parts.append(f'<div class="row texts"><bdi>{words}</bdi></div>')
    parts.append(_lineage(tile, inside))
    body = "\n".join(part for part in parts if part)
    return f'<article class="tile" id="{escape(tile.anchor)}">\n{body}\n</article>'


def _row(name: str, html_value: str) -> str:
    return f'<div class="row"><span class="muted">{name}:</span> {html_value}</div>'


def _images(tile: SheetTile) -> str:
    record = tile.record
    alt = html_text(record.prompt, PROMPT_CARD_CHARS)
    links: list[str] = []
    missing = 0
    for image, name in zip(record.images, tile.files, strict=False):
        if name is None:
            missing += 1
            continue
        href = escape(name)
        links.append(
            f'<a href="{href}"><img src="{href}" alt="{alt}" width="{int(image.width)}" '
            f'height="{int(image.height)}" loading="lazy"></a>'
        )
    notes: list[str] = []
    if missing:
        notes.append(f"{plural(missing, 'image')} missing: the stored file is gone")
    if not record.images:
        if record.texts:
            notes.append("a text answer, no image")
        elif record.status.is_terminal:
            notes.append(f"no image ({record.status.value})")
        else:
            notes.append(f"no image yet ({record.status.value} when exported)")
    shown = f'<div class="images">{"".join(links)}</div>' if links else ""
    told = "".join(f'<div class="noimage">{escape(note)}</div>' for note in notes)
    return shown + told


def _options(record: TaskRecord) -> str:
    parts: list[str] = []
    if record.aspect_ratio:
        parts.append(f"aspect ratio {escape(record.aspect_ratio)}")
    if record.image_size:
        parts.append(f"size {escape(record.image_size)}")
    urls = [shareable_reference(ref) for ref in record.references if not ref.startswith("sha256:")]
    inline = len(record.references) - len(urls)
    if inline:
        parts.append(plural(inline, "reference image"))
    # Reference URLs are shown as text, never linked or loaded: the page makes no request.
    parts.extend(f"reference <code>{escape(url)}</code>" for url in urls)
    return ", ".join(parts)


def _time(epoch: float) -> str:
    try:
        iso = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return escape(format_time(epoch))
    return (
        f'<time datetime="{escape(iso)}" title="{escape(iso)}">{escape(format_time(epoch))}</time>'
    )


def _annotation(annotation: Annotation) -> str:
    parts: list[str] = []
    if annotation.rating is not None:
        parts.append(
            _row(
                "rating",
                f'<span class="rating" title="rated {annotation.rating} of 5">'
                f"{stars(annotation.rating)}</span>",
            )
        )
    if annotation.tags:
        chips = "".join(f'<span class="tag"><bdi>{escape(t)}</bdi></span>' for t in annotation.tags)
        parts.append(_row("tags", chips))
    if annotation.note:
        parts.append(f'<div class="row note"><bdi>{escape(annotation.note)}</bdi></div>')
    return "\n".join(parts)


def _link(record: TaskRecord, inside: frozenset[str]) -> str:
    ident = escape(short_id(record)[1])
    if record.local_id in inside:
        return f'<a href="#{escape(anchor_of(record.local_id))}"><code>{ident}</code></a>'
    return f'<code>{ident}</code> <span class="muted">(not in this export)</span>'


def _lineage(tile: SheetTile, inside: frozenset[str]) -> str:
    parts: list[str] = []
    if tile.parents:
        links = ", ".join(_link(parent, inside) for parent in tile.parents)
        parts.append(_row("made from", links))
        first = tile.parents[0]
        if first.prompt != tile.record.prompt:
            diff = prompt_diff_html(first.prompt, tile.record.prompt)
            parts.append(_row("prompt change", diff))
    if tile.children:
        links = ", ".join(_link(child, inside) for child in tile.children)
        parts.append(_row("made into", links))
    return "\n".join(parts)
