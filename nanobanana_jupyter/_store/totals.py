"""The history's totals kept up to date: task count, credits charged, reuses, reused credits.

A view of a long history shows its count and its cost on every page, and the panel once a
second; summing ``consumed`` over every row each time made a view cost what the history
holds, not what it shows. So the totals of the whole (unfiltered) history are kept in one
row of ``view_totals``, and reading them costs the same for ten tasks or a million.

How they stay exact, whoever writes:

* Triggers on ``tasks`` (plain SQL, stored in the file) do the bookkeeping for every writer,
  an older release or another kernel included: they count rows in and out, and log each
  change of a row's ``consumed`` or ``reuses`` (the old values with sign -1, the new with
  +1) in ``cost_changes``. SQL has no decimal type, so costs are never added up in SQL.
* This release folds the log into the totals with ``Decimal`` arithmetic, in the same write
  transaction that made the change (:func:`fold`); a reader adds what is still logged (an
  older release's writes) from the same snapshot (:func:`read`).
* The sums are kept exactly (no rounding). ``Store.total_cost`` used to add each row's
  cost with :func:`credits_sum`, which rounds to 28 digits: the kept sum is that same
  number whenever no partial sum needed more than 28 digits, which is checked from the
  smallest exponent ever added (:meth:`Totals.matches_scan`); where it cannot be sure, the
  store falls back to the full scan, so the answer is always the old one.

The tables and triggers are added to an existing file when it is opened, and the totals
built from its rows then (:func:`add_view_totals`), without a new schema version: an older
release never reads them, and the triggers keep them right whatever it writes. Standard
library only.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable
from decimal import Context, Decimal, Inexact

from .rows import stored_cost

__all__ = ["Totals", "add_view_totals", "fold", "read"]

# Far more digits than any sum of usable costs needs; an addition that would still round
# marks the totals as not matching the scan (_UNSURE), so the store scans instead.
_EXACT = Context(prec=400, Emax=999_999, Emin=-999_999, traps=[])
_UNSURE = -(10**9)
# What credits_sum (the old per-row sum) keeps: 28 significant digits.
_SUM_DIGITS = 28

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS view_totals (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        tasks         INTEGER NOT NULL,
        cost          TEXT NOT NULL,
        reuses        INTEGER NOT NULL,
        reused        TEXT NOT NULL,
        min_exponent  INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cost_changes (
        seq       INTEGER PRIMARY KEY,
        sign      INTEGER NOT NULL,
        consumed  TEXT,
        reuses    INTEGER
    )""",
)
# Plain SQL only: an older release's connection runs these triggers too.
_TRIGGERS: tuple[str, ...] = (
    """CREATE TRIGGER IF NOT EXISTS view_totals_insert AFTER INSERT ON tasks BEGIN
        UPDATE view_totals SET tasks = tasks + 1;
        INSERT INTO cost_changes (sign, consumed, reuses) SELECT 1, new.consumed, new.reuses
        WHERE new.consumed IS NOT NULL OR new.reuses > 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS view_totals_delete AFTER DELETE ON tasks BEGIN
        UPDATE view_totals SET tasks = tasks - 1;
        INSERT INTO cost_changes (sign, consumed, reuses) SELECT -1, old.consumed, old.reuses
        WHERE old.consumed IS NOT NULL OR old.reuses > 0;
    END""",
    # The store's UPDATE names every column: only a real change of either is logged.
    """CREATE TRIGGER IF NOT EXISTS view_totals_update AFTER UPDATE OF consumed, reuses
        ON tasks WHEN old.consumed IS NOT new.consumed OR old.reuses IS NOT new.reuses BEGIN
        INSERT INTO cost_changes (sign, consumed, reuses) SELECT -1, old.consumed, old.reuses
        WHERE old.consumed IS NOT NULL OR old.reuses > 0;
        INSERT INTO cost_changes (sign, consumed, reuses) SELECT 1, new.consumed, new.reuses
        WHERE new.consumed IS NOT NULL OR new.reuses > 0;
    END""",
)


@dataclasses.dataclass(frozen=True)
class Totals:
    """The whole history's totals.

    ``cost`` is the exact sum of every usable ``consumed``; ``reuses`` the sum of the
    positive ``reuses``; ``reused`` the exact sum of ``consumed * reuses`` over those;
    ``min_exponent`` the smallest decimal exponent of any amount ever added (at most 0).
    """

    tasks: int
    cost: Decimal
    reuses: int
    reused: Decimal
    min_exponent: int

    def matches_scan(self) -> bool:
        """True when the old row-by-row sum (28 digits, see module doc) is this one."""
        if self.min_exponent <= _UNSURE:
            return False
        for total in (self.cost, self.reused):
            if total.is_zero():
                continue
            if total.adjusted() - self.min_exponent + 1 > _SUM_DIGITS:
                return False
        return True


def add_view_totals(conn: sqlite3.Connection) -> None:
    """Create the totals, their log and triggers where missing (in the caller's write
    transaction, at open); build the totals from the rows of a store that had none."""
    for statement in _SCHEMA:
        conn.execute(statement)
    if conn.execute("SELECT 1 FROM view_totals WHERE id = 1").fetchone() is None:
        conn.execute("DELETE FROM cost_changes")
        (tasks,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
        rows = conn.execute(
            "SELECT 1, consumed, reuses FROM tasks WHERE consumed IS NOT NULL OR reuses > 0"
        )
        built = _apply(Totals(int(tasks), Decimal(0), 0, Decimal(0), 0), rows)
        conn.execute(
            "INSERT INTO view_totals (id, tasks, cost, reuses, reused, min_exponent) "
            "VALUES (1, ?, ?, ?, ?, ?)",
            (built.tasks, str(built.cost), built.reuses, str(built.reused), built.min_exponent),
        )
    for statement in _TRIGGERS:
        conn.execute(statement)


def read(conn: sqlite3.Connection) -> Totals | None:
    """The totals now, with the changes still logged added (``None``: the file has none).

    Both reads are one snapshot: inside the caller's transaction, or a read transaction
    of their own, so a fold committed in between is never counted twice or missed.
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        stored = _stored(conn)
        if stored is None:
            return None
        changes = conn.execute(
            "SELECT sign, consumed, reuses FROM cost_changes ORDER BY seq"
        ).fetchall()
    finally:
        if own:
            conn.execute("COMMIT")
    return _apply(stored, changes) if changes else stored


def fold(conn: sqlite3.Connection) -> None:
    """Add the logged changes to the totals and empty the log (caller's write transaction)."""
    changes = conn.execute("SELECT seq, sign, consumed, reuses FROM cost_changes ORDER BY seq")
    rows = changes.fetchall()
    if not rows:
        return
    stored = _stored(conn)
    if stored is None:
        return
    new = _apply(stored, (row[1:] for row in rows))
    conn.execute(
        "UPDATE view_totals SET cost = ?, reuses = ?, reused = ?, min_exponent = ? WHERE id = 1",
        (str(new.cost), new.reuses, str(new.reused), new.min_exponent),
    )
    conn.execute("DELETE FROM cost_changes WHERE seq <= ?", (rows[-1][0],))


def _stored(conn: sqlite3.Connection) -> Totals | None:
    try:
        row = conn.execute(
            "SELECT tasks, cost, reuses, reused, min_exponent FROM view_totals WHERE id = 1"
        ).fetchone()
    except sqlite3.OperationalError:  # no such table: a store opened without it
        return None
    if row is None:
        return None
    tasks, cost, reuses, reused, min_exponent = row
    return Totals(int(tasks), Decimal(cost), int(reuses), Decimal(reused), int(min_exponent))


def _apply(totals: Totals, changes: Iterable[tuple[int, object, object]]) -> Totals:
    """``totals`` with each ``(sign, consumed, reuses)`` row state added or taken away,
    as ``Store.total_cost`` and ``Store.reused_cost`` count a row."""
    cost, reused = totals.cost, totals.reused
    reuses, low = totals.reuses, totals.min_exponent
    ctx = _EXACT.copy()
    # A few distinct prices make up most of a history: parse each text once.
    parsed: dict[object, Decimal | None] = {}
    for sign, value, count in changes:
        if value is None:
            amount = None
        elif value in parsed:
            amount = parsed[value]
        else:
            amount = parsed[value] = stored_cost(value)
        times = count if isinstance(count, int) and count > 0 else 0
        if times:
            reuses += sign * times
        if amount is None:
            continue
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int):
            low = min(low, exponent)
        cost = ctx.add(cost, amount) if sign > 0 else ctx.subtract(cost, amount)
        if times:
            part = ctx.multiply(amount, times)
            reused = ctx.add(reused, part) if sign > 0 else ctx.subtract(reused, part)
    if ctx.flags[Inexact]:
        low = _UNSURE
    return Totals(totals.tasks, cost, reuses, reused, low)
