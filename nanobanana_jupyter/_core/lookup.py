"""What a typed reference names: ``@last``, ``@<id>``, or anything else as given."""

from __future__ import annotations

from collections.abc import Callable

from nanobanana_jupyter._wire.errors import ValidationError
from nanobanana_jupyter._wire.models import TaskStatus

from .task import Task

__all__ = ["resolve_reference"]


def resolve_reference(
    ref: str,
    *,
    last: Callable[..., Task | None],
    get: Callable[[str], Task],
    wait: float,
) -> object:
    """See :meth:`Session.resolve_reference`; ``last`` and ``get`` are the session's."""
    if ref == "@last":
        found = last(succeeded=False)
        if found is not None and not found.done():
            # The reference must exist before the next submit: wait for the previous one.
            try:
                found.wait(wait)
            except TimeoutError:
                raise ValidationError(f"@last: {found.id} is still running") from None
        if found is None or found.status is not TaskStatus.SUCCESS:
            found = last()
        if found is None:
            raise ValidationError("@last: no successful task yet")
        return found
    if ref.startswith("@"):
        try:
            return get(ref[1:])
        except KeyError:
            raise ValidationError(f"{ref}: no such task in the history") from None
    return ref
