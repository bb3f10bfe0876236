"""preflight: the context-window verdict, the output reserve, worst-case cost, the fast path."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from costkit import DEFAULT_OUTPUT_RESERVE, InvalidRequest, PriceBook, count_request, preflight


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
    counted_now = preflight(request, exact=True)  # exact=True counts before returning
    assert counted_now.exact and counted_now.count == count_request(request)


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


def test_a_request_that_exactly_fills_the_window_fits_and_one_token_more_does_not():
    request = body(max_tokens=100)
    tokens = count_request(request).input_tokens
    bound = preflight(request).upper_bound
    assert bound > tokens  # "Hello there" has more bytes than tokens: the two paths differ
    # Decided by the byte bound alone: bound + reserve == limit.
    by_bound = preflight(request, context_limit=bound + 100)
    assert (by_bound.fits, by_bound.exact) == (True, False)
    # Decided by the exact count: input + reserve == limit, no token to spare.
    filled = preflight(request, context_limit=tokens + 100)
    assert (filled.fits, filled.exact, filled.headroom, filled.overflow) == (True, True, 0, 0)
    over = preflight(request, context_limit=tokens + 99)
    assert (over.fits, over.headroom, over.overflow) == (False, -1, 1)


def test_a_reserve_the_model_can_produce_exactly_is_not_flagged():
    assert preflight(body(max_completion_tokens=32_768)).reserve_exceeds_max_output is False
    assert preflight(body(max_completion_tokens=32_769)).reserve_exceeds_max_output is True
    assert preflight(body(max_tokens=1)).output_reserve == 1  # the smallest reserve is one token


@pytest.mark.parametrize(
    ("fields", "options", "message"),
    [
        ({"max_tokens": 0}, {}, "max_tokens: must be a positive integer, not 0"),
        ({"max_tokens": "100"}, {}, "max_tokens: must be a positive integer, not '100'"),
        ({"max_completion_tokens": True}, {}, "max_completion_tokens: must be a positive integer, not True"),
        (
            {"max_completion_tokens": -1, "max_tokens": 10},
            {},
            "max_completion_tokens: must be a positive integer, not -1",
        ),
        ({}, {"context_limit": 0}, "context_limit: must be a positive integer, not 0"),
        ({}, {"context_limit": 1.0e6}, "context_limit: must be a positive integer, not 1000000.0"),
        ({}, {"default_output_reserve": 0}, "default_output_reserve: must be a positive integer"),
        ({}, {"default_output_reserve": 10.5}, "default_output_reserve: must be a positive integer"),
    ],
)
def test_bad_limits_and_reserves_get_one_line_naming_the_field_and_the_value(fields, options, message):
    with pytest.raises(InvalidRequest) as caught:
        preflight(body(**fields), **options)
    assert str(caught.value) == message


def test_the_smallest_limits_are_accepted():
    verdict = preflight(body(max_tokens=1), context_limit=1, default_output_reserve=1)
    assert (verdict.context_limit, verdict.output_reserve, verdict.fits) == (1, 1, False)
    assert preflight(body(), default_output_reserve=1).output_reserve == 1


def test_worst_case_cost_uses_the_price_in_effect_at_the_host_and_moment_given(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(
        "[[price]]\nid = 'proxy'\nmodel = 'gpt-4.1'\nhost = 'llm.internal'\neffective_from = 2026-01-01\n"
        "input = '1'\ncached_input = '0.25'\noutput = '4'\n"
    )
    book = PriceBook.builtin().with_file(prices)
    request = body(max_tokens=10)
    tokens = count_request(request).input_tokens
    there = preflight(request, price_book=book, at=date(2026, 1, 2), host="llm.internal")
    assert (there.max_cost.price_id, there.max_cost_nanousd) == ("proxy", tokens * 1000 + 10 * 4000)
    before = preflight(request, price_book=book, at=date(2025, 12, 31), host="llm.internal")
    assert (before.max_cost.price_id, before.max_cost_nanousd) == (
        "gpt-4.1@2025-04-14",
        tokens * 2000 + 10 * 8000,
    )
    elsewhere = preflight(request, price_book=book, at=date(2026, 1, 2), host="api.openai.com")
    assert elsewhere.max_cost.price_id == "gpt-4.1@2025-04-14"


def test_known_image_sizes_tighten_the_bound_and_the_exact_count():
    url = "https://cdn.example.com/receipt.png"
    request = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
        "max_tokens": 50,
    }
    sizes = {url: (512, 512)}  # 85 + 170 * 1 tile, where an unknown remote image counts at its worst, 1445
    unknown = preflight(request)
    known = preflight(request, image_sizes=sizes)
    assert unknown.upper_bound - known.upper_bound == 1445 - 255
    # A window the known size fits is decided by the byte bound alone, with no BPE run.
    tight = preflight(request, image_sizes=sizes, context_limit=known.upper_bound + 50)
    assert (tight.fits, tight.exact) == (True, False)
    assert tight.input_tokens == count_request(request, image_sizes=sizes).input_tokens
    assert unknown.input_tokens - tight.input_tokens == 1445 - 255
