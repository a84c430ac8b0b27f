"""Provenance end to end against the sandbox: task.save(), read_provenance(), generate_like()."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import nanobanana_jupyter
from nanobanana_jupyter import Provenance, Session, ValidationError, read_provenance
from nanobanana_jupyter._store.embedding import embed
from nanobanana_jupyter.sandbox import Sandbox, TaskPlan
from tests.integration.test_session import make_session

pytestmark = pytest.mark.integration


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    with make_session(sandbox, tmp_path / "data") as s:
        yield s


def _pixels(path: str | Path) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(path) as img:
        img.load()
        return img.mode, img.size, img.tobytes()


def test_save_writes_a_copy_with_its_recipe_and_the_same_pixels(
    session: Session, sandbox: Sandbox, tmp_path: Path
) -> None:
    parent = session.generate("a banana boat", aspect_ratio="1:1").wait()
    child = session.generate("the boat at night <b> ]]> 猫", images=[parent], image_size="1K")
    (written,) = child.save(tmp_path / "out" / "night.png")
    assert written == tmp_path / "out" / "night.png"
    stored = child.images[0]
    assert _pixels(written) == _pixels(stored.path)
    assert Path(stored.path).read_bytes() != written.read_bytes()
    assert hashlib.sha256(Path(stored.path).read_bytes()).hexdigest() == stored.sha256  # untouched
    found = read_provenance(written)
    assert isinstance(found, Provenance)
    assert (found.prompt, found.model, found.image_size) == (
        child.prompt,
        child.model,
        "1K",
    )
    assert (found.task_id, found.local_id, found.image_sha256) == (
        child.task_id,
        child.local_id,
        stored.sha256,
    )
    assert found.parent_hashes == (parent.images[0].sha256,)
    assert found.package_version == nanobanana_jupyter.__version__
    with Image.open(written) as img:  # what another tool sees
        assert json.loads(img.text["nanobanana"])["prompt"] == child.prompt  # type: ignore[attr-defined]
    text = written.read_bytes()
    assert sandbox.api_key.encode() not in text
    assert b"http" not in text.split(b"IDAT")[0]  # no result URL (they may be signed)


def test_save_to_a_folder_numbers_several_images_and_refuses_to_overwrite(
    session: Session, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.plan(TaskPlan(images=3))
    task = session.generate("three bananas").wait()
    folder = tmp_path / "pictures"
    folder.mkdir()
    paths = task.save(folder)
    assert [p.name for p in paths] == [f"{task.task_id}-{i}.png" for i in (1, 2, 3)]
    assert [read_provenance(p).image_index for p in paths] == [0, 1, 2]  # type: ignore[union-attr]
    before = paths[1].read_bytes()
    paths[1].write_bytes(b"mine")
    with pytest.raises(ValidationError, match="overwrite=True"):
        task.save(folder)
    assert paths[1].read_bytes() == b"mine"  # nothing written at all
    assert task.save(folder, overwrite=True) == paths and paths[1].read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert [p.name for p in task.save(tmp_path / "x" / "many")] == [
        "many-1.png",
        "many-2.png",
        "many-3.png",
    ]
    with pytest.raises(ValidationError, match=r"name the file ok\.png"):
        task.save(tmp_path / "ok.jpg")


def test_saving_a_copy_again_replaces_its_recipe(session: Session, tmp_path: Path) -> None:
    first = session.generate("a pear").wait()
    (path,) = first.save(tmp_path / "pear.png")
    again = embed(path.read_bytes(), Provenance.of(first.record, first.images[0]).to_json())
    assert again.count(b"iTXt") == 1
    assert _pixels(io.BytesIO(again)) == _pixels(path)  # type: ignore[arg-type]


def test_generate_like_reruns_the_recipe_and_reuses_an_identical_request(
    session: Session, tmp_path: Path
) -> None:
    parent = session.generate("a lemon").wait()
    child = session.generate("the lemon, sliced", images=[parent], aspect_ratio="16:9").wait()
    (path,) = child.save(tmp_path / "slice.png")
    again = session.generate_like(path)
    assert again.reused and again.local_id == child.local_id  # the same request: not paid again
    other = session.generate_like(path, prompt="the lemon, squeezed").wait()
    assert not other.reused
    assert other.record.references == child.record.references  # the same parent, by its hash
    assert other.record.aspect_ratio == "16:9" and other.prompt == "the lemon, squeezed"
    assert session.history.parents(other)[0].local_id == parent.local_id


def test_generate_like_says_which_parent_is_missing(
    session: Session, sandbox: Sandbox, tmp_path: Path
) -> None:
    parent = session.generate("an apple").wait()
    child = session.generate("the apple, bitten", images=[parent]).wait()
    (path,) = child.save(tmp_path / "bitten.png")
    with make_session(sandbox, tmp_path / "elsewhere") as fresh:
        digest = parent.images[0].sha256
        with pytest.raises(ValidationError, match=rf"reference 1 .*sha256:{digest[:16]}"):
            fresh.generate_like(path)
        plain = tmp_path / "plain.png"
        Image.new("RGB", (4, 4)).save(plain)
        with pytest.raises(ValidationError, match="carries no nanobanana recipe"):
            fresh.generate_like(plain)
        assert fresh.history.latest(5) == []  # nothing was sent
        with pytest.raises(TypeError, match="colour"):
            fresh.generate_like(path, colour="red")
        bare = fresh.generate_like(path, images=[]).wait()
        assert bare.prompt == "the apple, bitten" and bare.record.references == ()


def test_read_provenance_errors_and_none(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_provenance(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValidationError, match="not a PNG, JPEG, WebP or GIF"):
        read_provenance(tmp_path / "notes.txt")
    with pytest.raises(ValidationError, match="not a file"):
        read_provenance(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert read_provenance(tmp_path / "plain.png") is None
