"""A saved file's recipe turned back into a request: what ``session.generate_like(path)`` sends.

The file's provenance (:mod:`nanobanana_jupyter._store.provenance`) names the prompt, model
and options; its references are URLs or ``sha256:<hash>`` of the image bytes each came from,
which are looked up in this session's image store. A reference that cannot be had again (an
image not kept here, a URL whose query string was withheld from the file) is a clear error
naming it, before anything is sent.
"""

from __future__ import annotations

import os
from typing import Any

from nanobanana_jupyter._store.images import ImageStore
from nanobanana_jupyter._store.provenance import WITHHELD, Provenance, read_provenance
from nanobanana_jupyter._wire.errors import ValidationError

__all__ = ["OVERRIDES", "recipe_of"]

OVERRIDES = frozenset(
    {
        "prompt",
        "model",
        "images",
        "aspect_ratio",
        "image_size",
        "callback_url",
        "force",
        "variant",
        "n",
    }
)
"""What ``generate_like`` may change of a recipe: ``generate``'s arguments."""


def recipe_of(
    path: str | os.PathLike[str], images: ImageStore, overrides: dict[str, Any]
) -> dict[str, Any]:
    """``generate``'s keyword arguments (``prompt`` among them) for the recipe ``path``
    carries, with ``overrides`` applied.

    Raises:
        TypeError: an override ``generate`` does not take.
        FileNotFoundError: no such file.
        ValidationError: the file carries no recipe, or a reference cannot be found again.
    """
    unknown = set(overrides) - OVERRIDES
    if unknown:
        raise TypeError(f"unknown option(s) for generate_like(): {', '.join(sorted(unknown))}")
    provenance = read_provenance(path)
    if provenance is None:
        raise ValidationError(
            f"{os.fspath(path)!r} carries no nanobanana recipe (files saved with task.save() "
            "or the terminal's --out do); nothing was sent"
        )
    recipe: dict[str, Any] = {
        "prompt": provenance.prompt,
        "model": provenance.model,
        "aspect_ratio": provenance.aspect_ratio,
        "image_size": provenance.image_size,
    }
    if "images" not in overrides:
        recipe["images"] = _references(provenance, images, os.fspath(path))
    recipe.update(overrides)
    return recipe


def _references(provenance: Provenance, store: ImageStore, path: str) -> list[object]:
    found: list[object] = []
    for number, ref in enumerate(provenance.references, start=1):
        where = f"reference {number} of {path!r}"
        if ref.startswith("sha256:"):
            digest = ref.removeprefix("sha256:")
            image = store.get(digest)
            if image is None:
                raise ValidationError(
                    f"{where} is the image sha256:{digest[:16]}…, which is not in this "
                    f"session's image store ({store.root}); pass the references yourself, "
                    "generate_like(path, images=[...]); nothing was sent"
                )
            found.append(image)
        elif WITHHELD in ref:
            raise ValidationError(
                f"{where} is a URL whose query string or credentials were left out of the "
                f"file (they may be a token): {ref}; pass the references yourself, "
                "generate_like(path, images=[...]); nothing was sent"
            )
        else:
            found.append(ref)
    return found
