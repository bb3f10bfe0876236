"""Money is integer nano-USD (1e-9 USD) inside costkit and ``Decimal`` at its edges.

Decimal arithmetic rounds to the *current thread's* context, which the application owns: with
``decimal.getcontext().prec = 3`` a product of rates and tokens would be cut to three digits. Every
computation costkit does with money runs in ``MONEY_CONTEXT`` instead (``with money_context():``):
precision to spare for any amount a 64-bit nano-USD count can hold, half-even rounding where a
rounding is meant, and an error, not a silent rounding, for anything inexact that traps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

NANO_PER_USD = 1_000_000_000
_ONE = Decimal(1)
MONEY_CONTEXT = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def money_context() -> AbstractContextManager[Context]:
    """The context costkit's money arithmetic runs in, whatever the application set for its own."""
    return localcontext(MONEY_CONTEXT)


def to_usd(nanousd: int) -> Decimal:
    """Exact dollars for an integer nano-USD amount (``3532000`` -> ``Decimal('0.003532')``)."""
    with money_context():
        usd = Decimal(int(nanousd)).scaleb(-9).normalize()
        exponent = usd.as_tuple().exponent  # an int: an integer amount is always finite
        return usd.quantize(_ONE) if isinstance(exponent, int) and exponent > 0 else usd


def format_usd(nanousd: int) -> str:
    """Dollars as text without trailing zeros beyond the cent: ``3532000`` -> ``'0.003532'``."""
    with money_context():
        text = f"{Decimal(int(nanousd)).scaleb(-9):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
