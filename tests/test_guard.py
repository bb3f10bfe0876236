"""The real ``costkit guard`` command on request files: exact figures, every exit code, globs, bad input."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from tests.guard_helpers import (
    INPUT_RATE,
    OUTPUT_RATE,
    body,
    guard,
    guard_json,
    one_line_error,
    tokens,
    usd,
    worst_nanousd,
    write_array,
    write_jsonl,
)


def test_every_request_is_measured_exactly_and_named_by_file_and_line(tmp_path):
    bodies = [
        body("Grade this answer: Paris is the capital of France.", max_tokens=300),
        body("Summarise the nightly eval in one sentence, please."),
        body("Translate 'ledger' into German.", max_tokens=20),
    ]
    lines = [json.dumps(b) for b in bodies]
    # a blank line between requests: "line" is the line a request is on, not its ordinal
    (tmp_path / "evals.jsonl").write_text(f"{lines[0]}\n\n{lines[1]}\n{lines[2]}\n")
    out = guard_json(tmp_path, "evals.jsonl")

    assert out["schema"] == "costkit.guard/1"
    assert out["status"] == "pass" and out["ok"] is True
    assert "JSONL" in out["line_means"] and "0-based index" in out["line_means"]
    assert [(r["file"], r["line"], r["where"]) for r in out["requests"]] == [
        ("evals.jsonl", 1, "evals.jsonl:1"),
        ("evals.jsonl", 3, "evals.jsonl:3"),
        ("evals.jsonl", 4, "evals.jsonl:4"),
    ]
    expected_tokens = [tokens(b) for b in bodies]
    assert [r["input_tokens"] for r in out["requests"]] == expected_tokens
    assert [r["output_reserve"] for r in out["requests"]] == [300, 4096, 20]
    # worst case: every input token at $2.00/M, the whole reserve at $8.00/M
    expected_nano = [
        t * INPUT_RATE + r * OUTPUT_RATE for t, r in zip(expected_tokens, [300, 4096, 20], strict=True)
    ]
    assert [r["max_cost_nanousd"] for r in out["requests"]] == expected_nano
    assert [Decimal(r["max_cost_usd"]) for r in out["requests"]] == [usd(n) for n in expected_nano]
    assert all(r["fits"] and r["context_limit"] == 1_047_576 for r in out["requests"])
    totals = out["totals"]
    assert Decimal(totals.pop("max_cost_usd")) == usd(sum(expected_nano))
    assert totals == {
        "requests": 3,
        "input_tokens": sum(expected_tokens),
        "output_reserve": 4416,
        "max_cost_nanousd": sum(expected_nano),
        "all_fit": True,
    }
    assert out["diff"] is None and out["findings"] == []


def test_requests_of_a_json_array_are_named_by_their_index(tmp_path):
    bodies = [body("zero"), body("one", max_tokens=7), body("two")]
    write_array(tmp_path / "batch.json", bodies)
    out = guard_json(tmp_path, "batch.json")
    assert [(r["line"], r["where"]) for r in out["requests"]] == [
        (0, "batch.json:1[0]"),
        (1, "batch.json:1[1]"),
        (2, "batch.json:1[2]"),
    ]
    assert [r["max_cost_nanousd"] for r in out["requests"]] == [worst_nanousd(b) for b in bodies]


def test_a_file_holding_one_pretty_printed_object_is_its_first_line(tmp_path):
    one = body("a single request", max_tokens=64)
    (tmp_path / "one.json").write_text("\n" + json.dumps(one, indent=2))
    out = guard_json(tmp_path, "one.json")
    (row,) = out["requests"]
    assert (row["line"], row["where"]) == (2, "one.json:2")
    assert row["max_cost_nanousd"] == tokens(one) * INPUT_RATE + 64 * OUTPUT_RATE


def test_the_table_on_stdout_names_each_request_and_the_verdict(tmp_path):
    bodies = [body("first", max_tokens=10), body("second", max_tokens=10)]
    write_jsonl(tmp_path / "e.jsonl", bodies)
    result = guard(tmp_path, "e.jsonl")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "MODEL", "INPUT", "RESERVE", "MAX", "COST", "FITS"]
    source, model, input_tokens, output_reserve, cost, fits = lines[1].split()
    assert (source, model, input_tokens, output_reserve, fits) == (
        "e.jsonl:1",
        "gpt-4.1",
        str(tokens(bodies[0])),
        "10",
        "yes",
    )
    assert Decimal(cost.removeprefix("$")) == usd(worst_nanousd(bodies[0]))
    total = sum(worst_nanousd(b) for b in bodies)
    (summary,) = [line for line in lines if line.startswith("requests: 2, ")]
    assert Decimal(summary.rpartition("worst case: $")[2]) == usd(total)
    assert lines[-1] == "guard: pass"
    assert result.stderr == ""


def test_a_request_that_does_not_fit_fails_with_exit_1_and_says_which(tmp_path):
    small, big = body("short", max_tokens=10), body("a much longer request " * 20, max_tokens=10)
    write_jsonl(tmp_path / "e.jsonl", [small, big])
    limit = tokens(small) + 10 + 5  # room for the small one only
    assert tokens(big) + 10 > limit
    result = guard(tmp_path, "e.jsonl", "--context-limit", str(limit), "--json")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "fail" and out["ok"] is False and out["totals"]["all_fit"] is False
    assert [r["fits"] for r in out["requests"]] == [True, False]
    (finding,) = out["findings"]
    overflow = tokens(big) + 10 - limit
    assert finding["level"] == "fail" and finding["check"] == "fits" and finding["where"] == "e.jsonl:2"
    assert f"over by {overflow:,}" in finding["message"]
    assert f"costkit: FAIL: e.jsonl:2: does not fit: {tokens(big):,} input" in result.stderr


def test_max_usd_bounds_the_batch_worst_case_exactly(tmp_path):
    bodies = [body("one", max_tokens=100), body("two", max_tokens=200)]
    write_jsonl(tmp_path / "e.jsonl", bodies)
    total = sum(worst_nanousd(b) for b in bodies)

    at_limit = guard_json(tmp_path, "e.jsonl", "--max-usd", f"{usd(total)}")
    assert at_limit["status"] == "pass" and at_limit["limits"]["max_usd"] == f"{usd(total)}"

    one_nano_less = f"{usd(total - 1)}"
    over = guard(tmp_path, "e.jsonl", "--max-usd", one_nano_less, "--json")
    assert over.returncode == 1
    (finding,) = json.loads(over.stdout)["findings"]
    assert finding["check"] == "max_usd" and finding["where"] is None
    assert f"worst case ${usd(total)} exceeds --max-usd {one_nano_less}" in finding["message"]


def test_max_usd_per_request_fails_only_the_dear_request(tmp_path):
    cheap, dear = body("cheap", max_tokens=10), body("dear", max_tokens=5000)
    write_jsonl(tmp_path / "e.jsonl", [cheap, dear])
    limit = usd(worst_nanousd(dear) - 1)
    assert worst_nanousd(cheap) < worst_nanousd(dear) - 1
    out = guard_json(tmp_path, "e.jsonl", "--max-usd-per-request", str(limit), expect=1)
    (finding,) = out["findings"]
    assert (finding["check"], finding["where"]) == ("max_usd_per_request", "e.jsonl:2")
    assert guard(tmp_path, "e.jsonl", "--max-usd-per-request", str(usd(worst_nanousd(dear)))).returncode == 0


def test_default_max_tokens_is_the_reserve_of_requests_without_one(tmp_path):
    bodies = [body("no max_tokens"), body("has one", max_tokens=50)]
    write_jsonl(tmp_path / "e.jsonl", bodies)
    out = guard_json(tmp_path, "e.jsonl", "--default-max-tokens", "100")
    assert [r["output_reserve"] for r in out["requests"]] == [100, 50]
    assert [r["max_cost_nanousd"] for r in out["requests"]] == [worst_nanousd(b, 100) for b in bodies]
    assert out["limits"]["default_max_tokens"] == 100


def test_a_price_file_changes_the_worst_case(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nid = "dearer-4.1"\nmodel = "gpt-4.1"\neffective_from = 2025-06-01\n'
        'input = "3.00"\ncached_input = "0.75"\noutput = "12.00"\n'
    )
    b = body("priced from a file", max_tokens=100)
    write_jsonl(tmp_path / "e.jsonl", [b])
    (row,) = guard_json(tmp_path, "e.jsonl", "--prices", str(prices))["requests"]
    assert row["max_cost_nanousd"] == tokens(b) * 3000 + 100 * 12000
    assert row["price_id"] == "dearer-4.1"


def test_stdin_is_read_with_a_dash(tmp_path):
    b = body("from stdin", max_tokens=9)
    out = guard_json(tmp_path, "-", stdin=json.dumps(b).encode())
    (row,) = out["requests"]
    assert (row["file"], row["line"], row["max_cost_nanousd"]) == ("<stdin>", 1, worst_nanousd(b))


def test_a_quoted_glob_is_expanded_by_costkit_recursively_skipping_hidden_names(tmp_path):
    a, b, c = body("top", max_tokens=1), body("deep", max_tokens=2), body("deeper", max_tokens=3)
    write_jsonl(tmp_path / "evals/a.jsonl", [a])
    write_jsonl(tmp_path / "evals/x/b.jsonl", [b])
    write_jsonl(tmp_path / "evals/x/y/c.jsonl", [c])
    write_jsonl(tmp_path / "evals/.cache/old.jsonl", [body("hidden")])
    write_jsonl(tmp_path / "evals/.skip.jsonl", [body("hidden too")])
    (tmp_path / "evals/notes.txt").write_text("not a request file")
    # the pattern reaches costkit unexpanded (no shell in between), as a quoted glob in CI does;
    # a second pattern naming a file again does not measure it twice
    out = guard_json(tmp_path, "evals/**/*.jsonl", "evals/a.jsonl")
    assert [r["file"] for r in out["requests"]] == ["evals/a.jsonl", "evals/x/b.jsonl", "evals/x/y/c.jsonl"]
    assert [r["output_reserve"] for r in out["requests"]] == [1, 2, 3]
    assert out["totals"]["max_cost_nanousd"] == sum(worst_nanousd(x) for x in (a, b, c))

    only_top = guard_json(tmp_path, "evals/*.jsonl")
    assert [r["file"] for r in only_top["requests"]] == ["evals/a.jsonl"]


def test_a_glob_matching_nothing_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "evals/a.jsonl", [body("x")])
    line = one_line_error(guard(tmp_path, "evals/**/*.json"))
    assert line == "costkit: evals/**/*.json: matches no files"


def test_a_missing_file_is_bad_input_naming_it(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [body("x")])
    assert (
        one_line_error(guard(tmp_path, "a.jsonl", "missing.jsonl")) == "costkit: missing.jsonl: no such file"
    )
    (tmp_path / "adir").mkdir()
    assert one_line_error(guard(tmp_path, "adir")) == "costkit: adir: is a directory"


def test_a_malformed_json_line_is_bad_input_naming_file_and_line(tmp_path):
    good = json.dumps(body("fine"))
    (tmp_path / "e.jsonl").write_text(f'{good}\n{good}\n{{"model": "gpt-4.1", "messages": [\n{good}\n')
    line = one_line_error(guard(tmp_path, "e.jsonl"))
    assert line.startswith("costkit: e.jsonl:3: invalid JSON: ")


def test_a_malformed_request_is_bad_input_naming_file_line_and_field(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("fine"), {"model": "gpt-4.1", "messages": "not a list"}])
    assert one_line_error(guard(tmp_path, "e.jsonl")).startswith("costkit: e.jsonl:2: messages")
    write_jsonl(tmp_path / "m.jsonl", [body("unknown", model="gpt-9")])
    assert "m.jsonl:1: unknown model 'gpt-9'" in one_line_error(guard(tmp_path, "m.jsonl"))


@pytest.mark.parametrize("option", ["--max-usd", "--max-usd-per-request", "--max-increase-usd"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc", "not a number: 'abc'"),
        ("-1", "must be a non-negative amount of USD, not '-1'"),
        ("NaN", "must be a non-negative amount of USD, not 'NaN'"),
        ("Infinity", "must be a non-negative amount of USD, not 'Infinity'"),
        ("", "not a number: ''"),
    ],
)
def test_a_bad_amount_of_usd_is_bad_input(tmp_path, option, value, problem):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    line = one_line_error(guard(tmp_path, "e.jsonl", option, value))
    assert line == f"costkit: {option}: {problem}"


@pytest.mark.parametrize("option", ["--max-increase-pct", "--warn-increase-pct"])
def test_a_bad_percentage_is_bad_input(tmp_path, option):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    line = one_line_error(guard(tmp_path, "e.jsonl", option, "ten"))
    assert line == f"costkit: {option}: not a number: 'ten'"


@pytest.mark.parametrize("option", ["--max-increase-pct", "--max-increase-usd", "--warn-increase-pct"])
def test_an_increase_limit_without_a_baseline_is_bad_input(tmp_path, option):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    line = one_line_error(guard(tmp_path, "e.jsonl", option, "5"))
    assert line == f"costkit: {option} compares with --baseline FILE or --base-ref REF"


def test_baseline_and_base_ref_together_are_bad_input(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    line = one_line_error(guard(tmp_path, "e.jsonl", "--baseline", "b.json", "--base-ref", "HEAD"))
    assert line == "costkit: give --baseline or --base-ref, not both"


def test_a_bad_price_file_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    (tmp_path / "prices.toml").write_text("[[price]]\nid = 3\n")
    assert "prices.toml" in one_line_error(guard(tmp_path, "e.jsonl", "--prices", "prices.toml"))


def test_the_shipped_example_evals_pass_the_example_workflow_limits():
    from tests.conftest import ROOT

    bodies = [json.loads(line) for line in (ROOT / "examples/evals/grading.jsonl").read_text().splitlines()]
    out = guard_json(ROOT, "examples/evals/*.jsonl", "--max-usd", "25", "--max-usd-per-request", "0.50")
    assert [r["max_cost_nanousd"] for r in out["requests"]] == [worst_nanousd(b) for b in bodies]


def test_every_option_the_example_workflow_passes_is_one_guard_takes():
    from tests.conftest import ROOT, run_costkit

    workflow = (ROOT / "examples/github-workflow-guard.yml").read_text()
    command = workflow[workflow.index("costkit guard '") : workflow.index('echo "exit=$?"')]
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", command))
    assert {"--base-ref", "--max-increase-pct", "--warn-increase-pct", "--markdown", "--json"} <= options
    help_text = run_costkit("guard", "--help").stdout
    assert all(option in help_text for option in options), options
    assert "<!-- costkit-guard -->" in workflow


def test_every_option_the_readme_ci_section_shows_is_one_guard_takes():
    from tests.conftest import ROOT, run_costkit

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## CI guard") : readme.index("## Ledger")]
    blocks = "".join(section.split("```")[1::2])
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", blocks))
    assert {"--base-ref", "--baseline", "--max-usd", "--max-increase-pct", "--markdown", "--json"} <= options
    help_text = run_costkit("guard", "--help").stdout
    assert sorted(o for o in options if o not in help_text) == []
    assert all(len(line) <= 110 for line in section.splitlines())


def test_an_extra_check_joins_the_verdict(tmp_path):
    """The seam a budget check plugs into: (batch, diff) -> findings, after the built-in limits."""
    from costkit.guard.checks import Finding, Limits
    from costkit.guard.cli import Settings, run_guard
    from costkit.guard.measure import Options
    from costkit.guard.report import to_json
    from costkit.pricing import default_price_book

    bodies = [body("one", max_tokens=10), body("two", max_tokens=20)]
    write_jsonl(tmp_path / "e.jsonl", bodies)
    spent_nanousd = 5_000_000  # what a ledger would say the period has spent so far
    limit_nanousd = spent_nanousd + sum(worst_nanousd(b) for b in bodies) - 1

    def budget(batch, diff):
        assert diff is None
        if spent_nanousd + batch.totals.max_cost_nanousd > limit_nanousd:
            yield Finding("fail", "budget", "spent so far + this batch's worst case is over the budget")

    settings = Settings(
        files=(str(tmp_path / "e.jsonl"),),
        options=Options(None, 4096, default_price_book()),
        limits=Limits(max_usd=usd(10**9)),
    )
    assert run_guard(settings).status == "pass"
    result = run_guard(settings, extra=[budget])
    assert result.status == "fail"
    assert [(f["check"], f["level"]) for f in to_json(result)["findings"]] == [("budget", "fail")]
