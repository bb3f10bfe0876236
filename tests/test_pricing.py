"""The price book: exact integer money, cached-token maths, dated entries, TOML overrides."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from costkit import InvalidUsage, PriceBook, PriceBookError, UnknownModel, cost
from costkit.money import format_usd, to_usd
from costkit.pricing import BUILTIN_PRICES, PRICES_ENV, Cost, default_price_book, price_book_from


def test_reference_worked_example_is_exactly_0_003532():
    charged = cost("gpt-4.1", input_tokens=2006, cached_input_tokens=1920, output_tokens=300)
    assert charged.nanousd == 3_532_000
    assert type(charged.nanousd) is int
    assert charged.usd == Decimal("0.003532")
    assert str(charged.usd) == "0.003532"
    assert charged.price_id == "gpt-4.1@2025-04-14"


def test_cached_tokens_are_neither_ignored_nor_charged_twice():
    charged = cost("gpt-4.1", 2006, 1920, 300).usd
    assert charged != Decimal("0.006412")  # cache ignored
    assert charged != Decimal("0.007372")  # cached tokens charged twice


@pytest.mark.parametrize(
    ("model", "per_million"),
    [
        ("openai/gpt-4.1", ("2", "0.5", "8")),
        ("gpt-4.1-mini", ("0.4", "0.1", "1.6")),
        ("gpt-4.1-nano-2025-04-14", ("0.1", "0.025", "0.4")),
    ],
)
def test_reference_prices_per_million_tokens(model, per_million):
    million = 1_000_000
    assert cost(model, million).usd == Decimal(per_million[0])
    assert cost(model, million, cached_input_tokens=million).usd == Decimal(per_million[1])
    assert cost(model, 0, output_tokens=million).usd == Decimal(per_million[2])


def test_a_single_nano_token_is_priced_exactly():
    assert cost("gpt-4.1-nano", 1, 1).nanousd == 25  # $0.025 per million cached tokens


@pytest.mark.parametrize(
    "args",
    [(-1, 0, 0), (10, -1, 0), (10, 0, -5), (10, 11, 0), (1.5, 0, 0), (True, 0, 0), ("10", 0, 0)],
)
def test_impossible_counts_are_errors(args):
    with pytest.raises(InvalidUsage):
        cost("gpt-4.1", *args)


def test_unknown_model_is_an_error_never_zero():
    with pytest.raises(UnknownModel):
        cost("gpt-5", 100)


def test_no_price_before_the_first_effective_date():
    with pytest.raises(UnknownModel, match="2020-01-01"):
        cost("gpt-4.1", 100, at=date(2020, 1, 1))


def write_prices(tmp_path, text: str):
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_a_dated_override_applies_from_its_date_and_history_keeps_its_price(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "qubrid-gpt-4.1-2026-06"
        model = "openai/gpt-4.1"
        effective_from = 2026-06-01
        input = "1.50"
        cached_input = 0.375
        output = 6
        """,
    )
    book = PriceBook.builtin().with_file(path)
    new = book.cost("gpt-4.1", 1_000_000, 0, 0, at=datetime(2026, 6, 1, tzinfo=timezone.utc))
    old = book.cost("gpt-4.1", 1_000_000, 0, 0, at=date(2026, 5, 31))
    assert (new.usd, new.price_id) == (Decimal("1.5"), "qubrid-gpt-4.1-2026-06")
    assert (old.usd, old.price_id) == (Decimal("2"), "gpt-4.1@2025-04-14")
    cached = book.cost("gpt-4.1", 1_000_000, 1_000_000, 0, at=date(2026, 7, 1))
    assert cached.nanousd == 375_000_000  # the TOML float 0.375 is read as an exact decimal


def test_an_entry_with_an_existing_id_replaces_it(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "gpt-4.1@2025-04-14"
        model = "gpt-4.1"
        effective_from = 2025-04-14
        input = "3"
        cached_input = "1"
        output = "9"
        """,
    )
    book = PriceBook.builtin().with_file(path)
    assert book.cost("gpt-4.1", 1_000_000).usd == Decimal("3")
    assert sum(p.model == "gpt-4.1" for p in book.prices) == 1


def test_cache_write_rates_can_be_expressed(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "future"
        model = "gpt-4.1"
        effective_from = 2026-01-01
        input = "2"
        cached_input = "0.5"
        output = "8"
        cache_write = "2.5"
        """,
    )
    book = PriceBook.builtin().with_file(path)
    charged = book.cost("gpt-4.1", 2_000_000, 0, 0, at=date(2026, 2, 1), cache_write_tokens=1_000_000)
    assert charged.usd == Decimal("4.5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[price]]\nid = 'x'\n", "missing 'model'"),
        ("[[price]\n", "invalid TOML"),
        (
            "[[price]]\nid='x'\nmodel=''\neffective_from=2026-01-01\ninput='1'\ncached_input='1'\noutput='1'\n",
            "non-empty model name",
        ),
        (
            "[[price]]\nid='x'\nmodel='gpt-4.1'\nhost='https://platform.qubrid.com/v1'\n"
            "effective_from=2026-01-01\ninput='1'\ncached_input='1'\noutput='1'\n",
            "not a bare host name",
        ),
        (
            "[[price]]\nid='x'\nmodel='gpt-4.1'\nhost='platform.qubrid.com:443'\n"
            "effective_from=2026-01-01\ninput='1'\ncached_input='1'\noutput='1'\n",
            "not a bare host name",
        ),
        (
            "[[price]]\nid='x'\nmodel='gpt-4.1'\nhost=7\n"
            "effective_from=2026-01-01\ninput='1'\ncached_input='1'\noutput='1'\n",
            "host: must be a non-empty host name",
        ),
        (
            "[[price]]\nid='x'\nmodel='gpt-4.1'\neffective_from=2026-01-01\ninput='-1'\ncached_input='1'\noutput='1'\n",
            "non-negative",
        ),
        (
            "[[price]]\nid='x'\nmodel='gpt-4.1'\neffective_from='soon'\ninput='1'\ncached_input='1'\noutput='1'\n",
            "not a date",
        ),
        (
            "[[price]]\nid='x'\nmodel='gpt-4.1'\neffective_from=2026-01-01\ninput='1'\ncached_input='1'\n",
            "missing 'output'",
        ),
        ("[[prices]]\n", "unknown top-level"),
    ],
)
def test_bad_price_files_name_the_file_and_entry(tmp_path, text, message):
    path = write_prices(tmp_path, text)
    with pytest.raises(PriceBookError) as caught:
        PriceBook.builtin().with_file(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_costkit_prices_environment_variable_is_read_on_first_use(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "env-override"
        model = "gpt-4.1-mini"
        effective_from = 2025-05-01
        input = "0.2"
        cached_input = "0.05"
        output = "0.8"
        """,
    )
    code = "import costkit; c = costkit.cost('gpt-4.1-mini', 1000000); print(c.usd, c.price_id)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"COSTKIT_PRICES": str(path)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.2", "env-override"]


def test_money_helpers_are_exact():
    assert to_usd(1) == Decimal("0.000000001")
    assert format_usd(3_532_000) == "0.003532"
    assert format_usd(10**9) == "1.00"
    assert format_usd(25) == "0.000000025"


# Models outside the catalogue, and prices per endpoint host ---------------------------------

HOST_BOOK = """
[[price]]
id = "qubrid-gpt-4.1-2025-09"
model = "openai/gpt-4.1"
host = "Platform.Qubrid.com"
effective_from = 2025-09-01
input = "3.00"
cached_input = "0.75"
output = "12.00"

[[price]]
id = "qubrid-gpt-4.1-2026-03"
model = "gpt-4.1"
host = "platform.qubrid.com"
effective_from = 2026-03-01
input = "2.50"
cached_input = "0.60"
output = "10.00"

[[price]]
id = "everyone-gpt-4.1-2026-01"
model = "gpt-4.1"
effective_from = 2026-01-01
input = "1.00"
cached_input = "0.25"
output = "4.00"

[[price]]
id = "other-host-gpt-4.1-2025-05"
model = "gpt-4.1"
host = "api.other.example"
effective_from = 2025-05-01
input = "9.00"
cached_input = "9.00"
output = "9.00"
"""


def price_at(book: PriceBook, day: date, host: str | None) -> tuple[str, int]:
    """(price id, nano-USD of 1M input + 1M output tokens) for a request to ``host`` on ``day``."""
    charged = book.cost("openai/gpt-4.1", 1_000_000, 0, 1_000_000, at=day, host=host)
    return charged.price_id, charged.nanousd


def test_an_entry_with_a_host_wins_for_that_host_and_never_applies_elsewhere(tmp_path):
    book = PriceBook.builtin().with_file(write_prices(tmp_path, HOST_BOOK))
    # Before any host entry: the built-in price, for every host.
    assert price_at(book, date(2025, 4, 20), "platform.qubrid.com") == ("gpt-4.1@2025-04-14", 10_000_000_000)
    # A host entry in effect wins for its host (matched case-insensitively)...
    assert price_at(book, date(2025, 10, 1), "PLATFORM.QUBRID.COM") == (
        "qubrid-gpt-4.1-2025-09",
        15_000_000_000,
    )
    # ...even over a newer entry without a host; other hosts keep the host-less entries.
    assert price_at(book, date(2026, 2, 1), "platform.qubrid.com") == (
        "qubrid-gpt-4.1-2025-09",
        15_000_000_000,
    )
    assert price_at(book, date(2026, 2, 1), "api.openai.com") == ("everyone-gpt-4.1-2026-01", 5_000_000_000)
    assert price_at(book, date(2026, 2, 1), None) == ("everyone-gpt-4.1-2026-01", 5_000_000_000)
    # The newest host entry in effect wins among the host's own entries.
    assert price_at(book, date(2026, 3, 1), "platform.qubrid.com") == (
        "qubrid-gpt-4.1-2026-03",
        12_500_000_000,
    )
    # An entry for another host is never used for this one, nor for requests without a host.
    assert price_at(book, date(2025, 6, 1), "api.other.example") == (
        "other-host-gpt-4.1-2025-05",
        18_000_000_000,
    )
    assert price_at(book, date(2025, 6, 1), "platform.qubrid.com") == ("gpt-4.1@2025-04-14", 10_000_000_000)
    assert price_at(book, date(2025, 6, 1), None) == ("gpt-4.1@2025-04-14", 10_000_000_000)


def test_a_host_entry_does_not_make_a_model_priced_at_other_hosts(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "qubrid-gpt-5"
        model = "openai/gpt-5"
        host = "platform.qubrid.com"
        effective_from = 2026-01-01
        input = "1.25"
        cached_input = "0.125"
        output = "10"
        """,
    )
    book = PriceBook.builtin().with_file(path)
    charged = book.cost("openai/gpt-5", 1000, 200, 100, at=date(2026, 1, 2), host="platform.qubrid.com")
    assert charged.nanousd == 800 * 1250 + 200 * 125 + 100 * 10_000
    with pytest.raises(UnknownModel, match=r"api\.openai\.com"):
        book.cost("openai/gpt-5", 1000, at=date(2026, 1, 2), host="api.openai.com")
    with pytest.raises(UnknownModel):
        book.cost("openai/gpt-5", 1000, at=date(2026, 1, 2))


def test_a_model_outside_the_catalogue_is_priced_by_its_name_as_written(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "gpt-5-2026"
        model = "openai/gpt-5"
        effective_from = 2026-01-01
        input = "1.25"
        cached_input = "0.125"
        output = "10"
        """,
    )
    book = PriceBook.builtin().with_file(path)
    (entry,) = [p for p in book.prices if p.id == "gpt-5-2026"]
    assert entry.model == "openai/gpt-5"  # kept as written; catalogue models are canonicalised
    assert book.cost("openai/gpt-5", 1_000_000, 0, 1_000_000, at=date(2026, 2, 1)).usd == Decimal("11.25")
    with pytest.raises(UnknownModel):
        book.cost("gpt-5", 1, at=date(2026, 2, 1))  # another name: not guessed
    with pytest.raises(UnknownModel, match="2025-12-31"):
        book.cost("openai/gpt-5", 1, at=date(2025, 12, 31))


def test_a_price_file_that_is_not_utf8_is_a_price_book_error_naming_the_file(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_bytes("[[price]]\nid = 'caf\u00e9'\n".encode("latin-1"))  # saved by a latin-1 editor
    with pytest.raises(PriceBookError) as caught:
        PriceBook.builtin().with_file(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (invalid byte 0xe9 at offset 19)"


ENTRY = "[[price]]\nid = 'x'\nmodel = 'gpt-4.1'\neffective_from = 2026-01-01\n"
RATES = "input = '2'\ncached_input = '0.5'\noutput = '8'\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("price = 5\n", "'price' must be an array of tables ([[price]])"),
        ("price = [1]\n", "price[0]: must be a table"),
        ("rates = 1\nmodels = 2\n", "unknown top-level keys models, rates (expected [[price]])"),
        (ENTRY + RATES + "ouput = '8'\ncolour = 'red'\n", "price[0]: unknown keys colour, ouput"),
        ("[[price]]\nmodel = 'gpt-4.1'\n", "price[0]: missing 'id'"),
        (ENTRY.replace("'x'", "5") + RATES, "price[0].id: must be a non-empty string"),
        (ENTRY.replace("'x'", "''") + RATES, "price[0].id: must be a non-empty string"),
        (
            ENTRY.replace("'gpt-4.1'", "' gpt-4.1'") + RATES,
            "price[0].model: must be a non-empty model name without surrounding spaces",
        ),
        (
            ENTRY.replace("2026-01-01", "'soon'") + RATES,
            "price[0].effective_from: not a date (YYYY-MM-DD): 'soon'",
        ),
        (
            ENTRY.replace("2026-01-01", "20260101") + RATES,
            "price[0].effective_from: must be a date (YYYY-MM-DD)",
        ),
        (ENTRY + "input = '2'\ncached_input = '0.5'\n", "price[0]: missing 'output'"),
        (
            ENTRY + RATES.replace("'2'", "true"),
            "price[0].input: must be a number of USD per 1M tokens, not True",
        ),
        (
            ENTRY + RATES.replace("'8'", "[8]"),
            "price[0].output: must be a number of USD per 1M tokens, not [8]",
        ),
        (
            ENTRY + RATES.replace("'0.5'", "2026-01-01"),
            "price[0].cached_input: must be a number of USD per 1M tokens, not datetime.date(2026, 1, 1)",
        ),
        (ENTRY + RATES.replace("'2'", "'two'"), "price[0].input: not a number: 'two'"),
        (ENTRY + RATES + "cache_write = '2,50'\n", "price[0].cache_write: not a number: '2,50'"),
        (
            ENTRY + RATES.replace("'2'", "'-2'"),
            "price[0].input: must be a finite, non-negative number, not '-2'",
        ),
        (
            ENTRY + RATES.replace("'8'", "'Infinity'"),
            "price[0].output: must be a finite, non-negative number, not 'Infinity'",
        ),
        (
            ENTRY + RATES + "host = ''\n",
            "price[0].host: must be a non-empty host name such as 'platform.qubrid.com'",
        ),
        (
            ENTRY + RATES + "host = 'platform.qubrid.com:443'\n",
            "price[0].host: 'platform.qubrid.com:443' is not a bare host name (no scheme, port or path), "
            "such as 'platform.qubrid.com'",
        ),
        (
            ENTRY + RATES + "host = 'user@platform.qubrid.com'\n",
            "price[0].host: 'user@platform.qubrid.com' is not a bare host name (no scheme, port or path), "
            "such as 'platform.qubrid.com'",
        ),
        (
            ENTRY + RATES + "[[price]]\nid = 'y'\n",
            "price[1]: missing 'model'",
        ),
    ],
)
def test_each_bad_price_file_gets_one_exact_line_naming_the_file_entry_and_field(tmp_path, text, message):
    path = write_prices(tmp_path, text)
    with pytest.raises(PriceBookError) as caught:
        PriceBook.builtin().with_file(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_missing_price_file_says_so_in_plain_words(tmp_path):
    path = tmp_path / "no-such-prices.toml"
    with pytest.raises(PriceBookError) as caught:
        PriceBook.builtin().with_file(path)
    assert str(caught.value) == f"{path}: cannot read price file: No such file or directory"


def test_a_zero_rate_is_a_price_free_tokens_are_not_unknown_ones(tmp_path):
    path = write_prices(
        tmp_path,
        """
        [[price]]
        id = "free-cache"
        model = "gpt-4.1"
        effective_from = 2026-01-01
        input = "2"
        cached_input = 0
        output = "8"

        [[price]]
        id = "self-hosted"
        model = "llama-local"
        effective_from = 2026-01-01
        input = "0"
        cached_input = "0"
        output = "0"
        """,
    )
    book = PriceBook.builtin().with_file(path)
    charged = book.cost("gpt-4.1", 1000, 600, 10, at=date(2026, 1, 2))
    assert (charged.nanousd, charged.price_id) == (400 * 2000 + 10 * 8000, "free-cache")
    free = book.cost("llama-local", 5000, 0, 500, at=date(2026, 1, 2))
    assert (free.nanousd, free.price_id) == (0, "self-hosted")


@pytest.mark.parametrize(("written", "host"), [("[::1]", "::1"), ("::1", "::1"), ("[FD00::5]", "fd00::5")])
def test_an_ipv6_host_with_or_without_brackets_prices_requests_to_that_address(tmp_path, written, host):
    # httpx gives the host of http://[::1]:8080/v1 as "::1": that is what an entry must match.
    path = write_prices(tmp_path, ENTRY + RATES + f"host = '{written}'\n")
    book = PriceBook.builtin().with_file(path)
    (entry,) = [p for p in book.prices if p.id == "x"]
    assert entry.host == host
    assert book.price_for("gpt-4.1", date(2026, 1, 2), host=written.strip("[]")).id == "x"
    assert book.price_for("gpt-4.1", date(2026, 1, 2), host="127.0.0.1").id == "gpt-4.1@2025-04-14"


def test_an_effective_from_written_as_a_toml_datetime_takes_effect_on_its_date(tmp_path):
    path = write_prices(tmp_path, ENTRY.replace("2026-01-01", "2026-03-01T00:00:00Z") + RATES)
    book = PriceBook.builtin().with_file(path)
    (entry,) = [p for p in book.prices if p.id == "x"]
    assert entry.effective_from == date(2026, 3, 1)
    assert book.price_for("gpt-4.1", date(2026, 3, 1)).id == "x"
    assert book.price_for("gpt-4.1", date(2026, 2, 28)).id == "gpt-4.1@2025-04-14"


def test_a_price_file_with_no_entries_leaves_the_builtin_prices(tmp_path):
    path = write_prices(tmp_path, "# prices for the team go here\n")
    assert PriceBook.builtin().with_file(path).prices == BUILTIN_PRICES


def test_an_entry_issued_again_later_is_the_latest_word_on_its_date(tmp_path):
    team = write_prices(
        tmp_path,
        ENTRY.replace("'x'", "'a'")
        + RATES.replace("'2'", "'3'")
        + ENTRY.replace("'x'", "'b'")
        + RATES.replace("'2'", "'4'"),
    )
    book = PriceBook.builtin().with_file(team)
    assert book.price_for("gpt-4.1", date(2026, 1, 2)).id == "b"  # the later of two entries on a date wins
    mine = tmp_path / "mine.toml"
    mine.write_text(ENTRY.replace("'x'", "'a'") + RATES.replace("'2'", "'2.5'"))
    corrected = book.with_file(mine)
    chosen = corrected.price_for("gpt-4.1", date(2026, 1, 2))
    assert (chosen.id, chosen.input) == ("a", Decimal("2.5"))
    assert [p.id for p in corrected.prices if p.model == "gpt-4.1"] == ["gpt-4.1@2025-04-14", "b", "a"]


def test_the_prices_option_means_builtin_plus_its_file_and_without_it_the_default_book(tmp_path, monkeypatch):
    team = write_prices(tmp_path, ENTRY.replace("'x'", "'team'") + RATES.replace("'2'", "'3'"))
    mine = tmp_path / "mine.toml"
    mine.write_text(ENTRY.replace("'x'", "'mine'") + RATES.replace("'2'", "'1'"))
    monkeypatch.setenv(PRICES_ENV, str(team))
    assert price_book_from(None) is default_price_book()
    assert price_book_from(None).price_for("gpt-4.1", date(2026, 1, 2)).id == "team"
    chosen = price_book_from(mine)  # the option replaces $COSTKIT_PRICES, it does not stack on it
    assert sorted(p.id for p in chosen.prices) == sorted([p.id for p in BUILTIN_PRICES] + ["mine"])
    monkeypatch.delenv(PRICES_ENV)
    assert price_book_from(None).prices == BUILTIN_PRICES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_tokens": 1.5}, "input_tokens must be an integer, not 1.5"),
        ({"input_tokens": -1}, "input_tokens must not be negative, got -1"),
        ({"cached_input_tokens": "3"}, "cached_input_tokens must be an integer, not '3'"),
        ({"output_tokens": -7}, "output_tokens must not be negative, got -7"),
        ({"cache_write_tokens": True}, "cache_write_tokens must be an integer, not True"),
    ],
)
def test_a_count_that_is_not_one_is_refused_naming_its_field(kwargs, message):
    counts = {"input_tokens": 10, **kwargs}
    for price in (cost, PriceBook.builtin().cost):
        with pytest.raises(InvalidUsage) as refused:
            price("gpt-4.1", **counts)
        assert str(refused.value) == message


@pytest.mark.parametrize("host", ["platform.qubrid.com.", " PLATFORM.Qubrid.com. ", "platform.qubrid.com"])
def test_a_host_written_with_its_trailing_dot_or_in_capitals_is_the_same_host(tmp_path, host):
    book = PriceBook.builtin().with_file(write_prices(tmp_path, HOST_BOOK))
    assert price_at(book, date(2025, 10, 1), host) == ("qubrid-gpt-4.1-2025-09", 15_000_000_000)


def test_the_module_cost_passes_cache_writes_on_to_the_book(tmp_path):
    book = PriceBook.builtin().with_file(
        write_prices(
            tmp_path,
            ENTRY.replace("'x'", "'writes'") + RATES + "cache_write = '2.5'\n",
        )
    )
    # 2M prompt tokens of which 1M were written to the cache: 1M at $2 + 1M at $2.50 per million.
    charged = cost("gpt-4.1", 2_000_000, at=date(2026, 2, 1), cache_write_tokens=1_000_000, price_book=book)
    assert (charged.nanousd, charged.price_id, charged.cache_write_tokens) == (
        4_500_000_000,
        "writes",
        1_000_000,
    )


def test_cached_and_written_tokens_together_may_not_exceed_the_prompt():
    book = PriceBook.builtin()
    assert book.cost("gpt-4.1", 10, 4, 0, cache_write_tokens=6).nanousd == 4 * 500 + 6 * 2000
    with pytest.raises(InvalidUsage) as refused:
        book.cost("gpt-4.1", 10, 5, 0, cache_write_tokens=6)
    assert str(refused.value) == (
        "cached_input_tokens (5) + cache_write_tokens (6) exceed input_tokens (10); "
        "prompt tokens include cached ones"
    )


def test_a_cost_carries_the_counts_and_model_it_was_priced_for():
    charged = cost("openai/gpt-4.1", 3_000, 1_024, 500, at=date(2026, 2, 1))
    assert charged == Cost(
        nanousd=(3_000 - 1_024) * 2000 + 1_024 * 500 + 500 * 8000,
        price_id="gpt-4.1@2025-04-14",
        model="gpt-4.1",
        input_tokens=3_000,
        cached_input_tokens=1_024,
        output_tokens=500,
        cache_write_tokens=0,
    )


def test_without_a_date_the_price_in_effect_is_the_one_of_todays_utc_date(tmp_path, monkeypatch):
    """The machine's own zone never picks the price: a zone 14 hours ahead of UTC or 12 behind
    has another date than UTC at any hour, and an entry from that date must not apply yet."""
    now = datetime.now(timezone.utc)
    zone = "Etc/GMT-14" if now.hour >= 10 else "Etc/GMT+12"  # tz database signs are inverted
    local_day = datetime.now(ZoneInfo(zone)).date()
    if local_day < now.date():  # the local zone is behind: an entry from UTC's date would apply already
        entry_day, in_effect = now.date(), "later"
    else:
        entry_day, in_effect = local_day, "gpt-4.1@2025-04-14"
    path = write_prices(
        tmp_path, ENTRY.replace("'x'", "'later'").replace("2026-01-01", entry_day.isoformat()) + RATES
    )
    book = PriceBook.builtin().with_file(path)
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert datetime.now().date() == local_day != now.date()  # the process's local date is not UTC's
        assert book.cost("gpt-4.1", 1).price_id == in_effect
    finally:
        monkeypatch.undo()
        time.tzset()


def test_no_price_in_effect_says_for_which_model_day_and_host():
    book = PriceBook.builtin()
    models = "gpt-4.1, gpt-4.1-mini, gpt-4.1-nano"
    with pytest.raises(UnknownModel) as no_host:
        book.price_for("openai/gpt-4.1", date(2020, 1, 1))
    assert str(no_host.value) == f"unknown price for 'gpt-4.1 at 2020-01-01'; known: {models}"
    with pytest.raises(UnknownModel) as with_host:
        book.price_for("gpt-4.1", date(2020, 1, 1), "Platform.Qubrid.com.")
    assert str(with_host.value) == (
        f"unknown price for 'gpt-4.1 at 2020-01-01 at host platform.qubrid.com'; known: {models}"
    )


def test_an_aware_moment_is_priced_by_its_utc_date_and_a_naive_one_is_taken_as_utc(tmp_path, monkeypatch):
    path = write_prices(
        tmp_path, ENTRY.replace("'x'", "'from-jan-2'").replace("2026-01-01", "2026-01-02") + RATES
    )
    book = PriceBook.builtin().with_file(path)
    berlin = ZoneInfo("Europe/Berlin")
    # 00:30 on 2 January in Berlin is 23:30 on 1 January in UTC: the entry is not in effect yet.
    assert book.price_for("gpt-4.1", datetime(2026, 1, 2, 0, 30, tzinfo=berlin)).id == "gpt-4.1@2025-04-14"
    assert book.price_for("gpt-4.1", datetime(2026, 1, 2, 1, 30, tzinfo=berlin)).id == "from-jan-2"
    # Neither depends on the machine's zone: 12 hours behind UTC, local dates would differ from both.
    monkeypatch.setenv("TZ", "Etc/GMT+12")
    time.tzset()
    try:
        assert book.price_for("gpt-4.1", datetime(2026, 1, 2, 6, 0, tzinfo=timezone.utc)).id == "from-jan-2"
        assert book.price_for("gpt-4.1", datetime(2026, 1, 1, 20, 0)).id == "gpt-4.1@2025-04-14"  # naive: UTC
    finally:
        monkeypatch.undo()
        time.tzset()
