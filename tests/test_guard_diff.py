"""``costkit guard`` against a baseline JSON and against a real git repository: per-request and total
change, added and removed requests, and the increase limits that fail or warn."""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest

from tests.conftest import run_costkit
from tests.guard_helpers import (
    body,
    commit_all,
    git,
    guard,
    guard_json,
    one_line_error,
    tokens,
    usd,
    worst_nanousd,
    write_array,
    write_jsonl,
)


def pct(delta: int, base: int) -> str:
    return str((Decimal(delta) * 100 / Decimal(base)).quantize(Decimal("0.01"), ROUND_HALF_EVEN))


OLD = [
    body("Grade: the capital of France is Paris.", max_tokens=200),
    body("Grade: water boils at 100 C at sea level.", max_tokens=200),
    body("Grade: the moon is made of cheese.", max_tokens=200),
]
NEW = [
    # line 1 grows its prompt, line 2 its output reserve, line 3 is gone, line 4 is new
    body("Grade, citing a source and explaining each step: the capital of France is Paris.", max_tokens=200),
    body("Grade: water boils at 100 C at sea level.", max_tokens=900),
    None,
    body("Grade: light is faster than sound.", max_tokens=50),
]


def _write_jsonl_with_gaps(path, bodies):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((json.dumps(b) if b is not None else "") + "\n" for b in bodies))


def test_a_baseline_json_gives_the_change_per_request_and_in_total(tmp_path):
    _write_jsonl_with_gaps(tmp_path / "evals.jsonl", OLD)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    _write_jsonl_with_gaps(tmp_path / "evals.jsonl", NEW)

    out = guard_json(tmp_path, "evals.jsonl", "--baseline", "baseline.json")
    diff = out["diff"]
    assert diff["base"] == "baseline baseline.json"
    assert diff["counts"] == {"added": 1, "removed": 1, "changed": 2, "unchanged": 0}
    by_line = {c["line"]: c for c in diff["changes"]}
    assert {line: c["status"] for line, c in by_line.items()} == {
        1: "changed",
        2: "changed",
        3: "removed",
        4: "added",
    }

    grown = by_line[1]
    assert grown["base"]["input_tokens"] == tokens(OLD[0]) and grown["head"]["input_tokens"] == tokens(NEW[0])
    assert grown["delta_input_tokens"] == tokens(NEW[0]) - tokens(OLD[0]) > 0
    assert grown["delta_output_reserve"] == 0
    delta = worst_nanousd(NEW[0]) - worst_nanousd(OLD[0])
    assert grown["delta_max_cost_nanousd"] == delta == (tokens(NEW[0]) - tokens(OLD[0])) * 2000
    assert Decimal(grown["delta_max_cost_usd"]) == usd(delta)
    assert grown["delta_pct"] == pct(delta, worst_nanousd(OLD[0]))

    reserved = by_line[2]
    assert reserved["delta_input_tokens"] == 0 and reserved["delta_output_reserve"] == 700
    assert reserved["delta_max_cost_nanousd"] == 700 * 8000

    removed, added = by_line[3], by_line[4]
    assert removed["head"] is None and removed["base"]["max_cost_nanousd"] == worst_nanousd(OLD[2])
    assert removed["delta_max_cost_nanousd"] == -worst_nanousd(OLD[2]) and removed["delta_pct"] is None
    assert added["base"] is None and added["head"]["max_cost_nanousd"] == worst_nanousd(NEW[3])
    assert added["delta_input_tokens"] == tokens(NEW[3])

    old_total = sum(worst_nanousd(b) for b in OLD)
    new_total = sum(worst_nanousd(b) for b in NEW if b is not None)
    totals = diff["totals"]
    assert totals["base"]["max_cost_nanousd"] == old_total and totals["head"]["max_cost_nanousd"] == new_total
    assert totals["base"]["requests"] == 3 and totals["head"]["requests"] == 3
    assert totals["delta_max_cost_nanousd"] == new_total - old_total
    assert Decimal(totals["delta_max_cost_usd"]) == usd(new_total - old_total)
    assert totals["delta_pct"] == pct(new_total - old_total, old_total)
    assert totals["delta_input_tokens"] == sum(tokens(b) for b in NEW if b) - sum(tokens(b) for b in OLD)
    assert out["status"] == "pass"


def test_the_table_lists_added_removed_and_changed_requests_largest_change_first(tmp_path):
    _write_jsonl_with_gaps(tmp_path / "evals.jsonl", OLD)
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    _write_jsonl_with_gaps(tmp_path / "evals.jsonl", NEW)
    result = guard(tmp_path, "evals.jsonl", "--baseline", "baseline.json")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:5]]
    deltas = {
        "evals.jsonl:1": worst_nanousd(NEW[0]) - worst_nanousd(OLD[0]),
        "evals.jsonl:2": 700 * 8000,
        "evals.jsonl:3": -worst_nanousd(OLD[2]),
        "evals.jsonl:4": worst_nanousd(NEW[3]),
    }
    expected_order = sorted(deltas, key=lambda where: -abs(deltas[where]))
    assert [r[0] for r in rows] == expected_order
    assert {r[0]: r[1] for r in rows} == {
        "evals.jsonl:1": "changed",
        "evals.jsonl:2": "changed",
        "evals.jsonl:3": "removed",
        "evals.jsonl:4": "added",
    }
    assert "0 unchanged requests against baseline baseline.json" in result.stdout
    assert "requests: 3 -> 3 (1 added, 1 removed, 2 changed)" in result.stdout


def _repo_with_two_commits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write_jsonl(repo / "evals/grading.jsonl", OLD)
    write_array(repo / "evals/batch/array.json", [body("array zero", max_tokens=10), body("array one")])
    write_jsonl(repo / "evals/retired.jsonl", [body("a suite this change deletes", max_tokens=30)])
    commit_all(repo, "evals as they were")
    _write_jsonl_with_gaps(repo / "evals/grading.jsonl", NEW)
    write_array(repo / "evals/batch/array.json", [body("array zero", max_tokens=10)])
    (repo / "evals/retired.jsonl").unlink()
    write_jsonl(repo / "evals/fresh.jsonl", [body("a suite this change adds", max_tokens=40)])
    commit_all(repo, "evals as the change leaves them")
    return repo


def test_base_ref_reads_the_same_files_at_the_ref_with_git(tmp_path):
    repo = _repo_with_two_commits(tmp_path)
    out = guard_json(repo, "evals/**/*.json*", "--base-ref", "HEAD~1")
    diff = out["diff"]
    assert diff["base"] == "git HEAD~1"
    changes = {(c["file"], c["line"]): c for c in diff["changes"]}
    assert {k: c["status"] for k, c in changes.items()} == {
        ("evals/grading.jsonl", 1): "changed",
        ("evals/grading.jsonl", 2): "changed",
        ("evals/grading.jsonl", 3): "removed",
        ("evals/grading.jsonl", 4): "added",
        ("evals/batch/array.json", 1): "removed",  # the second element of the array
        ("evals/retired.jsonl", 1): "removed",  # the file is gone from the working tree
        ("evals/fresh.jsonl", 1): "added",  # the file is absent at the ref
    }
    assert diff["counts"] == {"added": 2, "removed": 3, "changed": 2, "unchanged": 1}
    assert changes[("evals/batch/array.json", 1)]["where"] == "evals/batch/array.json:1[1]"
    assert changes[("evals/retired.jsonl", 1)]["base"]["max_cost_nanousd"] == worst_nanousd(
        body("a suite this change deletes", max_tokens=30)
    )
    assert changes[("evals/fresh.jsonl", 1)]["head"]["max_cost_nanousd"] == worst_nanousd(
        body("a suite this change adds", max_tokens=40)
    )
    old_total = (
        sum(worst_nanousd(b) for b in OLD)
        + worst_nanousd(body("array zero", max_tokens=10))
        + worst_nanousd(body("array one"))
        + worst_nanousd(body("a suite this change deletes", max_tokens=30))
    )
    assert diff["totals"]["base"]["max_cost_nanousd"] == old_total
    assert diff["totals"]["head"]["max_cost_nanousd"] == out["totals"]["max_cost_nanousd"]
    assert diff["totals"]["delta_pct"] == pct(out["totals"]["max_cost_nanousd"] - old_total, old_total)


def test_base_ref_compares_uncommitted_work_with_the_ref(tmp_path):
    repo = _repo_with_two_commits(tmp_path)
    _write_jsonl_with_gaps(repo / "evals/grading.jsonl", [*NEW, body("not committed yet", max_tokens=1)])
    out = guard_json(repo, "evals/grading.jsonl", "--base-ref", "HEAD")
    assert out["diff"]["counts"] == {"added": 1, "removed": 0, "changed": 0, "unchanged": 3}
    (added,) = out["diff"]["changes"]
    assert (added["line"], added["status"]) == (5, "added")


def test_base_ref_works_from_a_subdirectory_of_the_repository(tmp_path):
    repo = _repo_with_two_commits(tmp_path)
    out = guard_json(repo / "evals", "*.jsonl", "--base-ref", "HEAD~1")
    files = {c["file"] for c in out["diff"]["changes"]}
    assert files == {"grading.jsonl", "retired.jsonl", "fresh.jsonl"}


def test_max_increase_pct_compares_the_growth_exactly(tmp_path):
    _write_jsonl_with_gaps(tmp_path / "evals.jsonl", OLD)
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    grown = [OLD[0], OLD[1], body("Grade: the moon is made of cheese.", max_tokens=300)]
    write_jsonl(tmp_path / "evals.jsonl", grown)
    old_total = sum(worst_nanousd(b) for b in OLD)
    delta = 100 * 8000  # 100 more output tokens reserved
    exact = Fraction(delta * 100, old_total)
    just_above = Decimal(math.ceil(exact * 10**12)).scaleb(-12)
    just_below = Decimal(math.floor(exact * 10**12)).scaleb(-12)
    args = ("evals.jsonl", "--baseline", "baseline.json", "--max-increase-pct")

    assert guard(tmp_path, *args, str(just_above)).returncode == 0
    if just_below == exact:  # the growth is exactly this percentage: at the limit passes
        assert guard(tmp_path, *args, str(just_below)).returncode == 0
        just_below -= Decimal("1e-12")
    over = guard_json(tmp_path, *args, str(just_below), expect=1)
    (finding,) = over["findings"]
    assert finding["check"] == "max_increase_pct" and finding["level"] == "fail"
    assert f"+{pct(delta, old_total)}%" in finding["message"]
    assert f"more than --max-increase-pct {just_below}" in finding["message"]


def test_growth_over_max_increase_usd_fails(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", OLD)
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    write_jsonl(tmp_path / "evals.jsonl", [*OLD, body("one more case", max_tokens=10)])
    delta = worst_nanousd(body("one more case", max_tokens=10))
    args = ("evals.jsonl", "--baseline", "baseline.json", "--max-increase-usd")
    assert guard(tmp_path, *args, str(usd(delta))).returncode == 0
    over = guard_json(tmp_path, *args, str(usd(delta - 1)), expect=1)
    (finding,) = over["findings"]
    assert finding["check"] == "max_increase_usd"
    assert f"(+${usd(delta)}, " in finding["message"]


def test_warn_increase_pct_warns_with_exit_0_and_marks_the_output(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", OLD)
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    write_jsonl(
        tmp_path / "evals.jsonl", [OLD[0], OLD[1], body("Grade: the moon is made of cheese.", max_tokens=400)]
    )
    args = ("evals.jsonl", "--baseline", "baseline.json", "--warn-increase-pct", "1", "--markdown", "pr.md")

    result = guard(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "guard: pass with a warning"
    assert result.stderr.startswith("costkit: warning: worst case grew ")
    assert "### costkit guard: ⚠️ warning" in (tmp_path / "pr.md").read_text()
    out = guard_json(tmp_path, *args)
    assert (out["status"], out["ok"]) == ("warn", True)
    assert [(f["level"], f["check"]) for f in out["findings"]] == [("warn", "warn_increase_pct")]

    # a fail level crossed too: the run fails, and the warning is not repeated beside it
    failed = guard_json(tmp_path, *args, "--max-increase-pct", "1", expect=1)
    assert [(f["level"], f["check"]) for f in failed["findings"]] == [("fail", "max_increase_pct")]
    # growth under the warning level: a plain pass
    calm = guard_json(tmp_path, *args[:-2], "--warn-increase-pct", "99")
    assert (calm["status"], calm["findings"]) == ("pass", [])


def test_a_cheaper_change_never_crosses_an_increase_limit(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", OLD)
    (tmp_path / "baseline.json").write_text(guard(tmp_path, "evals.jsonl", "--json").stdout)
    write_jsonl(tmp_path / "evals.jsonl", OLD[:1])
    out = guard_json(
        tmp_path,
        "evals.jsonl",
        "--baseline",
        "baseline.json",
        "--max-increase-pct",
        "0",
        "--max-increase-usd",
        "0",
    )
    assert out["status"] == "pass" and int(out["diff"]["totals"]["delta_max_cost_nanousd"]) < 0


def test_growth_from_nothing_exceeds_every_percentage(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("no evals yet\n")
    commit_all(repo, "start")
    write_jsonl(repo / "evals/first.jsonl", [body("the first eval", max_tokens=10)])
    out = guard_json(repo, "evals/first.jsonl", "--base-ref", "HEAD", "--max-increase-pct", "1000", expect=1)
    assert out["diff"]["totals"]["delta_pct"] is None
    assert out["diff"]["counts"] == {"added": 1, "removed": 0, "changed": 0, "unchanged": 0}
    assert "from $0" in out["findings"][0]["message"]


def test_a_baseline_that_is_not_json_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    (tmp_path / "b.json").write_text("{ not json")
    line = one_line_error(guard(tmp_path, "e.jsonl", "--baseline", "b.json"))
    assert line.startswith("costkit: --baseline b.json: not JSON: ")


def test_a_baseline_that_is_not_a_guard_output_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    check = run_costkit("check", "--json", "e.jsonl", cwd=tmp_path, env={"XDG_DATA_HOME": str(tmp_path)})
    assert check.returncode == 0 and '"requests"' in check.stdout
    (tmp_path / "check.json").write_text(check.stdout)
    line = one_line_error(guard(tmp_path, "e.jsonl", "--baseline", "check.json"))
    assert line == (
        "costkit: --baseline check.json: not a costkit guard --json output "
        "(its \"schema\" is None, not 'costkit.guard/1')"
    )


def test_a_baseline_of_another_schema_version_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    document = json.loads(guard(tmp_path, "e.jsonl", "--json").stdout)
    document["schema"] = "costkit.guard/2"
    (tmp_path / "b.json").write_text(json.dumps(document))
    line = one_line_error(guard(tmp_path, "e.jsonl", "--baseline", "b.json"))
    assert line == (
        "costkit: --baseline b.json: schema 'costkit.guard/2' is not one this costkit reads "
        "(it reads 'costkit.guard/1')"
    )


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: d.update(requests={}), '"requests" is not a list'),
        (
            lambda d: d["requests"][0].update(max_cost_nanousd="12"),
            "requests[0].max_cost_nanousd: not a non-negative",
        ),
        (
            lambda d: d["requests"][0].update(max_cost_nanousd=1.5),
            "requests[0].max_cost_nanousd: not a non-negative",
        ),
        (lambda d: d["requests"][0].pop("file"), "requests[0].file: not a string"),
        (lambda d: d["requests"].append(dict(d["requests"][0])), "requests[1]: e.jsonl line 1 appears twice"),
    ],
)
def test_a_damaged_baseline_is_bad_input_naming_the_entry(tmp_path, damage, problem):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    document = json.loads(guard(tmp_path, "e.jsonl", "--json").stdout)
    damage(document)
    (tmp_path / "b.json").write_text(json.dumps(document))
    line = one_line_error(guard(tmp_path, "e.jsonl", "--baseline", "b.json"))
    assert line.startswith(f"costkit: --baseline b.json: {problem}")


def test_a_missing_baseline_is_bad_input(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [body("x")])
    line = one_line_error(guard(tmp_path, "e.jsonl", "--baseline", "nowhere.json"))
    assert line == "costkit: --baseline nowhere.json: No such file or directory"


def test_an_unknown_ref_and_a_directory_outside_git_are_bad_input(tmp_path):
    repo = _repo_with_two_commits(tmp_path)
    line = one_line_error(guard(repo, "evals/grading.jsonl", "--base-ref", "no-such-branch"))
    assert line.startswith("costkit: --base-ref no-such-branch: not a commit in the repository at ")
    line = one_line_error(guard(repo, "evals/grading.jsonl", "--base-ref", "--output=/tmp/x"))
    assert line.startswith("costkit: --base-ref --output=/tmp/x: not a commit")
    outside = tmp_path / "plain"
    write_jsonl(outside / "e.jsonl", [body("x")])
    line = one_line_error(
        guard(outside, "e.jsonl", "--base-ref", "HEAD", env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    )
    assert line.startswith("costkit: --base-ref HEAD: not a git repository")


def test_a_malformed_file_at_the_ref_is_bad_input_naming_ref_file_and_line(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "e.jsonl").write_text(json.dumps(body("fine")) + "\n{broken\n")
    commit_all(repo, "a broken line")
    write_jsonl(repo / "e.jsonl", [body("fine"), body("mended")])
    line = one_line_error(guard(repo, "e.jsonl", "--base-ref", "HEAD"))
    assert line.startswith("costkit: HEAD:e.jsonl:2: invalid JSON: ")
