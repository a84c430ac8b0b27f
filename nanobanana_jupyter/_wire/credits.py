"""Credits: what a task costs, read exactly (``Decimal``) and summed without ever raising.

One rule for every place a cost comes from (the server's answer, a store written by an
older release): anything that cannot be a real cost (text, NaN, infinity, negative,
absurdly large) is an unknown cost, ``None``, never an error. Standard library only.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal, InvalidOperation

__all__ = [
    "MAX_CREDITS",
    "credits_sum",
    "normalize_credits",
    "parse_balance",
    "parse_credits",
    "usable_credits",
]

MAX_CREDITS = Decimal(10) ** 9
"""The largest cost one task (or a sum shown) is believed at: anything above is no real charge."""
# Exact enough for any usable cost (up to 10**9 with 18 decimals) and traps nothing, so
# arithmetic on credits never raises whatever a server or an old store wrote.
_CREDITS_CONTEXT = Context(prec=28, Emax=999_999, Emin=-999_999, traps=[])


def usable_credits(number: Decimal) -> Decimal | None:
    """``number`` if it can be a cost (finite, from 0 to :data:`MAX_CREDITS`), else ``None``.

    Zero comes back as plain ``0`` (not ``-0`` or ``0E-8``), so no view shows ``-0 credits``.
    """
    if not number.is_finite() or number < 0 or number > MAX_CREDITS:
        return None
    return Decimal(0) if number.is_zero() else number


def normalize_credits(number: Decimal) -> Decimal:
    """``0.500000`` -> ``0.5``, ``2.000000`` -> ``2`` (never ``2E+0`` or ``1E+2``); ``-0`` -> ``0``.

    Never raises: a value too large to write out in full is returned normalised, as it is.
    """
    if not number.is_finite():
        return number
    normal = number.normalize(_CREDITS_CONTEXT)
    if normal.is_zero():
        return Decimal(0)
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0 and normal.adjusted() < _CREDITS_CONTEXT.prec:
        return normal.quantize(Decimal(1), context=_CREDITS_CONTEXT)
    return normal


def credits_sum(total: Decimal, amount: Decimal) -> Decimal:
    """``total + amount`` that never raises (rounded to 28 digits past any real total)."""
    return _CREDITS_CONTEXT.add(total, amount)


def parse_credits(value: object) -> Decimal | None:
    """A cost as the server (or a store) writes it: a decimal string or a JSON number.

    Anything that cannot be a cost (text, NaN, infinity, negative, absurdly large, huge
    numbers of digits) is ``None``: an unknown cost, never an error.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if value.bit_length() > 64:
            return None
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value)) if math.isfinite(value) else Decimal("NaN")
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str) and len(value) <= 100:
        try:
            number = Decimal(value.strip())
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    usable = usable_credits(number)
    return None if usable is None else normalize_credits(usable)


def parse_balance(value: object) -> Decimal | None:
    """An account's balance as ``GET /api/user`` writes it (``data.credit``): a decimal
    string (``"100.50000000"``) or a JSON number, normalised (``100.5``).

    Unlike a cost, a balance may be below zero (an overdrawn account is a fact to show, not
    a malformed answer). Anything else (text, NaN, infinity, a bool, beyond
    :data:`MAX_CREDITS` either way) is ``None``, for the caller to refuse clearly.
    """
    if isinstance(value, str) and value.strip().startswith("-"):
        magnitude = parse_credits(value.strip()[1:])
        return None if magnitude is None else normalize_credits(-magnitude)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        magnitude = parse_credits(-value)
        return None if magnitude is None else normalize_credits(-magnitude)
    return parse_credits(value)
