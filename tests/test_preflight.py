"""preflight: the context-window verdict, the output reserve, worst-case cost, the fast path."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costkit import DEFAULT_OUTPUT_RESERVE, InvalidRequest, count_request, preflight


def body(content: str = "Hello there", **extra) -> dict:
    return {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": content}], **extra}


def test_small_request_fits_without_running_the_tokenizer():
    verdict = preflight(body())
    assert verdict.fits
    assert not verdict.exact  # decided from the byte bound alone
    assert verdict.context_limit == 1_047_576


def test_exact_figures_are_computed_when_asked_for():
    request = body(max_tokens=100)
    verdict = preflight(request)
    expected = count_request(request).input_tokens
    assert verdict.input_tokens == expected
    assert verdict.exact
    assert verdict.headroom == 1_047_576 - expected - 100


def test_reserve_prefers_max_completion_tokens_then_max_tokens_then_default():
    assert preflight(body(max_completion_tokens=10, max_tokens=20)).output_reserve == 10
    assert preflight(body(max_tokens=20)).output_reserve == 20
    assert preflight(body()).output_reserve == DEFAULT_OUTPUT_RESERVE == 4096
    assert preflight(body(), default_output_reserve=999).output_reserve == 999


def test_worst_case_cost_is_all_input_uncached_plus_the_whole_reserve():
    request = body(max_tokens=1000)
    verdict = preflight(request, exact=True)
    expected_nano = verdict.input_tokens * 2000 + 1000 * 8000
    assert verdict.max_cost_nanousd == expected_nano
    assert verdict.max_cost_usd == Decimal(expected_nano).scaleb(-9)


def test_reserve_above_the_maximum_output_is_flagged():
    assert preflight(body(max_tokens=32_769)).reserve_exceeds_max_output
    assert not preflight(body(max_tokens=32_768)).reserve_exceeds_max_output


def test_a_request_that_cannot_fit_is_refused_with_its_overflow():
    text = "costkit " * 1_100_000  # ~1.1M tokens
    verdict = preflight(body(text, max_tokens=4096))
    assert not verdict.fits
    assert verdict.exact  # the bound was not decisive, so it counted
    assert verdict.overflow == verdict.input_tokens + 4096 - 1_047_576 > 0


def test_near_the_limit_the_exact_count_decides():
    # More bytes than the window, yet fewer tokens: the bound alone would refuse it.
    text = "abcdefgh " * 120_000  # ~1.08 MB, ~240k tokens
    verdict = preflight(body(text))
    assert verdict.upper_bound + verdict.output_reserve > verdict.context_limit
    assert verdict.fits
    assert verdict.exact


def test_a_smaller_context_limit_applies_a_policy():
    verdict = preflight(body("word " * 2000), context_limit=1000, exact=True)
    assert not verdict.fits
    assert verdict.context_limit == 1000


@pytest.mark.parametrize("value", [0, -5, 1.5, "100", True])
def test_invalid_max_tokens_is_an_invalid_request(value):
    with pytest.raises(InvalidRequest) as caught:
        preflight(body(max_tokens=value))
    assert caught.value.where == "max_tokens"


def test_invalid_context_limit_is_refused():
    with pytest.raises(InvalidRequest):
        preflight(body(), context_limit=0)
