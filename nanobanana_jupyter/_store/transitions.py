"""The task state machine of design.md section 4, as the store enforces it. Pure, no I/O.

Which write a stored task accepts (:func:`merge_update`: a late or stale write never
downgrades a finished task), which statuses a query means (in flight, resumable,
unfinished), and what an interrupted local row becomes when its writer stopped.
"""

from __future__ import annotations

from typing import Any

from nanobanana_jupyter._wire.models import TaskStatus

from .records import TaskRecord

__all__ = ["ACTIVE", "IN_FLIGHT", "RECOVERED_AS", "RESUMABLE", "UNFINISHED", "merge_update"]

_INTERRUPTED_BEFORE_SEND = (
    "The process holding this request stopped before it was sent (it was waiting for its "
    "turn under the session's submit caps), so nothing was charged: generate it again."
)
_INTERRUPTED_SUBMIT = (
    "The submit was interrupted before the server answered (the process writing it stopped). "
    "It may have reached the server and may have been charged. It is never re-sent "
    "automatically: check the provider's dashboard, or submit again yourself if you accept "
    "a second charge."
)

RECOVERED_AS = {
    TaskStatus.SUBMITTING.value: (TaskStatus.SUBMIT_UNKNOWN.value, _INTERRUPTED_SUBMIT),
    TaskStatus.WAITING_TO_SEND.value: (TaskStatus.NOT_SENT.value, _INTERRUPTED_BEFORE_SEND),
}
"""What an interrupted local row becomes (``Store.recover_interrupted``): status and error."""

# Statuses a poller is (or may soon be) working on; the local ones have no task id yet.
ACTIVE = tuple(s.value for s in TaskStatus if s.is_active)
IN_FLIGHT = (*(s.value for s in TaskStatus if s.is_local), *ACTIVE)
# Ended without a final answer, by this client's own doing (a deadline, 404s for a while, a
# success whose image is not here): the server may still have or finish the task, so
# resume() polls them again and a re-run reuses them rather than paying again. Abandoned
# tasks are neither: the user let go of them.
RESUMABLE = (TaskStatus.TIMED_OUT.value, TaskStatus.UNAVAILABLE.value)
UNFINISHED = (*ACTIVE, *RESUMABLE)
# Finished for good: nothing but a refresh with the same status is accepted.
_FINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.NOT_SENT})
# A submit whose fate is unknown can be reconciled by a webhook or by the user.
_FROM_SUBMIT_UNKNOWN = frozenset(
    {*(s for s in TaskStatus if s.is_active), TaskStatus.SUCCESS, TaskStatus.FAILED}
)
# What a refresh of a terminal row keeps from the stored row when the new value is empty.
_KEPT_ON_REFRESH = (
    "images",
    "result_urls",
    "texts",
    "consumed",
    "error",
    "submitted_at",
    "finished_at",
)


def merge_update(stored: TaskRecord, new: TaskRecord) -> TaskRecord | None:
    """Decide what an update writes: the merged record, or ``None`` to ignore the write.

    Transitions (design.md section 4):

    * ``success``, ``failed`` and ``not_sent`` are final: only a write with the same
      status is accepted (a refresh, e.g. images added after the download).
    * ``timed_out``, ``abandoned`` and ``unavailable`` may move to any status (resume).
    * ``submit_unknown`` may move to an active status, ``success`` or ``failed`` (a webhook
      or the user found the task), or be refreshed with the same status.
    * any non-terminal status may move anywhere, except backwards along the local states:
      a ``waiting_to_send`` write onto a row that has moved on, or a ``submitting`` write
      onto a row past ``submitting``, is a late echo of the intent and is ignored.

    What an accepted write can never do: lower ``polls`` or ``reuses``, change
    ``created_at``, or forget a known ``task_id``. A refresh of a terminal row adds
    information but never blanks it (images, URLs, texts, cost, error, times keep their
    stored value when the new is empty), so a stale copy of the record cannot wipe a finished
    result.
    """
    old, status = stored.status, new.status
    if status is TaskStatus.WAITING_TO_SEND and old is not TaskStatus.WAITING_TO_SEND:
        return None
    if status is TaskStatus.SUBMITTING and not old.is_local:
        return None
    if old.is_terminal and status is not old:
        if old in _FINAL:
            return None
        if old is TaskStatus.SUBMIT_UNKNOWN and status not in _FROM_SUBMIT_UNKNOWN:
            return None
    merged = new.replace(
        created_at=stored.created_at,
        polls=max(stored.polls, new.polls),
        reuses=max(stored.reuses, new.reuses),
        task_id=new.task_id if new.task_id is not None else stored.task_id,
    )
    if old.is_terminal and status is old:
        keep: dict[str, Any] = {}
        for name in _KEPT_ON_REFRESH:
            if getattr(new, name) in (None, ()):
                keep[name] = getattr(stored, name)
        merged = merged.replace(**keep)
    return merged
