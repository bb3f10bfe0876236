"""How report values read on the page and in Markdown: dollars, counts, percentages, missing values."""

from __future__ import annotations

from typing import Any

MISSING = "–"


def money(text: str | None) -> str:
    """``'12345.5'`` -> ``'$12,345.5'``: the exact decimal string, grouped, with its sign first."""
    if text is None:
        return MISSING
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, dot, fraction = digits.partition(".")
    return f"{sign}${int(whole):,}{dot}{fraction}"


def count(value: int | None) -> str:
    return MISSING if value is None else f"{int(value):,}"


def pct(text: str | None) -> str:
    return MISSING if text is None else f"{text}%"


def signed_pct(text: str | None) -> str:
    if text is None:
        return "n/a"
    return f"+{text}%" if not text.startswith("-") else f"{text}%"


def ms(text: str | None) -> str:
    return MISSING if text is None else f"{text} ms"


def cell(column: str, value: Any) -> str:
    """A table cell's text, chosen by its column's name (``*_usd`` money, ``*_pct``, ``*_ms``, counts)."""
    if value is None:
        return MISSING
    if column.endswith("_usd"):
        return money(str(value))
    if column.endswith("_pct"):
        return pct(str(value))
    if column.endswith("_ms"):
        return ms(str(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return count(value)
    return str(value)
