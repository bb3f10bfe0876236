"""Helpers for the ``costkit guard`` tests: request files, expected figures from the published rates and
plain tiktoken (never from costkit), and the real command run in its own data directory."""

from __future__ import annotations

import json
import subprocess
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.conftest import run_costkit
from tests.reference_counts import count_prompt

# GPT-4.1's published prices, in nano-USD per token ($2.00 and $8.00 per million).
INPUT_RATE = 2000
OUTPUT_RATE = 8000
PROVIDER_DEFAULT_MAX_TOKENS = 4096


def body(content: str, max_tokens: int | None = None, model: str = "gpt-4.1") -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    return out


def tokens(b: dict[str, Any]) -> int:
    """The prompt tokens of ``b`` by plain tiktoken and the cookbook rules."""
    return count_prompt(b)


def reserve(b: dict[str, Any], default: int = PROVIDER_DEFAULT_MAX_TOKENS) -> int:
    return b.get("max_completion_tokens") or b.get("max_tokens") or default


def worst_nanousd(b: dict[str, Any], default: int = PROVIDER_DEFAULT_MAX_TOKENS) -> int:
    """Every input token at the input rate plus the whole output reserve at the output rate."""
    return tokens(b) * INPUT_RATE + reserve(b, default) * OUTPUT_RATE


def usd(nanousd: int) -> Decimal:
    return Decimal(nanousd) / 10**9


def write_jsonl(path: Path, bodies: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return path


def write_array(path: Path, bodies: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bodies, indent=2))
    return path


def guard(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed ``costkit guard`` run in ``cwd``, with its own data directory and no step summary
    unless ``env`` names one."""
    with tempfile.TemporaryDirectory(prefix="guard-data-") as data:
        full_env = {"XDG_DATA_HOME": data, "GITHUB_STEP_SUMMARY": "", **(env or {})}
        return run_costkit("guard", *args, env=full_env, cwd=cwd, stdin=stdin)


def guard_json(cwd: Path, *args: str, expect: int = 0, **kwargs: Any) -> dict[str, Any]:
    result = guard(cwd, *args, "--json", **kwargs)
    assert result.returncode == expect, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``costkit: ...`` line of a bad-input run (exit 2, nothing on stdout)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("costkit: ")
    return lines[0]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=guard test", "-c", "user.email=guard@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
