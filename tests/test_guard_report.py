"""What ``costkit guard`` writes for CI: the Markdown PR comment (capped in size, largest changes first),
the GitHub step summary, and JSON with no float in it."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from tests.guard_helpers import (
    body,
    guard,
    guard_json,
    one_line_error,
    usd,
    worst_nanousd,
    write_jsonl,
)

MARKER = "<!-- costkit-guard -->"
LIMIT = 60_000


def _many(n: int, grow: bool = False) -> list[dict]:
    # request i reserves 10 + i output tokens (grown: 10 + 2i), so the growth of request i is 8000·i nano-USD
    return [body(f"case {i}: is the answer right?", max_tokens=10 + (2 * i if grow else i)) for i in range(n)]


def _table_rows(markdown: str) -> list[list[str]]:
    rows = []
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| request") and not line.startswith("| |"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_markdown_of_many_changes_stays_under_the_cap_largest_first_with_the_summary_kept(tmp_path):
    n = 3000
    write_jsonl(tmp_path / "evals.jsonl", _many(n))
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    write_jsonl(tmp_path / "evals.jsonl", _many(n, grow=True))
    result = guard(tmp_path, "evals.jsonl", "--baseline", "baseline.json", "--markdown", "pr.md")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "pr.md").read_text()

    assert len(text) < LIMIT
    assert text.startswith(MARKER + "\n### costkit guard: ✅ pass\n")
    old_total = sum(worst_nanousd(b) for b in _many(n))
    new_total = sum(worst_nanousd(b) for b in _many(n, grow=True))
    summary = text[: text.index("####")]
    assert f"| requests | {n:,} | {n:,} | 0 added, 0 removed, {n - 1:,} changed, 1 unchanged |" in summary
    assert (
        f"| worst case | ${usd(old_total)} | ${usd(new_total)} | +${usd(new_total - old_total)}, " in summary
    )

    rows = [r for r in _table_rows(text) if r[0].startswith("evals.jsonl:")]
    assert 100 < len(rows) < n - 1
    # largest change first: request i grew by 8000·i nano-USD, so the lines run n, n-1, ...
    assert [r[0] for r in rows] == [f"evals.jsonl:{n - k}" for k in range(len(rows))]
    assert [Decimal(r[5].removeprefix("+$")) for r in rows[:3]] == [usd(8000 * (n - 1 - k)) for k in range(3)]
    more = re.search(r"_… and ([\d,]+) more changed requests: the `--json` output lists them all\._", text)
    assert more is not None
    assert len(rows) + int(more.group(1).replace(",", "")) == n - 1


def test_the_markdown_of_many_requests_without_a_baseline_is_capped_dearest_first(tmp_path):
    n = 3000
    write_jsonl(tmp_path / "evals.jsonl", _many(n))
    assert guard(tmp_path, "evals.jsonl", "--markdown", "pr.md").returncode == 0
    text = (tmp_path / "pr.md").read_text()
    assert len(text) < LIMIT
    total = sum(worst_nanousd(b) for b in _many(n))
    assert f"| requests | {n:,} |" in text and f"| worst case | ${usd(total)} |" in text
    rows = [r for r in _table_rows(text) if r[0].startswith("evals.jsonl:")]
    assert rows[0][0] == f"evals.jsonl:{n}" and rows[1][0] == f"evals.jsonl:{n - 1}"
    more = re.search(r"_… and ([\d,]+) more requests: ", text)
    assert more is not None and len(rows) + int(more.group(1).replace(",", "")) == n


def test_thousands_of_findings_are_capped_too_and_the_run_still_fails(tmp_path):
    n = 3000
    write_jsonl(
        tmp_path / "evals.jsonl", [body(f"case {i} " + "padding " * 30, max_tokens=10) for i in range(n)]
    )
    result = guard(tmp_path, "evals.jsonl", "--context-limit", "20", "--markdown", "pr.md")
    assert result.returncode == 1
    text = (tmp_path / "pr.md").read_text()
    assert len(text) < LIMIT
    assert "### costkit guard: ❌ fail" in text
    listed = text.count("- ❌ ")
    more = re.search(r"- … and ([\d,]+) more findings", text)
    assert more is not None and listed + int(more.group(1).replace(",", "")) == n
    # stderr lists the first 50 and says how many more the JSON holds
    assert result.stderr.count("costkit: FAIL: ") == 50
    assert result.stderr.splitlines()[-1] == f"costkit: ... and {n - 50:,} more findings (see --json)"


def test_the_markdown_is_appended_to_the_github_step_summary(tmp_path):
    bodies = [body("first", max_tokens=5), body("second", max_tokens=6)]
    write_jsonl(tmp_path / "evals.jsonl", bodies)
    summary = tmp_path / "step_summary.md"
    summary.write_text("## an earlier step's summary\n")

    result = guard(tmp_path, "evals.jsonl", "--markdown", "pr.md", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "pr.md").read_text()
    assert summary.read_text() == "## an earlier step's summary\n" + comment + "\n"

    # without --markdown the step summary still gets it, and a second run appends again
    again = guard(tmp_path, "evals.jsonl", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert again.returncode == 0, again.stderr
    assert summary.read_text() == "## an earlier step's summary\n" + comment + "\n" + comment + "\n"
    total = sum(worst_nanousd(b) for b in bodies)
    assert f"| worst case | ${usd(total)} |" in comment


def test_an_unwritable_step_summary_or_markdown_file_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", [body("x")])
    missing_dir = tmp_path / "no-such-dir" / "summary.md"
    line = one_line_error(guard(tmp_path, "evals.jsonl", env={"GITHUB_STEP_SUMMARY": str(missing_dir)}))
    assert line == f"costkit: $GITHUB_STEP_SUMMARY {missing_dir}: No such file or directory"
    line = one_line_error(guard(tmp_path, "evals.jsonl", "--markdown", "no-such-dir/pr.md"))
    assert line == "costkit: --markdown no-such-dir/pr.md: No such file or directory"


def test_file_names_cannot_inject_markdown_or_html(tmp_path):
    name = "a|b <img src=x onerror=alert(1)> [link](x) `tick`.jsonl"
    write_jsonl(tmp_path / name, [body("x", max_tokens=3)])
    assert guard(tmp_path, name, "--markdown", "pr.md").returncode == 0
    text = (tmp_path / "pr.md").read_text()
    assert "<img" not in text and "[link](" not in text and "`tick`" not in text
    (row,) = [r for r in text.splitlines() if "img" in r]
    assert row.startswith(r"| a\|b &lt;img src=x onerror=alert\(1\)&gt; \[link\]\(x\) \`tick\`.jsonl:1 |")


def test_the_json_holds_no_float_and_money_as_decimal_strings(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", _many(20))
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    write_jsonl(tmp_path / "evals.jsonl", _many(25, grow=True))
    raw = guard(tmp_path, "evals.jsonl", "--baseline", "baseline.json", "--max-usd", "10", "--json").stdout
    out = json.loads(raw, parse_float=lambda text: (_ for _ in ()).throw(AssertionError(f"a float: {text}")))

    def money_strings(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from money_strings(v, k)
        elif isinstance(value, list):
            for v in value:
                yield from money_strings(v, key)
        elif key.endswith("_usd") or key.endswith("_pct") or key in {"max_usd", "max_usd_per_request"}:
            yield key, value

    found = list(money_strings(out))
    assert len(found) > 50
    for key, value in found:
        assert value is None or (isinstance(value, str) and Decimal(value).is_finite()), (key, value)
    assert out["limits"]["max_usd"] == "10"


def test_the_json_of_one_run_is_a_baseline_for_the_next_with_nothing_changed(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", _many(5))
    first = guard_json(tmp_path, "evals.jsonl")
    (tmp_path / "baseline.json").write_text(json.dumps(first))
    again = guard_json(tmp_path, "evals.jsonl", "--baseline", "baseline.json", "--max-increase-pct", "0")
    assert again["diff"]["counts"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 5}
    assert again["diff"]["changes"] == [] and again["diff"]["totals"]["delta_max_cost_nanousd"] == 0
    assert again["requests"] == first["requests"]
