"""A lineage (``history.lineage(task)``) as a tree: each step's thumbnail, id, status and
prompt, the prompt compared word by word with the step it was made from.

Static, escaped HTML (readable in a saved notebook, no JavaScript) and a plain-text tree.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from nanobanana_jupyter._store.lineage import Lineage, LineageNode

from .html import badge, escape, html_text, img_tag
from .previews import Preview, history_thumbs
from .words import (
    PROMPT_CARD_CHARS,
    PROMPT_TABLE_CHARS,
    clean,
    plain,
    plural,
    short_id,
    shorten,
    status_label,
)

__all__ = ["lineage_html", "lineage_text", "prompt_diff_html"]

_INS = "background:rgba(46,160,67,0.22);text-decoration:none"
_DEL = "background:rgba(248,81,73,0.18);text-decoration:line-through;opacity:0.8"


def prompt_diff_html(before: str, after: str) -> str:
    """``after`` with the words it added marked ``<ins>`` and the words of ``before`` it
    dropped marked ``<del>``; everything escaped (and redacted, as all user text)."""
    old = shorten(clean(before), PROMPT_CARD_CHARS).split()
    new = shorten(clean(after), PROMPT_CARD_CHARS).split()
    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            out.append(f'<del style="{_DEL}">{escape(" ".join(old[a0:a1]))}</del>')
        if op in ("insert", "replace"):
            out.append(f'<ins style="{_INS}">{escape(" ".join(new[b0:b1]))}</ins>')
        if op == "equal":
            out.append(escape(" ".join(new[b0:b1])))
    return " ".join(out)


def _step(node: LineageNode, focus: str, thumb: Preview | None) -> str:
    record = node.record
    _, ident = short_id(record)
    full = html_text(record.task_id or record.local_id, 200)
    picture = (
        img_tag(thumb, "", "width:48px;height:48px;object-fit:cover;border-radius:3px")
        if thumb is not None
        else '<span style="display:inline-block;width:48px"></span>'
    )
    prompt = (
        prompt_diff_html(node.parent.prompt, record.prompt)
        if node.parent is not None
        else html_text(record.prompt, PROMPT_CARD_CHARS)
    )
    mark = (
        "font-weight:bold;outline:2px solid rgba(56,139,253,0.6);"
        if record.local_id == focus
        else ""
    )
    return (
        f'<div class="nanobanana-lineage-step" style="display:flex;gap:8px;align-items:center;'
        f'padding:2px 4px;border-radius:4px;{mark}">{picture}'
        f'<div><div><code class="nanobanana-id" title="{full}" style="user-select:all">'
        f"{escape(ident)}</code> {badge(record.status)}</div>"
        f'<div class="nanobanana-lineage-prompt">{prompt}</div></div></div>'
    )


def lineage_html(lineage: Lineage, thumbs: Mapping[str, Preview] | None = None) -> str:
    """The tree as nested lists, the asked-about task outlined."""
    if thumbs is None:
        thumbs = history_thumbs(lineage.records())

    def branch(node: LineageNode) -> str:
        step = _step(node, lineage.focus, thumbs.get(node.record.local_id))
        kids = "".join(branch(child) for child in node.children)
        below = (
            f'<ul style="list-style:none;margin:0;padding-left:22px;'
            f'border-left:1px solid rgba(128,128,128,0.45)">{kids}</ul>'
            if kids
            else ""
        )
        return f"<li>{step}{below}</li>"

    head = plural(len(lineage), "task") + (" (cut: too many to show)" if lineage.truncated else "")
    return (
        '<div class="nanobanana-lineage tex2jax_ignore mathjax_ignore" style="text-align:left">'
        f'<div style="opacity:0.72;margin:2px 0 6px">lineage · {escape(head)}</div>'
        f'<ul style="list-style:none;margin:0;padding:0">{branch(lineage.root)}</ul></div>'
    )


def lineage_text(lineage: Lineage) -> str:
    """``<Lineage: 3 tasks>`` and one indented line per step."""
    lines = [f"<Lineage: {plural(len(lineage), 'task')}{', cut' if lineage.truncated else ''}>"]
    for depth, node in lineage.root.walk():
        record = node.record
        _, ident = short_id(record)
        mark = "*" if record.local_id == lineage.focus else "-"
        lines.append(
            f"{'  ' * depth}{mark} {ident} {status_label(record.status)} "
            f"{plain(record.prompt, PROMPT_TABLE_CHARS)}"
        )
    return "\n".join(lines)
