"""The real ``costkit count`` and ``costkit check`` commands: outputs and every exit code."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess

import pytest

from costkit import count_request
from tests.conftest import COSTKIT, ROOT, run_costkit


def small(content: str = "How much did the nightly eval cost?", **extra) -> dict:
    return {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": content}], **extra}


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout == "" or "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("costkit: ")
    return lines[0]


def test_check_on_the_shipped_example_exits_0():
    result = run_costkit("check", "examples/request.json")
    assert result.returncode == 0, result.stderr
    body = json.loads((ROOT / "examples/request.json").read_text())
    tokens = count_request(body).input_tokens
    assert f"  {tokens}  " in result.stdout
    assert "yes" in result.stdout


def test_count_json_reports_exact_tokens_per_line(tmp_path):
    bodies = [small("first"), small("second, a little longer"), small("third", max_tokens=5)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    result = run_costkit("count", "--json", str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [r["source"] for r in out["requests"]] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    expected = [count_request(b).input_tokens for b in bodies]
    assert [r["input_tokens"] for r in out["requests"]] == expected
    assert out["total_input_tokens"] == sum(expected)


def test_count_reads_stdin():
    result = run_costkit("count", "-", stdin=json.dumps(small("from stdin")).encode())
    assert result.returncode == 0, result.stderr
    assert "<stdin>:1" in result.stdout
    assert str(count_request(small("from stdin")).input_tokens) in result.stdout


def test_count_reads_a_pretty_printed_json_array(tmp_path):
    path = tmp_path / "bodies.json"
    path.write_text(json.dumps([small("a"), small("b")], indent=2))
    result = run_costkit("count", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert [r["source"] for r in json.loads(result.stdout)["requests"]] == [f"{path}:1[0]", f"{path}:1[1]"]


def test_check_json_gives_worst_case_money_as_exact_strings(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(small(max_tokens=1000)))
    result = run_costkit("check", "--json", str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    tokens = count_request(small(max_tokens=1000)).input_tokens
    (row,) = out["requests"]
    assert row["max_cost_nanousd"] == tokens * 2000 + 1000 * 8000
    assert out["total_max_cost_nanousd"] == row["max_cost_nanousd"]
    assert isinstance(row["max_cost_usd"], str)
    assert out["ok"] is True


def test_check_exits_1_when_a_request_does_not_fit(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(small("ok")) + "\n" + json.dumps(small("word " * 1_100_000)) + "\n")
    result = run_costkit("check", str(path))
    assert result.returncode == 1
    assert f"{path}:2: does not fit" in result.stderr
    assert "NO" in result.stdout


def test_check_exits_1_when_the_worst_case_exceeds_max_usd(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(small(max_tokens=1000)))  # worst case >= $0.008
    assert run_costkit("check", "--max-usd", "0.005", str(path)).returncode == 1
    assert run_costkit("check", "--max-usd", "0.05", str(path)).returncode == 0


def test_check_applies_a_price_file(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nid = "half"\nmodel = "gpt-4.1"\neffective_from = 2026-01-01\n'
        'input = "1"\ncached_input = "0.25"\noutput = "4"\n'
    )
    path = tmp_path / "one.json"
    path.write_text(json.dumps(small(max_tokens=1000)))
    result = run_costkit("check", "--json", "--prices", str(prices), str(path))
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["requests"]
    assert row["price_id"] == "half"
    assert row["max_cost_nanousd"] == count_request(small()).input_tokens * 1000 + 1000 * 4000


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}\n{"model": \n',
            "bad.jsonl:2: invalid JSON",
        ),
        (
            '{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}\n',
            "bad.jsonl:1: unknown model 'gpt-9'",
        ),
        (
            '{"model": "gpt-4.1", "messages": [{"role": "user", "content": 5}]}\n',
            "bad.jsonl:1: messages[0].content",
        ),
        ("\n\n", "no request bodies"),
        (b"\xff\xfe{}".decode("latin-1"), "invalid JSON"),
    ],
)
@pytest.mark.parametrize("command", ["count", "check"])
def test_bad_input_exits_2_with_one_line_naming_file_and_line(tmp_path, command, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result = run_costkit(command, str(path))
    assert result.returncode == 2
    assert expected in one_line_error(result)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "missing-file.json"],
        ["check", "--max-usd", "lots", "examples/request.json"],
        ["check", "--prices", "missing-prices.toml", "examples/request.json"],
        ["check", "--no-such-option", "examples/request.json"],
        ["check", "--context-limit", "0", "examples/request.json"],
        ["count"],
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(args):
    result = run_costkit(*args)
    assert result.returncode == 2
    one_line_error(result)


def test_progress_bar_goes_to_stderr_for_a_long_jsonl_file(tmp_path):
    path = tmp_path / "long.jsonl"
    line = json.dumps(small("a fairly ordinary request, repeated to make a long file " * 4)) + "\n"
    path.write_text(line * (2 * 1024 * 1024 // len(line)))
    out_read, out_write = os.pipe()
    err_master, err_slave = pty.openpty()  # stderr is a terminal, stdout a pipe
    proc = subprocess.Popen(
        [COSTKIT, "count", "--json", str(path)], stdout=out_write, stderr=err_slave, cwd=ROOT
    )
    os.close(out_write)
    os.close(err_slave)
    stdout, stderr = b"", b""
    while True:
        ready, _, _ = select.select([out_read, err_master], [], [], 60)
        if not ready:
            break
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if fd == out_read:
                stdout += chunk
            else:
                stderr += chunk
            if not chunk:
                ready = None
        if ready is None and proc.poll() is not None:
            break
    proc.wait(timeout=60)
    assert proc.returncode == 0
    assert b"100%" in stderr
    assert b"%" not in stdout.split(b"\n")[0]
    assert json.loads(stdout)["total_input_tokens"] > 0


def test_a_price_file_saved_in_another_encoding_exits_2_with_one_line(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_bytes("[[price]]\nid = 'caf\u00e9'\n".encode("latin-1"))
    result = run_costkit("check", "--prices", str(prices), "examples/request.json")
    assert result.returncode == 2
    assert one_line_error(result) == f"costkit: {prices}: not UTF-8 text (invalid byte 0xe9 at offset 19)"
