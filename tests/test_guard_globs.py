"""A glob selects the same files at a git ref as Python's ``glob`` selects in the working tree, so a file a
change deleted is found at the base ref and its requests are listed as removed."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

from tests.guard_helpers import body, commit_all, git, guard_json, write_jsonl

TREE = [
    "evals/a.jsonl",
    "evals/x-1.jsonl",
    "evals/[z].jsonl",
    "evals/.hidden.jsonl",
    "evals/.cache/old.jsonl",
    "evals/sub/b.jsonl",
    "evals/sub/deeper/c.jsonl",
    "evals/sub/.skip/d.jsonl",
    "other/e.jsonl",
    ".github/f.jsonl",
]
PATTERNS = [
    "evals/**/*.jsonl",
    "**/*.jsonl",
    "evals/*",
    "evals/.*",
    "evals/x-[0-9].jsonl",
    "evals/[!a]*.jsonl",
    "evals/[[]z].jsonl",
    "*/*/*.jsonl",
    "evals/?.jsonl",
    "evals/**/.skip/*.jsonl",
    ".github/*.jsonl",
]


@pytest.fixture(scope="module")
def committed_tree(tmp_path_factory):
    """A repository holding TREE at HEAD, and what ``glob`` matches there for each pattern."""
    repo = tmp_path_factory.mktemp("globs")
    git(repo, "init", "-q")
    for i, path in enumerate(TREE):
        write_jsonl(repo / path, [body(f"request in {path}", max_tokens=i + 1)])
    commit_all(repo, "every eval")
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        expected = {
            p: sorted(os.path.normpath(f) for f in glob.glob(p, recursive=True) if os.path.isfile(f))
            for p in PATTERNS
        }
    finally:
        os.chdir(cwd)
    return repo, expected


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_glob_at_the_ref_matches_what_glob_matches_in_the_working_tree(committed_tree, pattern, tmp_path):
    repo, expected = committed_tree
    assert expected[pattern], "every pattern matches something"
    # a checkout of HEAD where every file is gone but one the pattern does not match:
    # only the ref still holds the matching files, so all their requests are removed
    work = tmp_path / "work"
    git(repo, "worktree", "add", "-q", "--detach", str(work), "HEAD")
    try:
        for path in TREE:
            (work / path).unlink()
        out = guard_json(work, pattern, "--base-ref", "HEAD")
        removed = sorted({c["file"] for c in out["diff"]["changes"] if c["status"] == "removed"})
        assert removed == expected[pattern]
        assert out["diff"]["counts"]["removed"] == len(expected[pattern])
        assert out["requests"] == []
    finally:
        git(repo, "worktree", "remove", "--force", str(work))
        shutil.rmtree(work, ignore_errors=True)
