"""Money does not change with the application's Decimal context.

``decimal`` rounds every operation to the calling thread's context, which belongs to the
application: a service that sets ``getcontext().prec = 3`` for its own figures used to get
``cost(...)`` cut to three digits ($2.52 instead of $2.530366) and budget limits rounded with it.
Each case below was wrong before ``costkit.money.MONEY_CONTEXT``.
"""

from __future__ import annotations

import decimal
from datetime import date
from decimal import Decimal

import costkit
from costkit import PriceBook
from costkit.budgets.events import crossings
from costkit.guard.diff import percent
from costkit.money import format_usd, to_usd


def hostile_context() -> decimal.Context:
    return decimal.Context(prec=3, rounding=decimal.ROUND_DOWN)


def test_a_cost_is_exact_whatever_precision_the_application_set():
    with decimal.localcontext(hostile_context()):
        charged = costkit.cost("gpt-4.1", 1_234_567, 0, 7_654)
        assert charged.nanousd == 1_234_567 * 2000 + 7_654 * 8000 == 2_530_366_000
        assert charged.usd == Decimal("2.530366")
        assert format_usd(charged.nanousd) == "2.530366"
        assert to_usd(123_456_789_012) == Decimal("123.456789012")


def test_a_half_nano_rounds_half_even_whatever_rounding_the_application_set(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(
        "[[price]]\nid = 'tiny'\nmodel = 'gpt-4.1'\neffective_from = 2026-01-01\n"
        "input = '0.0005'\ncached_input = '0.0005'\noutput = '0.0005'\n"
    )
    book = PriceBook.builtin().with_file(path)
    # 0.0005 USD per 1M tokens is half a nano-USD a token: 3 tokens = 1.5 nano -> 2; 5 -> 2.5 -> 2.
    for context in (decimal.Context(rounding=decimal.ROUND_DOWN), decimal.Context(rounding=decimal.ROUND_UP)):
        with decimal.localcontext(context):
            assert book.cost("gpt-4.1", 3, at=date(2026, 2, 1)).nanousd == 2
            assert book.cost("gpt-4.1", 5, at=date(2026, 2, 1)).nanousd == 2


def test_budget_limits_warnings_and_guard_percentages_do_not_round_with_the_application():
    with decimal.localcontext(hostile_context()):
        budget = costkit.Budget("team", "25.37", warn_at=(Decimal("0.8"),))
        assert budget.limit_nanousd == 25_370_000_000
        # 80% of $25.37 is $20.296: spend that crosses $20.29 but not $20.296 has not crossed it.
        assert crossings(budget, 0, 20_295_000_000) == []
        assert crossings(budget, 0, 20_296_000_000) == [Decimal("0.8")]
        assert percent(1_234_567, 9_876_543) == Decimal("12.50")
