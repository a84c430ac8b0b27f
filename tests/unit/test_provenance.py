"""The recipe files carry (``_store.provenance``) and the copies written (``_store.export``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nanobanana_jupyter import Provenance, ValidationError, read_provenance
from nanobanana_jupyter._store.export import save_images, targets_for
from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.provenance import sidecar_of
from nanobanana_jupyter._store.records import ImageRecord, TaskRecord
from nanobanana_jupyter._wire.models import TaskStatus
from tests.unit.test_store import T0, rec

KEY = "dk-" + "5e" * 16


def _stored(tmp_path: Path, fmt: str) -> ImageRecord:
    img = Image.new("RGB", (12, 9), (200, 120, 10))
    path = tmp_path / f"src.{fmt.lower()}"
    img.convert("P").save(path, format=fmt) if fmt == "GIF" else img.save(path, format=fmt)
    return ImageStore(tmp_path / "images").put(path.read_bytes())


def _record(*images: ImageRecord, **changes: object) -> TaskRecord:
    return rec("loc-1", TaskStatus.SUCCESS, images=images, task_id="task-9", **changes)


def test_the_recipe_withholds_url_secrets_and_keeps_hashes() -> None:
    digest = "ab" * 32
    record = rec(
        "x",
        references=(
            f"sha256:{digest}",
            "https://user:pw@cdn.example/a.png",
            "https://cdn.example/b.png?X-Amz-Signature=s3cr3t#frag",
            "https://cdn.example/plain.png",
        ),
        prompt=f"paint {KEY} in red",
    )
    image = ImageRecord(digest, "/nowhere.png", "image/png", 1, 1, 1)
    found = Provenance.of(record, image)
    text = found.to_json()
    assert "s3cr3t" not in text and "pw" not in text and "frag" not in text and KEY not in text
    assert found.references == (
        f"sha256:{digest}",
        "https://***@cdn.example/a.png",
        "https://cdn.example/b.png?***",
        "https://cdn.example/plain.png",
    )
    assert found.parent_hashes == (digest,)
    assert found.created_at == T0
    assert Provenance.from_json(text) == found
    assert json.loads(text)["generator"] == "nanobanana-jupyter"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[]", "not a recipe"),
        ('{"prompt": "p", "model": "m", "schema": 99}', "newer"),
        ('{"prompt": "p"}', "no model"),
        ('{"prompt": "p", "model": "m", "references": "sha256:x"}', "references"),
        ('{"prompt": "p", "model": "m", "image_index": "1"}', "image_index"),
    ],
)
def test_a_recipe_of_the_wrong_shape_is_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Provenance.from_json(text)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_saved_copies_read_back(tmp_path: Path, fmt: str) -> None:
    image = _stored(tmp_path, fmt)
    record = _record(image, prompt="a <cat> ]]> \x00 猫")
    (target,) = targets_for(record, f"{tmp_path}/out/")
    assert target.name == f"task-9{Path(image.path).suffix}"
    (written,) = save_images(record, [image], [target])
    found = read_provenance(written)
    assert found is not None and found.prompt == "a <cat> ]]> \x00 猫"
    assert found.image_sha256 == image.sha256 and not sidecar_of(written).exists()


def test_a_gif_is_copied_as_it_is_with_a_sidecar(tmp_path: Path) -> None:
    image = _stored(tmp_path, "GIF")
    record = _record(image)
    (written,) = save_images(record, [image], [tmp_path / "anim.gif"])
    assert written.read_bytes() == Path(image.path).read_bytes()
    assert json.loads(sidecar_of(written).read_text())["task_id"] == "task-9"
    assert read_provenance(written) == Provenance.of(record, image)


def test_a_hostile_task_id_names_no_path(tmp_path: Path) -> None:
    image = _stored(tmp_path, "PNG")
    for task_id in ("../../escaped", "/etc/passwd", "..", "a\x00b"):
        (target,) = targets_for(_record(image).replace(task_id=task_id), tmp_path)
        assert target.parent == tmp_path and ".." not in target.name and "/" not in target.name


def test_damaged_metadata_is_a_clear_error(tmp_path: Path) -> None:
    from nanobanana_jupyter._store.embedding import embed

    image = _stored(tmp_path, "PNG")
    path = tmp_path / "bad.png"
    path.write_bytes(embed(Path(image.path).read_bytes(), "{not json"))
    with pytest.raises(ValidationError, match=r"metadata of .*cannot be read"):
        read_provenance(path)
    path.write_bytes(Path(image.path).read_bytes()[:30])
    with pytest.raises(ValidationError, match="truncated"):
        read_provenance(path)
