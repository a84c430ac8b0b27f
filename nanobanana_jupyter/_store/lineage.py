"""Edit lineage: which task's result another task used as a reference, read from the store.

A reference made from a stored result is kept in the history as ``sha256:<hash>`` of that
result's own bytes (see ``_core.references.Reference``), the hash its image record carries; a
task's parents are the tasks holding an image with such a hash, its children the tasks
referencing one of its images. A reference given as a task's result URL joins that task too.
:func:`lineage` walks up to the first ancestor and back down
into a tree, shown by the display layer (``history.lineage(task)``).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator

from . import presenter
from .records import TaskRecord
from .store import Store

__all__ = [
    "MAX_NODES",
    "Lineage",
    "LineageNode",
    "children",
    "lineage",
    "parents",
    "reference_hashes",
]

MAX_NODES = 500
"""Most tasks one lineage shows: a tree past that is cut (``Lineage.truncated``)."""

_HASH = re.compile(r"sha256:([0-9a-f]{64})")


def _image_hashes(record: TaskRecord) -> list[str]:
    return [image.sha256 for image in record.images if re.fullmatch(r"[0-9a-f]{64}", image.sha256)]


def reference_hashes(record: TaskRecord) -> list[str]:
    """The content hashes of ``record``'s references made from stored images (its parents')."""
    return [m.group(1) for ref in record.references if (m := _HASH.fullmatch(ref))]


def _reference_urls(record: TaskRecord) -> list[str]:
    return [ref for ref in record.references if ref.startswith(("http://", "https://"))]


def _joined(record: TaskRecord, groups: Iterator[list[TaskRecord]]) -> list[TaskRecord]:
    found: dict[str, TaskRecord] = {}
    for group in groups:
        for other in group:
            if other.local_id != record.local_id:
                found.setdefault(other.local_id, other)
    return sorted(found.values(), key=lambda r: (r.created_at, r.local_id))


def parents(store: Store, record: TaskRecord) -> list[TaskRecord]:
    """The tasks whose results ``record`` used as references, oldest first: by the image's
    content hash, or by a result URL given as the reference."""
    by_hash = (store.with_image(digest) for digest in reference_hashes(record))
    by_url = (store.with_result_url(url) for url in _reference_urls(record))
    return _joined(record, itertools.chain(by_hash, by_url))


def children(store: Store, record: TaskRecord) -> list[TaskRecord]:
    """The tasks that used one of ``record``'s results as a reference, oldest first."""
    by_hash = (store.referencing(digest) for digest in _image_hashes(record))
    by_url = (store.referencing_url(url) for url in record.result_urls)
    return _joined(record, itertools.chain(by_hash, by_url))


@dataclasses.dataclass(frozen=True)
class LineageNode:
    """One task of a lineage and the tasks made from its results."""

    record: TaskRecord
    children: tuple[LineageNode, ...] = ()
    parent: TaskRecord | None = None
    """The task this one was made from, as shown in the tree (``None`` at the root)."""

    def walk(self) -> Iterator[tuple[int, LineageNode]]:
        """Every node with its depth, depth first, oldest child first."""
        stack: list[tuple[int, LineageNode]] = [(0, self)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.children))


@dataclasses.dataclass(frozen=True)
class Lineage:
    """The edit tree a task belongs to (``history.lineage(task)``), from its first ancestor.

    Attributes:
        root: the first ancestor, with every task made from it below.
        focus: the local id of the task asked about (marked in the display).
        truncated: the tree had more than :data:`MAX_NODES` tasks; the rest is left out.
    """

    root: LineageNode
    focus: str
    truncated: bool = False

    def __len__(self) -> int:
        return sum(1 for _ in self.root.walk())

    def records(self) -> list[TaskRecord]:
        """Every task of the tree, depth first."""
        return [node.record for _, node in self.root.walk()]

    def __repr__(self) -> str:
        return presenter.text(self, f"<Lineage of {self.focus}: {len(self)} tasks>")

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> object:
        return presenter.mimebundle(self, repr(self))


def lineage(store: Store, record: TaskRecord) -> Lineage:
    """The tree ``record`` belongs to: up through first parents to the first ancestor (a
    cycle, possible only by hand, stops the climb), then every descendant."""
    root, seen = record, {record.local_id}
    while True:
        above = parents(store, root)
        if not above or above[0].local_id in seen:
            break
        root = above[0]
        seen.add(root.local_id)
    placed: set[str] = set()
    cut = [False]

    def build(node: TaskRecord, parent: TaskRecord | None) -> LineageNode:
        placed.add(node.local_id)
        kids: list[LineageNode] = []
        for child in children(store, node):
            if child.local_id in placed:
                continue
            if len(placed) >= MAX_NODES:
                cut[0] = True
                break
            kids.append(build(child, node))
        return LineageNode(node, tuple(kids), parent)

    tree = build(root, None)
    return Lineage(tree, record.local_id, truncated=cut[0])
