"""A guard run's result, its JSON form (``"schema": "costkit.guard/1"``), and reading that form back as a
baseline.

The JSON shape (money as decimal strings in ``*_usd`` and exact integers in ``*_nanousd``; never a float)::

    {"schema": "costkit.guard/1", "status": "pass" | "warn" | "fail", "ok": bool,
     "line_means": "...",                        # how "line" names a request in its file
     "limits": {"max_usd", "max_usd_per_request", "max_increase_pct", "max_increase_usd",
                "warn_increase_pct": str | null, "context_limit": int | null, "default_max_tokens": int},
     "totals": {"requests", "input_tokens", "output_reserve", "max_cost_usd", "max_cost_nanousd", "all_fit"},
     "requests": [{"file", "line", "where", "model", "input_tokens", "output_reserve", "context_limit",
                   "fits", "max_cost_usd", "max_cost_nanousd", "price_id"}],   # in file and line order
     "diff": null | {"base": "git HEAD~1" | "baseline FILE",
                     "totals": {"base": {...}, "head": {...},     # requests, tokens, reserve, cost
                                "delta_input_tokens", "delta_max_cost_usd", "delta_max_cost_nanousd",
                                "delta_pct": str | null},         # % of the base worst case, 2 places
                     "counts": {"added", "removed", "changed", "unchanged"},
                     "changes": [{"file", "line", "where", "status": "added" | "removed" | "changed",
                                  "base": {...} | null, "head": {...} | null, "delta_input_tokens",
                                  "delta_output_reserve", "delta_max_cost_usd", "delta_max_cost_nanousd",
                                  "delta_pct"}]},                 # unchanged requests are only counted
     "findings": [{"level": "fail" | "warn", "check", "message", "where": str | null}],
     "budgets": [{"name", "period", "tz", "current_period", "limit_usd", "spent_usd", "reserved_usd",
                  "batch_max_cost_usd", "after_batch_usd", "ok"}]}   # one per --budget, [] without

Within version 1 keys are only ever added, never renamed or removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costkit.guard.checks import Batch, Finding, Limits, Status, status_of
from costkit.guard.diff import Change, Diff, Side
from costkit.guard.measure import LINE_MEANS, Figures, Measured
from costkit.money import format_usd

if TYPE_CHECKING:
    from costkit.guard.budget import Standing

SCHEMA = "costkit.guard/1"
_SCHEMA_FAMILY = "costkit.guard/"


class BaselineError(ValueError):
    """A ``--baseline`` file that is not a ``costkit guard --json`` output this version reads."""


@dataclass(frozen=True)
class GuardResult:
    batch: Batch
    diff: Diff | None
    limits: Limits
    context_limit: int | None
    default_max_tokens: int
    findings: tuple[Finding, ...]
    budgets: tuple[Standing, ...] = ()
    """The budgets given with ``--budget``, and where each stood before this batch."""

    @property
    def status(self) -> Status:
        return status_of(self.findings)


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _money(nanousd: int) -> dict[str, Any]:
    return {"max_cost_usd": format_usd(nanousd), "max_cost_nanousd": nanousd}


def _side(side: Side) -> dict[str, Any]:
    return {
        "requests": side.requests,
        "input_tokens": side.input_tokens,
        "output_reserve": side.output_reserve,
        **_money(side.max_cost_nanousd),
    }


def _figures(f: Figures | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"input_tokens": f.input_tokens, "output_reserve": f.output_reserve, **_money(f.max_cost_nanousd)}


def _request(r: Measured) -> dict[str, Any]:
    return {
        "file": r.file,
        "line": r.line,
        "where": r.where,
        "model": r.model,
        "input_tokens": r.input_tokens,
        "output_reserve": r.output_reserve,
        "context_limit": r.context_limit,
        "fits": r.fits,
        **_money(r.max_cost_nanousd),
        "price_id": r.price_id,
    }


def _change(c: Change) -> dict[str, Any]:
    return {
        "file": c.file,
        "line": c.line,
        "where": c.where,
        "status": c.status,
        "base": _figures(c.base),
        "head": _figures(c.head),
        "delta_input_tokens": c.delta_input_tokens,
        "delta_output_reserve": c.delta_output_reserve,
        "delta_max_cost_usd": format_usd(c.delta_nanousd),
        "delta_max_cost_nanousd": c.delta_nanousd,
        "delta_pct": _str(c.delta_pct),
    }


def _diff(d: Diff) -> dict[str, Any]:
    return {
        "base": d.label,
        "totals": {
            "base": _side(d.base),
            "head": _side(d.head),
            "delta_input_tokens": d.delta_input_tokens,
            "delta_max_cost_usd": format_usd(d.delta_nanousd),
            "delta_max_cost_nanousd": d.delta_nanousd,
            "delta_pct": _str(d.delta_pct),
        },
        "counts": {s: d.count(s) for s in ("added", "removed", "changed", "unchanged")},
        "changes": [_change(c) for c in d.changes if c.status != "unchanged"],
    }


def to_json(result: GuardResult) -> dict[str, Any]:
    """The result in the ``costkit.guard/1`` shape (see the module docstring)."""
    limits = result.limits
    totals = result.batch.totals
    return {
        "schema": SCHEMA,
        "status": result.status,
        "ok": result.status != "fail",
        "line_means": LINE_MEANS,
        "limits": {
            "max_usd": _str(limits.max_usd),
            "max_usd_per_request": _str(limits.max_usd_per_request),
            "max_increase_pct": _str(limits.max_increase_pct),
            "max_increase_usd": _str(limits.max_increase_usd),
            "warn_increase_pct": _str(limits.warn_increase_pct),
            "context_limit": result.context_limit,
            "default_max_tokens": result.default_max_tokens,
        },
        "totals": {**_side(totals), "all_fit": result.batch.all_fit},
        "requests": [_request(r) for r in result.batch.requests],
        "diff": None if result.diff is None else _diff(result.diff),
        "findings": [
            {"level": f.level, "check": f.check, "message": f.message, "where": f.where}
            for f in result.findings
        ],
        "budgets": [_budget(b, totals.max_cost_nanousd) for b in result.budgets],
    }


def _budget(standing: Standing, batch_nanousd: int) -> dict[str, Any]:
    budget = standing.budget
    total = standing.spent_nanousd + standing.reserved_nanousd + batch_nanousd
    return {
        "name": budget.name,
        "period": budget.period,
        "tz": budget.tz,
        "current_period": standing.period,
        "limit_usd": format_usd(budget.limit_nanousd),
        "spent_usd": format_usd(standing.spent_nanousd),
        "reserved_usd": format_usd(standing.reserved_nanousd),
        "batch_max_cost_usd": format_usd(batch_nanousd),
        "after_batch_usd": format_usd(total),
        "ok": total <= budget.limit_nanousd,
    }


def _count(entry: dict[str, Any], key: str, i: int) -> int:
    value = entry.get(key)
    if type(value) is not int or value < 0:
        raise BaselineError(f"requests[{i}].{key}: not a non-negative integer: {value!r}")
    return value


def _text(entry: dict[str, Any], key: str, i: int) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise BaselineError(f"requests[{i}].{key}: not a string: {value!r}")
    return value


def read_baseline(text: str) -> list[Figures]:
    """The requests of an earlier ``costkit guard --json`` output; ``BaselineError`` when it is not one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise BaselineError("not JSON: nested too deeply") from None
    schema = document.get("schema") if isinstance(document, dict) else None
    if not isinstance(schema, str) or not schema.startswith(_SCHEMA_FAMILY):
        raise BaselineError(f'not a costkit guard --json output (its "schema" is {schema!r}, not {SCHEMA!r})')
    if schema != SCHEMA:
        raise BaselineError(f"schema {schema!r} is not one this costkit reads (it reads {SCHEMA!r})")
    entries = document.get("requests")
    if not isinstance(entries, list):
        raise BaselineError('"requests" is not a list')
    out: list[Figures] = []
    seen: set[tuple[str, int]] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BaselineError(f"requests[{i}]: not an object")
        figures = Figures(
            file=_text(entry, "file", i),
            line=_count(entry, "line", i),
            where=_text(entry, "where", i),
            input_tokens=_count(entry, "input_tokens", i),
            output_reserve=_count(entry, "output_reserve", i),
            max_cost_nanousd=_count(entry, "max_cost_nanousd", i),
        )
        if figures.key in seen:
            raise BaselineError(f"requests[{i}]: {figures.file} line {figures.line} appears twice")
        seen.add(figures.key)
        out.append(figures)
    return out
