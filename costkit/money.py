"""Money is integer nano-USD (1e-9 USD) inside costkit and ``Decimal`` at its edges."""

from __future__ import annotations

from decimal import Decimal

NANO_PER_USD = 1_000_000_000
_ONE = Decimal(1)


def to_usd(nanousd: int) -> Decimal:
    """Exact dollars for an integer nano-USD amount (``3532000`` -> ``Decimal('0.003532')``)."""
    usd = Decimal(int(nanousd)).scaleb(-9).normalize()
    exponent = usd.as_tuple().exponent  # an int: an integer amount is always finite
    return usd.quantize(_ONE) if isinstance(exponent, int) and exponent > 0 else usd


def format_usd(nanousd: int) -> str:
    """Dollars as text without trailing zeros beyond the cent: ``3532000`` -> ``'0.003532'``."""
    text = f"{Decimal(int(nanousd)).scaleb(-9):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
