"""The guard's verdict: every limit checked against a measured batch (and its change), as findings.

A finding is ``fail`` or ``warn``. The run's status is ``fail`` when any finding fails, ``warn`` when
only warnings were found, ``pass`` otherwise. Checks beyond the built-in ones are plain callables
``(batch, diff) -> findings`` passed as ``extra`` (a budget's "spent so far + this batch's worst case
over the limit" is one such check). Money is compared exactly: integer nano-USD against ``Decimal`` USD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from costkit.guard.diff import Diff, Side, exceeds_percent, percent
from costkit.guard.measure import Measured
from costkit.money import format_usd, to_usd

Level = Literal["fail", "warn"]
Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    """The limit that was crossed: ``fits``, ``max_usd``, ``max_usd_per_request``, ``max_increase_pct``,
    ``max_increase_usd``, ``warn_increase_pct`` (or an extra check's own name)."""
    message: str
    where: str | None = None
    """The request it is about (``file:line``), None for the batch."""


@dataclass(frozen=True)
class Batch:
    """The requests of this run and their totals."""

    requests: tuple[Measured, ...]

    @property
    def totals(self) -> Side:
        return Side.of(self.requests)

    @property
    def all_fit(self) -> bool:
        return all(r.fits for r in self.requests)


@dataclass(frozen=True)
class Limits:
    """The limits given on the command line; None is no limit."""

    max_usd: Decimal | None = None
    max_usd_per_request: Decimal | None = None
    max_increase_pct: Decimal | None = None
    max_increase_usd: Decimal | None = None
    warn_increase_pct: Decimal | None = None

    @property
    def need_diff(self) -> list[str]:
        """The options given that only mean something against a baseline."""
        named = {
            "--max-increase-pct": self.max_increase_pct,
            "--max-increase-usd": self.max_increase_usd,
            "--warn-increase-pct": self.warn_increase_pct,
        }
        return [option for option, value in named.items() if value is not None]


Check = Callable[[Batch, Diff | None], Iterable[Finding]]


def _usd(nanousd: int) -> str:
    return "$" + format_usd(nanousd)


def _fit_findings(batch: Batch) -> Iterable[Finding]:
    for r in batch.requests:
        if not r.fits:
            yield Finding(
                "fail",
                "fits",
                f"{r.where}: does not fit: {r.input_tokens:,} input + {r.output_reserve:,} reserved output "
                f"> {r.context_limit:,} (over by {r.overflow:,})",
                r.where,
            )


def _cost_findings(batch: Batch, limits: Limits) -> Iterable[Finding]:
    if limits.max_usd_per_request is not None:
        for r in batch.requests:
            if to_usd(r.max_cost_nanousd) > limits.max_usd_per_request:
                yield Finding(
                    "fail",
                    "max_usd_per_request",
                    f"{r.where}: worst case {_usd(r.max_cost_nanousd)} exceeds --max-usd-per-request "
                    f"{limits.max_usd_per_request}",
                    r.where,
                )
    total = batch.totals.max_cost_nanousd
    if limits.max_usd is not None and to_usd(total) > limits.max_usd:
        yield Finding("fail", "max_usd", f"worst case {_usd(total)} exceeds --max-usd {limits.max_usd}")


def _growth(diff: Diff) -> str:
    pct = percent(diff.delta_nanousd, diff.base.max_cost_nanousd)
    share = "from $0" if pct is None else f"+{pct}%"
    return (
        f"worst case grew {_usd(diff.base.max_cost_nanousd)} -> {_usd(diff.head.max_cost_nanousd)} "
        f"(+{_usd(diff.delta_nanousd)}, {share})"
    )


def _increase_findings(diff: Diff, limits: Limits) -> Iterable[Finding]:
    delta, base = diff.delta_nanousd, diff.base.max_cost_nanousd
    if limits.max_increase_usd is not None and delta > 0 and to_usd(delta) > limits.max_increase_usd:
        yield Finding(
            "fail",
            "max_increase_usd",
            f"{_growth(diff)}: more than --max-increase-usd {limits.max_increase_usd}",
        )
    failed_pct = limits.max_increase_pct is not None and exceeds_percent(delta, base, limits.max_increase_pct)
    if failed_pct:
        yield Finding(
            "fail",
            "max_increase_pct",
            f"{_growth(diff)}: more than --max-increase-pct {limits.max_increase_pct}",
        )
    if (
        not failed_pct
        and limits.warn_increase_pct is not None
        and exceeds_percent(delta, base, limits.warn_increase_pct)
    ):
        yield Finding(
            "warn",
            "warn_increase_pct",
            f"{_growth(diff)}: more than --warn-increase-pct {limits.warn_increase_pct}",
        )


def evaluate(batch: Batch, diff: Diff | None, limits: Limits, extra: Sequence[Check] = ()) -> list[Finding]:
    """Every finding of the built-in checks, then of each ``extra`` check, in that order."""
    findings = [*_fit_findings(batch), *_cost_findings(batch, limits)]
    if diff is not None:
        findings.extend(_increase_findings(diff, limits))
    for check in extra:
        findings.extend(check(batch, diff))
    return findings


def status_of(findings: Iterable[Finding]) -> Status:
    levels = {f.level for f in findings}
    return "fail" if "fail" in levels else "warn" if "warn" in levels else "pass"
