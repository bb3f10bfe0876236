"""A guard result for people: the table on stdout and the Markdown of a PR comment or step summary.

The Markdown starts with ``MARKER`` (an HTML comment a workflow finds to update its comment in place),
then the summary, which is always kept, then the findings and the per-request table, largest change
(or, without a baseline, largest worst case) first, cut with an "and N more" line so the whole stays
under ``MARKDOWN_LIMIT`` characters (GitHub refuses comments over 65,536). Every name that comes from
the user (files, the base label) is escaped, so a file name cannot inject Markdown or HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable

from costkit.cli_check import _table, _thousands
from costkit.guard.checks import Finding, Status
from costkit.guard.diff import Change, Diff
from costkit.guard.report import GuardResult
from costkit.money import format_usd

MARKER = "<!-- costkit-guard -->"
MARKDOWN_LIMIT = 60_000
TEXT_FINDINGS = 50
_LABEL_MAX = 200
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ICON: dict[Status, str] = {"pass": "✅ pass", "warn": "⚠️ warning", "fail": "❌ fail"}
_VERDICT: dict[Status, str] = {"pass": "pass", "warn": "pass with a warning", "fail": "FAIL"}
_LEVEL_ICON = {"fail": "❌", "warn": "⚠️"}


def _signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else f"{n:,}"


def _usd(nanousd: int) -> str:
    return "$" + format_usd(nanousd)


def _signed_usd(nanousd: int) -> str:
    return ("+" if nanousd > 0 else "-" if nanousd < 0 else "") + _usd(abs(nanousd))


def _pct(change: Change | Diff) -> str:
    pct = change.delta_pct
    if pct is None:
        return "new" if change.delta_nanousd > 0 else ""
    return f"{'+' if pct > 0 else ''}{pct}%"


def _delta_text(diff: Diff) -> str:
    pct = _pct(diff)
    return _signed_usd(diff.delta_nanousd) + (f", {pct}" if pct else "")


# ---- the text on stdout ---------------------------------------------------------------------------------


def _change_rows(changes: Iterable[Change]) -> list[list[str]]:
    rows = []
    for c in changes:
        head = c.head
        rows.append(
            [
                c.where,
                c.status,
                "-" if head is None else _thousands(head.input_tokens),
                _signed(c.delta_input_tokens),
                "-" if head is None else _usd(head.max_cost_nanousd),
                _signed_usd(c.delta_nanousd),
                _pct(c),
            ]
        )
    return rows


def text(result: GuardResult) -> str:
    """The table and summary ``costkit guard`` prints on stdout."""
    totals = result.batch.totals
    lines = []
    if result.diff is None:
        rows = [
            [
                r.where,
                r.model,
                _thousands(r.input_tokens),
                _thousands(r.output_reserve),
                _usd(r.max_cost_nanousd),
                "yes" if r.fits else "NO",
            ]
            for r in result.batch.requests
        ]
        lines.append(_table(["SOURCE", "MODEL", "INPUT", "RESERVE", "MAX COST", "FITS"], rows, {2, 3, 4}))
        limit = "" if result.limits.max_usd is None else f" (limit ${result.limits.max_usd})"
        lines.append(
            f"requests: {totals.requests:,}, input tokens: {totals.input_tokens:,}, "
            f"worst case: {_usd(totals.max_cost_nanousd)}{limit}"
        )
    else:
        diff = result.diff
        shown = diff.shown
        headers = ["SOURCE", "CHANGE", "INPUT", "Δ INPUT", "MAX COST", "Δ MAX COST", "Δ %"]
        if shown:
            lines.append(_table(headers, _change_rows(shown), {2, 3, 4, 5, 6}))
        unchanged = diff.count("unchanged")
        lines.append(f"{unchanged:,} unchanged request{'s' if unchanged != 1 else ''} against {diff.label}")
        lines.append(
            f"requests: {diff.base.requests:,} -> {diff.head.requests:,} ({diff.count('added'):,} added, "
            f"{diff.count('removed'):,} removed, {diff.count('changed'):,} changed)"
        )
        lines.append(
            f"input tokens: {diff.base.input_tokens:,} -> {diff.head.input_tokens:,} "
            f"({_signed(diff.delta_input_tokens)})"
        )
        lines.append(
            f"worst case: {_usd(diff.base.max_cost_nanousd)} -> {_usd(diff.head.max_cost_nanousd)} "
            f"({_delta_text(diff)})"
        )
    worst = totals.max_cost_nanousd
    for b in result.budgets:
        held = b.spent_nanousd + b.reserved_nanousd
        lines.append(
            f"budget {b.budget.name} ({b.period}): {_usd(held)} spent and reserved + {_usd(worst)} "
            f"-> {_usd(held + worst)} of {_usd(b.budget.limit_nanousd)}"
        )
    lines.append(f"guard: {_VERDICT[result.status]}")
    return "\n".join(lines)


def finding_lines(findings: tuple[Finding, ...]) -> list[str]:
    """The findings as stderr lines, at most ``TEXT_FINDINGS`` of them (the JSON has them all)."""
    lines = [f"costkit: {'FAIL' if f.level == 'fail' else 'warning'}: {f.message}" for f in findings]
    if len(lines) > TEXT_FINDINGS:
        more = len(lines) - TEXT_FINDINGS
        lines = [*lines[:TEXT_FINDINGS], f"costkit: ... and {more:,} more findings (see --json)"]
    return lines


# ---- Markdown -------------------------------------------------------------------------------------------


def escape_md(value: str) -> str:
    """``value`` as literal Markdown text, safe in a table cell: no markup, no HTML, one line."""
    value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return _MD_SPECIAL.sub(r"\\\1", html.escape(value, quote=False))


def _label(diff: Diff) -> str:
    label = diff.label if len(diff.label) <= _LABEL_MAX else diff.label[:_LABEL_MAX] + "…"
    return escape_md(label)


def _summary(result: GuardResult) -> list[str]:
    lines = [MARKER, f"### costkit guard: {_ICON[result.status]}", ""]
    totals = result.batch.totals
    diff = result.diff
    if diff is None:
        lines += [
            "| | this change |",
            "|:--|--:|",
            f"| requests | {totals.requests:,} |",
            f"| input tokens | {totals.input_tokens:,} |",
            f"| output reserve | {totals.output_reserve:,} |",
            f"| worst case | {_usd(totals.max_cost_nanousd)} |",
        ]
    else:
        counts = ", ".join(f"{diff.count(s):,} {s}" for s in ("added", "removed", "changed", "unchanged"))
        lines += [
            f"| | base ({_label(diff)}) | this change | change |",
            "|:--|--:|--:|--:|",
            f"| requests | {diff.base.requests:,} | {diff.head.requests:,} | {counts} |",
            f"| input tokens | {diff.base.input_tokens:,} | {diff.head.input_tokens:,} "
            f"| {_signed(diff.delta_input_tokens)} |",
            f"| worst case | {_usd(diff.base.max_cost_nanousd)} | {_usd(diff.head.max_cost_nanousd)} "
            f"| {_delta_text(diff)} |",
        ]
    limits = [
        f"`--{name.replace('_', '-')} {value}`"
        for name, value in vars(result.limits).items()
        if value is not None
    ]
    if limits:
        lines += ["", "Limits: " + ", ".join(limits) + "."]
    lines.append("")
    return lines


def _fill(
    lines: list[str], block: list[str], rows: list[str], budget: int, more: Callable[[int], str]
) -> int:
    """Append ``block`` and as many ``rows`` as fit in ``budget`` characters, then an "and N more" line
    for the rest; returns the budget left. ``budget`` already holds room for one "more" line."""
    if not rows:
        return budget
    cost = sum(len(line) + 1 for line in block)
    if cost > budget:
        lines.append(more(len(rows)))
        return budget - len(lines[-1]) - 1
    lines += block
    budget -= cost
    for i, row in enumerate(rows):
        if len(row) + 1 > budget:
            lines.append(more(len(rows) - i))
            return budget - len(lines[-1]) - 1
        lines.append(row)
        budget -= len(row) + 1
    lines.append("")
    return budget - 1


def _request_rows(result: GuardResult) -> tuple[list[str], list[str], str]:
    if result.diff is not None:
        header = [
            "| request | change | input tokens | Δ tokens | worst case | Δ worst case | Δ % |",
            "|:--|:--|--:|--:|--:|--:|--:|",
        ]
        rows = [
            "| " + " | ".join([escape_md(cells[0]), *cells[1:]]) + " |"
            for cells in _change_rows(result.diff.shown)
        ]
        return ["#### Requests that changed, largest change first", "", *header], rows, "changed requests"
    header = [
        "| request | model | input tokens | output reserve | worst case | fits |",
        "|:--|:--|--:|--:|--:|:--|",
    ]
    ordered = sorted(result.batch.requests, key=lambda r: (-r.max_cost_nanousd, r.file, r.line))
    rows = [
        f"| {escape_md(r.where)} | {escape_md(r.model)} | {r.input_tokens:,} | {r.output_reserve:,} "
        f"| {_usd(r.max_cost_nanousd)} | {'yes' if r.fits else '**no**'} |"
        for r in ordered
    ]
    return ["#### Requests, largest worst case first", "", *header], rows, "requests"


def markdown(result: GuardResult, limit: int = MARKDOWN_LIMIT) -> str:
    """The PR comment: summary always, then findings and requests as far as ``limit`` characters allow."""
    lines = _summary(result)
    reserve = 120  # room for the one "and N more" line each section may end with
    budget = limit - sum(len(line) + 1 for line in lines) - 2 * reserve - 1
    findings = [f"- {_LEVEL_ICON[f.level]} {escape_md(f.message)}" for f in result.findings]
    budget = _fill(lines, ["**Findings**", ""], findings, budget, lambda n: f"- … and {n:,} more findings")
    budget += reserve
    block, rows, what = _request_rows(result)
    _fill(
        lines,
        block,
        rows,
        budget,
        lambda n: f"\n_… and {n:,} more {what}: the `--json` output lists them all._",
    )
    return "\n".join(lines).rstrip("\n") + "\n"
