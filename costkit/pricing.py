"""The price book: dated prices per model and endpoint host, and exact costs in integer nano-USD.

Prices are USD per 1,000,000 tokens, held as ``Decimal``. Every entry has an id
and an effective-from date; a cost names the entry it was charged by, so
history is never silently re-priced. ``usage.prompt_tokens`` includes the cached
tokens, so ``cost = (prompt - cached) * input + cached * cached_input +
completion * output``. A model with no price is an error, never $0.

Models in the catalogue are looked up by any alias (``openai/gpt-4.1`` is
``gpt-4.1``); a model the catalogue does not know (``openai/gpt-5``) is priced
only by entries naming it exactly as written. An entry may name the endpoint
``host`` it applies to: for a request to that host, the newest host entry in
effect wins; only when none is in effect does the newest entry without a host
apply. An entry with a host never applies to any other host.

Users add or override entries in a TOML file (``COSTKIT_PRICES`` or ``--prices``)::

    [[price]]
    id = "qubrid-gpt-4.1-2026-01"
    model = "openai/gpt-4.1"        # any alias
    effective_from = 2026-01-01
    input = "2.00"                  # USD per 1M tokens (string or number)
    cached_input = "0.50"
    output = "8.00"
    # cache_write = "2.50"          # only for models that bill cache writes
    # host = "platform.qubrid.com"  # only for requests to this host

An entry with the id of an existing one replaces it.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from costkit.counting.models import resolve_model
from costkit.errors import InvalidUsage, PriceBookError, UnknownModel
from costkit.money import money_context, to_usd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRICES_ENV = "COSTKIT_PRICES"
_NANO_PER_MILLION_TOKENS_USD = 1000  # $1 per 1M tokens = 1000 nano-USD per token


@dataclass(frozen=True, slots=True)
class Price:
    """One dated price entry; rates are USD per 1M tokens."""

    id: str
    model: str
    effective_from: date
    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_write: Decimal | None = None
    host: str | None = None
    """The endpoint host this entry is for (lower case); None: every host without an entry of its own."""


@dataclass(frozen=True, slots=True)
class Cost:
    """The exact cost of one request, and the price entry that produced it."""

    nanousd: int
    price_id: str
    model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cache_write_tokens: int = 0

    @property
    def usd(self) -> Decimal:
        return to_usd(self.nanousd)


BUILTIN_PRICES: tuple[Price, ...] = (
    Price(
        "gpt-4.1@2025-04-14", "gpt-4.1", date(2025, 4, 14), Decimal("2.00"), Decimal("0.50"), Decimal("8.00")
    ),
    Price(
        "gpt-4.1-mini@2025-04-14",
        "gpt-4.1-mini",
        date(2025, 4, 14),
        Decimal("0.40"),
        Decimal("0.10"),
        Decimal("1.60"),
    ),
    Price(
        "gpt-4.1-nano@2025-04-14",
        "gpt-4.1-nano",
        date(2025, 4, 14),
        Decimal("0.10"),
        Decimal("0.025"),
        Decimal("0.40"),
    ),
)


def _check_count(name: str, value: object) -> int:
    if type(value) is not int:
        raise InvalidUsage(f"{name} must be an integer, not {value!r}")
    if value < 0:
        raise InvalidUsage(f"{name} must not be negative, got {value}")
    return value


def canonical_model(model: str) -> str:
    """A catalogue model's canonical id (any alias), else the name exactly as written."""
    try:
        return resolve_model(model).id
    except UnknownModel:
        return model


def normalise_host(host: str) -> str:
    """A host as rows store it: lower case, no trailing dot."""
    return host.strip().lower().rstrip(".")


def _as_date(at: date | datetime | None) -> date:
    if at is None:
        return datetime.now(timezone.utc).date()
    if isinstance(at, datetime):
        return (at.astimezone(timezone.utc) if at.tzinfo else at).date()
    return at


@dataclass(frozen=True)
class PriceBook:
    """Dated price entries; look-ups pick the newest entry in effect at a moment."""

    prices: tuple[Price, ...]
    _by_model: dict[str, list[Price]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_model: dict[str, list[Price]] = {}
        for price in self.prices:
            by_model.setdefault(price.model, []).append(price)
        for entries in by_model.values():
            entries.sort(key=lambda p: p.effective_from)
        object.__setattr__(self, "_by_model", by_model)

    @classmethod
    def builtin(cls) -> PriceBook:
        return cls(BUILTIN_PRICES)

    def with_prices(self, extra: Iterable[Price]) -> PriceBook:
        """A new book with ``extra`` added; an entry with an existing id replaces it."""
        merged = {p.id: p for p in self.prices}
        for price in extra:
            merged.pop(price.id, None)
            merged[price.id] = price
        return PriceBook(tuple(merged.values()))

    def with_file(self, path: str | os.PathLike[str]) -> PriceBook:
        return self.with_prices(load_prices(path))

    def price_for(self, model: str, at: date | datetime | None = None, host: str | None = None) -> Price:
        """The entry in effect for ``model`` at ``at`` (default: now, UTC) for requests to ``host``.

        Among the entries for ``host``, the newest in effect wins; without one, the newest
        entry without a host. Raises ``UnknownModel`` when nothing is in effect.
        """
        canonical = canonical_model(model)
        day = _as_date(at)
        wanted = normalise_host(host) if host else None
        general: Price | None = None
        specific: Price | None = None
        for price in self._by_model.get(canonical, ()):  # sorted by date; a later file entry wins a tie
            if price.effective_from > day:
                break
            if price.host is None:
                general = price
            elif price.host == wanted:
                specific = price
        chosen = specific or general
        if chosen is None:
            where = f" at host {wanted}" if wanted else ""
            raise UnknownModel(
                f"{canonical} at {day.isoformat()}{where}", sorted(self._by_model), what="price for"
            )
        return chosen

    def cost(
        self,
        model: str,
        input_tokens: int,
        cached_input_tokens: int = 0,
        output_tokens: int = 0,
        at: date | datetime | None = None,
        *,
        cache_write_tokens: int = 0,
        host: str | None = None,
    ) -> Cost:
        """Exact cost; ``input_tokens`` is the API's ``prompt_tokens`` (it includes cached ones).

        ``host`` is the endpoint host the request went to (see ``price_for``).
        """
        _check_count("input_tokens", input_tokens)
        _check_count("cached_input_tokens", cached_input_tokens)
        _check_count("output_tokens", output_tokens)
        _check_count("cache_write_tokens", cache_write_tokens)
        if cached_input_tokens + cache_write_tokens > input_tokens:
            raise InvalidUsage(
                f"cached_input_tokens ({cached_input_tokens}) + cache_write_tokens ({cache_write_tokens}) "
                f"exceed input_tokens ({input_tokens}); prompt tokens include cached ones"
            )
        price = self.price_for(model, at, host)
        uncached = input_tokens - cached_input_tokens - cache_write_tokens
        write_rate = price.input if price.cache_write is None else price.cache_write
        with money_context():  # never the application's own Decimal precision or rounding
            usd_millionths = (
                uncached * price.input
                + cached_input_tokens * price.cached_input
                + cache_write_tokens * write_rate
                + output_tokens * price.output
            )
            nano = (usd_millionths * _NANO_PER_MILLION_TOKENS_USD).to_integral_value(rounding=ROUND_HALF_EVEN)
        return Cost(
            int(nano),
            price.id,
            price.model,
            input_tokens,
            cached_input_tokens,
            output_tokens,
            cache_write_tokens,
        )


def _rate(entry: Mapping[str, Any], key: str, where: str) -> Decimal | None:
    """The rate under ``key``, or None when the entry has none."""
    if key not in entry:
        return None
    raw = entry[key]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
        raise PriceBookError(f"{where}.{key}: must be a number of USD per 1M tokens, not {raw!r}")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise PriceBookError(f"{where}.{key}: not a number: {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise PriceBookError(f"{where}.{key}: must be a finite, non-negative number, not {raw!r}")
    return value


def _required_rate(entry: Mapping[str, Any], key: str, where: str) -> Decimal:
    rate = _rate(entry, key, where)
    if rate is None:
        raise PriceBookError(f"{where}: missing {key!r}")
    return rate


def _price_from_entry(entry: object, where: str) -> Price:
    if not isinstance(entry, dict):
        raise PriceBookError(f"{where}: must be a table")
    unknown = set(entry) - {
        "id",
        "model",
        "effective_from",
        "input",
        "cached_input",
        "output",
        "cache_write",
        "host",
    }
    if unknown:
        raise PriceBookError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    for key in ("id", "model", "effective_from"):
        if key not in entry:
            raise PriceBookError(f"{where}: missing {key!r}")
    price_id, model, effective = entry["id"], entry["model"], entry["effective_from"]
    if not isinstance(price_id, str) or not price_id:
        raise PriceBookError(f"{where}.id: must be a non-empty string")
    if not isinstance(model, str) or not model.strip() or model != model.strip():
        raise PriceBookError(f"{where}.model: must be a non-empty model name without surrounding spaces")
    canonical = canonical_model(model)  # a model the catalogue does not know is kept as written
    if isinstance(effective, datetime):
        effective = effective.date()
    elif isinstance(effective, str):
        try:
            effective = date.fromisoformat(effective)
        except ValueError:
            raise PriceBookError(f"{where}.effective_from: not a date (YYYY-MM-DD): {effective!r}") from None
    if not isinstance(effective, date):
        raise PriceBookError(f"{where}.effective_from: must be a date (YYYY-MM-DD)")
    input_rate, cached_rate, output_rate = (
        _required_rate(entry, k, where) for k in ("input", "cached_input", "output")
    )
    return Price(
        price_id,
        canonical,
        effective,
        input_rate,
        cached_rate,
        output_rate,
        _rate(entry, "cache_write", where),
        _host(entry.get("host"), where),
    )


def _host(raw: object, where: str) -> str | None:
    """An entry's ``host``: a bare host name or IP address (no scheme, port or path)."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise PriceBookError(f"{where}.host: must be a non-empty host name such as 'platform.qubrid.com'")
    host = normalise_host(raw)
    bare = host.strip("[]")
    if any(c in host for c in "/@?# \t") or (":" in bare and not _is_ipv6(bare)):
        raise PriceBookError(
            f"{where}.host: {raw!r} is not a bare host name (no scheme, port or path), "
            "such as 'platform.qubrid.com'"
        )
    return bare


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def load_prices(path: str | os.PathLike[str]) -> list[Price]:
    """The ``[[price]]`` entries of a TOML file; ``PriceBookError`` names the file and entry."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise PriceBookError(f"{name}: cannot read price file: {exc.strerror or exc}") from None
    try:  # TOML is UTF-8 whatever the locale; a file saved in another encoding is bad input
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"invalid byte {data[exc.start]:#04x} at offset {exc.start}"
        raise PriceBookError(f"{name}: not UTF-8 text ({where})") from None
    try:
        document = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PriceBookError(f"{name}: invalid TOML: {exc}") from None
    unknown = set(document) - {"price"}
    if unknown:
        raise PriceBookError(
            f"{name}: unknown top-level keys {', '.join(sorted(unknown))} (expected [[price]])"
        )
    entries = document.get("price", [])
    if not isinstance(entries, list):
        raise PriceBookError(f"{name}: 'price' must be an array of tables ([[price]])")
    return [_price_from_entry(e, f"{name}: price[{i}]") for i, e in enumerate(entries)]


_default_lock = threading.Lock()
_default_books: dict[str, PriceBook] = {}


def default_price_book() -> PriceBook:
    """The built-in prices plus ``$COSTKIT_PRICES``, read once per value of the variable.

    Raises ``PriceBookError`` (naming the file) when the file cannot be read or is invalid:
    a price book that cannot be read is never taken as "no prices".
    """
    path = os.environ.get(PRICES_ENV) or ""
    book = _default_books.get(path)
    if book is None:
        with _default_lock:
            book = _default_books.get(path)
            if book is None:
                book = PriceBook.builtin().with_file(path) if path else PriceBook.builtin()
                _default_books[path] = book
    return book


def price_book_from(path: str | os.PathLike[str] | None) -> PriceBook:
    """The prices a ``--prices FILE`` option means: built-in plus ``path``, else ``default_price_book()``."""
    return default_price_book() if path is None else PriceBook.builtin().with_file(path)


def cost(
    model: str,
    input_tokens: int,
    cached_input_tokens: int = 0,
    output_tokens: int = 0,
    at: date | datetime | None = None,
    *,
    cache_write_tokens: int = 0,
    price_book: PriceBook | None = None,
    host: str | None = None,
) -> Cost:
    """Exact cost of a request in integer nano-USD (``.usd`` gives the ``Decimal``).

    ``host``: the endpoint host the request went to, for entries that name one.
    """
    book = price_book if price_book is not None else default_price_book()
    return book.cost(
        model,
        input_tokens,
        cached_input_tokens,
        output_tokens,
        at,
        cache_write_tokens=cache_write_tokens,
        host=host,
    )
