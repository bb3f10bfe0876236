"""The change between two measurements of the same request files, per request and in total.

Requests are matched by (file, line) (see ``measure``): present on both sides and equal is
``unchanged``, different is ``changed``, only in the new run ``added``, only in the old ``removed``.
Deltas are exact integers (tokens, nano-USD); a percentage is of the old worst case, None when that was 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Literal

from costkit.guard.measure import Figures
from costkit.money import money_context

Status = Literal["changed", "unchanged", "added", "removed"]
_CENT_OF_PERCENT = Decimal("0.01")


def percent(delta: int, base: int) -> Decimal | None:
    """``delta`` as a percentage of ``base``, to two places; None when ``base`` is 0."""
    if base == 0:
        return None
    with money_context():
        return (Decimal(delta) * 100 / Decimal(base)).quantize(_CENT_OF_PERCENT, ROUND_HALF_EVEN)


def exceeds_percent(delta: int, base: int, limit: Decimal) -> bool:
    """Whether growth ``delta`` is more than ``limit`` percent of ``base``, exactly (no rounding).

    Growth from nothing (``base`` 0, ``delta`` > 0) exceeds every percentage."""
    if delta <= 0:
        return False
    return base == 0 or Fraction(delta * 100) > Fraction(limit) * base


@dataclass(frozen=True)
class Change:
    file: str
    line: int
    status: Status
    base: Figures | None
    head: Figures | None

    def _pair(self, field: str) -> tuple[int, int]:
        base = 0 if self.base is None else int(getattr(self.base, field))
        head = 0 if self.head is None else int(getattr(self.head, field))
        return base, head

    @property
    def where(self) -> str:
        side = self.head if self.head is not None else self.base
        assert side is not None
        return side.where

    @property
    def delta_input_tokens(self) -> int:
        base, head = self._pair("input_tokens")
        return head - base

    @property
    def delta_output_reserve(self) -> int:
        base, head = self._pair("output_reserve")
        return head - base

    @property
    def delta_nanousd(self) -> int:
        base, head = self._pair("max_cost_nanousd")
        return head - base

    @property
    def delta_pct(self) -> Decimal | None:
        base, head = self._pair("max_cost_nanousd")
        return percent(head - base, base) if self.status == "changed" else None


@dataclass(frozen=True)
class Side:
    """The totals of one side of a comparison."""

    requests: int
    input_tokens: int
    output_reserve: int
    max_cost_nanousd: int

    @classmethod
    def of(cls, figures: Sequence[Figures]) -> Side:
        return cls(
            len(figures),
            sum(f.input_tokens for f in figures),
            sum(f.output_reserve for f in figures),
            sum(f.max_cost_nanousd for f in figures),
        )


@dataclass(frozen=True)
class Diff:
    label: str
    """What the old side is: ``git HEAD~1`` or ``baseline old.json``."""
    base: Side
    head: Side
    changes: tuple[Change, ...]
    """Every request of either side, in file and line order, unchanged ones included."""

    @property
    def delta_input_tokens(self) -> int:
        return self.head.input_tokens - self.base.input_tokens

    @property
    def delta_nanousd(self) -> int:
        return self.head.max_cost_nanousd - self.base.max_cost_nanousd

    @property
    def delta_pct(self) -> Decimal | None:
        return percent(self.delta_nanousd, self.base.max_cost_nanousd)

    def count(self, status: Status) -> int:
        return sum(1 for c in self.changes if c.status == status)

    @property
    def shown(self) -> list[Change]:
        """The changes worth listing (all but the unchanged), largest change of worst case first."""
        moved = [c for c in self.changes if c.status != "unchanged"]
        return sorted(
            moved, key=lambda c: (-abs(c.delta_nanousd), -abs(c.delta_input_tokens), c.file, c.line)
        )


def _same(a: Figures, b: Figures) -> bool:
    return (a.input_tokens, a.output_reserve, a.max_cost_nanousd) == (
        b.input_tokens,
        b.output_reserve,
        b.max_cost_nanousd,
    )


def compare(label: str, base: Iterable[Figures], head: Iterable[Figures]) -> Diff:
    """The change from ``base`` to ``head``, matched by (file, line)."""
    old = {f.key: f for f in base}
    new = {f.key: f for f in head}
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a is None:
            status: Status = "added"
        elif b is None:
            status = "removed"
        else:
            status = "unchanged" if _same(a, b) else "changed"
        changes.append(Change(key[0], key[1], status, a, b))
    return Diff(label, Side.of(list(old.values())), Side.of(list(new.values())), tuple(changes))
