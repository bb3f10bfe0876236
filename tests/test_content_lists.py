"""Content-part lists (text parts, images) in a fresh process: the first thing a vision app sends.

Each case runs in a new interpreter, because the defect only showed when no plain-string message
had been counted before (an empty cache answered without hashing the unhashable key).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, run_costkit

VISION = ROOT / "examples" / "vision.json"
# The provider's curl example, counted by hand: 3 per message + "user" (1) + the text part (11),
# the remote image at its worst case (768x2048: 85 + 170 x 8 tiles = 1445), 3 for the priming.
VISION_INPUT_TOKENS = 3 + 1 + 11 + 1445 + 3
# Worst case: every input token at $2.00/1M and the whole 4096-token reserve at $8.00/1M.
VISION_MAX_NANOUSD = VISION_INPUT_TOKENS * 2_000 + 4096 * 8_000


def fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_a_content_list_counts_in_a_fresh_process():
    result = fresh_python(
        """
        import costkit
        message = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
        body = {"model": "gpt-4.1", "messages": [message]}
        print(costkit.count_request(body).input_tokens)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(3 + 1 + 1 + 3)  # message, "user", "hi", priming


def test_the_providers_example_counts_in_a_fresh_process():
    result = fresh_python(
        f"""
        import json, costkit
        body = json.load(open({str(VISION)!r}))
        verdict = costkit.preflight(body)
        print(verdict.input_tokens, verdict.max_cost_nanousd, verdict.fits)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(VISION_INPUT_TOKENS), str(VISION_MAX_NANOUSD), "True"]


def test_cli_count_and_check_take_the_providers_example():
    counted = run_costkit("count", "--json", str(VISION))
    assert counted.returncode == 0, counted.stderr
    (request,) = json.loads(counted.stdout)["requests"]
    assert request["input_tokens"] == VISION_INPUT_TOKENS == 1463
    assert request["breakdown"]["images"] == 1445

    checked = run_costkit("check", "--json", str(VISION))
    assert checked.returncode == 0, checked.stderr
    verdict = json.loads(checked.stdout)
    assert verdict["total_max_cost_usd"] == "0.035694"
    assert verdict["total_max_cost_nanousd"] == VISION_MAX_NANOUSD == 35_694_000


def test_the_wrapper_records_a_content_list_request_in_a_fresh_process(tmp_path):
    """Through the real transport and the openai SDK, in a process that counted nothing before."""
    result = fresh_python(
        f"""
        import json, openai, costkit
        from tests.fakeupstream import FakeUpstream
        body = json.load(open({str(VISION)!r}))
        with FakeUpstream() as upstream, costkit.Ledger({str(tmp_path / "l.sqlite")!r}) as ledger:
            client = costkit.wrap(
                openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0), ledger=ledger
            )
            reply = client.chat.completions.create(
                model=body["model"], messages=body["messages"], max_tokens=4096, stream=False
            )
            ledger.flush()
            (row,) = ledger.rows()
            keys = (
                "status", "estimated_input_tokens", "error", "price_id", "usage_source",
                "input_tokens", "cached_input_tokens", "output_tokens", "cost_nanousd",
            )
            print(json.dumps({{k: row[k] for k in keys}}))
            print(json.dumps(upstream.requests[-1].usage))
        """
    )
    assert result.returncode == 0, result.stderr
    row_line, usage_line = result.stdout.splitlines()
    row, usage = json.loads(row_line), json.loads(usage_line)
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert prompt != VISION_INPUT_TOKENS  # the provider's count of the image is not costkit's worst case
    assert row == {
        "status": "ok",
        "estimated_input_tokens": VISION_INPUT_TOKENS,
        "error": None,
        "price_id": "gpt-4.1@2025-04-14",
        "usage_source": "provider",
        "input_tokens": prompt,
        "cached_input_tokens": cached,
        "output_tokens": completion,
        "cost_nanousd": (prompt - cached) * 2_000 + cached * 500 + completion * 8_000,
    }


def test_an_oversized_content_list_is_blocked_before_sending_in_a_fresh_process(tmp_path):
    result = fresh_python(
        f"""
        import json, openai, costkit
        from tests.fakeupstream import FakeUpstream
        body = json.load(open({str(VISION)!r}))
        with FakeUpstream() as upstream, costkit.Ledger({str(tmp_path / "l.sqlite")!r}) as ledger:
            client = costkit.wrap(
                openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
                ledger=ledger, context_limit=1000,
            )
            try:
                client.chat.completions.create(model=body["model"], messages=body["messages"], stream=False)
            except costkit.ContextWindowExceeded as refusal:
                print("refused", refusal.tokens, refusal.limit)
            ledger.flush()
            (row,) = ledger.rows()
            print(row["status"], len(upstream.requests))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"refused {VISION_INPUT_TOKENS} 1000", "blocked 0"]
