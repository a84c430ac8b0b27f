"""A reference made from a stored result records that result's content hash (issue 17, item 3).

The history keeps a reference image by hash. It used to hash the data URI as sent, which is the
source re-encoded (downscaled, JPEG), so a child could never be joined to the image it came
from. Now it is the sha256 of the source image's own bytes: for a task or stored image, the
hash its image record carries.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import httpx
from PIL import Image

from nanobanana_jupyter._wire.models import TaskStatus
from tests.helpers.mock_api import Accepting, mock_session


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(out, "PNG")
    return out.getvalue()


class Finishing(Accepting):
    """Every task succeeds with one PNG image: the same for all, or with ``distinct`` each
    its own (a colour from its id), so that their hashes differ."""

    def __init__(self, *, distinct: bool = False) -> None:
        super().__init__()
        self.distinct = distinct

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return super().__call__(request)
        task_id = request.url.params.get("task_id", "")
        colour = (30, 120, 200)
        if self.distinct:
            r, g, b = hashlib.sha256(task_id.encode()).digest()[:3]
            colour = (r, g, b)
        uri = "data:image/png;base64," + base64.b64encode(_png(colour)).decode()
        data = {
            "task_id": task_id,
            "status": "success",
            "consumed": "0.5",
            "result": [{"image": uri}],
        }
        return httpx.Response(200, json={"code": 0, "data": data})


def test_a_child_records_its_parents_image_hash(tmp_path: Path) -> None:
    with mock_session(tmp_path / "data", Finishing()) as session:
        parent = session.generate("a blue card")
        parent.wait(30)
        assert parent.status is TaskStatus.SUCCESS
        (image,) = parent.images
        assert hashlib.sha256(Path(image.path).read_bytes()).hexdigest() == image.sha256
        for ref in (parent, parent.record, image, image.path, Path(image.path)):
            child = session.generate(f"the card, folded ({type(ref).__name__})", images=[ref])
            assert child.record.references == (f"sha256:{image.sha256}",), type(ref)
            assert [r.local_id for r in session.history.parents(child)] == [parent.local_id]
        children = session.history.children(parent)
        assert len(children) == 5
        tree = session.history.lineage(children[-1])
        assert tree.root.record.local_id == parent.local_id and len(tree) == 6
        assert repr(tree).startswith("<Lineage: 6 tasks>")


def test_files_bytes_and_data_uris_are_kept_by_the_hash_of_their_own_bytes(
    tmp_path: Path,
) -> None:
    raw = _png((200, 40, 40))
    path = tmp_path / "red.png"
    path.write_bytes(raw)
    expected = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    with mock_session(tmp_path / "data", Accepting()) as session:
        for ref in (path, str(path), raw, uri):
            task = session.generate(f"red ({type(ref).__name__})", images=[ref])
            assert task.record.references == (expected,), type(ref)
        url = "https://example.test/cat.png"
        assert session.generate("a url", images=[url]).record.references == (url,)


def test_task_parents_and_children_are_task_handles(tmp_path: Path) -> None:
    with mock_session(tmp_path / "data", Finishing(distinct=True)) as session:
        parent = session.generate("a green card").wait(30)
        child = session.generate("the card, torn", images=[parent]).wait(30)
        grandchild = session.generate("the torn card, burnt", images=[child]).wait(30)
        assert [t.local_id for t in child.parents] == [parent.local_id]
        assert [t.local_id for t in parent.children] == [child.local_id]
        assert [t.local_id for t in child.children] == [grandchild.local_id]
        assert parent.parents == [] and grandchild.children == []
        # The handles are this session's own: the same object a later get() returns.
        assert child.parents[0] is session.get(parent.local_id)
        assert child.parents[0].status is TaskStatus.SUCCESS
