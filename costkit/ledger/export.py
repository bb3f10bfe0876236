"""Ledger rows out: CSV, Parquet, JSON lines, and the readable ``tail`` table.

Money leaves as ``cost_nanousd`` (an integer) and ``cost_usd`` (an exact decimal
string such as ``"0.003532000"``): never a float. Nullable counts stay integers
(empty in CSV, null in Parquet and JSON). Times are ISO 8601 UTC.

What reaches a terminal (``tail``) has its control characters escaped: model
names and tags come from upstreams and request headers, and an ANSI escape or a
carriage return in them must not rewrite the screen. Files keep the data as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from costkit.ledger.query import FRAME_COLUMNS, frame_of
from costkit.money import format_usd

FORMATS = ("csv", "parquet", "jsonl")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (ESC, CR, NUL, CSI...), DEL, line separators and bidi overrides."""
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters written as ``\\x1b``, ``\\r``, ``\\u202e``."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def terminal_json(value: Any) -> str:
    """JSON for a terminal: non-ASCII text kept, and every control character as a ``\\u`` escape.

    ``json.dumps`` escapes C0 controls itself but not DEL, C1 (the one-byte CSI) or bidi
    overrides; those can only occur inside JSON strings, where ``\\uXXXX`` means the same.
    """
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def usd_text(amount: Decimal) -> str:
    """An exact decimal string for dollars: ``Decimal('3.532E-3')`` -> ``'0.003532000'``."""
    return format(amount, "f")


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values: ISO times, integer nano-USD and a decimal-string ``cost_usd``."""
    out: dict[str, Any] = {}
    for name in FRAME_COLUMNS:
        value = row[name]
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = usd_text(value)
        out[name] = value
    return out


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[bytes]) -> None:
    for row in rows:
        out.write((json.dumps(plain(row), ensure_ascii=False) + "\n").encode())


def write_csv(rows: list[dict[str, Any]], out: IO[bytes]) -> None:
    frame = frame_of(rows)
    frame["cost_usd"] = [usd_text(v) for v in frame["cost_usd"]]
    for name in ("started_at", "finished_at"):
        frame[name] = [None if v is None else v.isoformat() for v in (r[name] for r in rows)]
    frame["tags"] = [json.dumps(v, ensure_ascii=False, sort_keys=True) for v in frame["tags"]]
    frame["x_metrics"] = [None if v is None else json.dumps(v) for v in frame["x_metrics"]]
    out.write(frame.to_csv(index=False).encode())


def write_parquet(rows: list[dict[str, Any]], out: IO[bytes]) -> None:
    """Parquet with typed columns: UTC timestamps, int64 money, string ``cost_usd``, map ``tags``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    string, int64, stamp = pa.string(), pa.int64(), pa.timestamp("us", tz="UTC")
    types: dict[str, Any] = dict.fromkeys(FRAME_COLUMNS, string)
    types.update(dict.fromkeys(("started_at", "finished_at"), stamp))
    for name in (
        "http_status",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "estimated_input_tokens",
        "cost_nanousd",
        "latency_us",
        "ttft_us",
    ):
        types[name] = int64
    types["stream"] = pa.bool_()
    types["tags"] = pa.map_(string, string)
    data: dict[str, list[Any]] = {name: [] for name in FRAME_COLUMNS}
    for row in rows:
        for name in FRAME_COLUMNS:
            value = row[name]
            if name == "cost_usd":
                value = usd_text(value)
            elif name == "tags":
                value = list(value.items())
            elif name == "x_metrics" and value is not None:
                value = json.dumps(value)
            data[name].append(value)
    schema = pa.schema([(name, types[name]) for name in FRAME_COLUMNS])
    table = pa.Table.from_pydict(data, schema=schema)
    # pandas reads an int64 column with nulls back as float64 unless the file says the frame had
    # nullable Int64 there: the pandas metadata of an empty ledger frame says so for every column.
    pandas_meta = pa.Schema.from_pandas(frame_of([]), preserve_index=False).metadata
    pq.write_table(table.replace_schema_metadata(pandas_meta), out)


WRITERS = {"csv": write_csv, "parquet": write_parquet, "jsonl": write_jsonl}


def tail_table(rows: list[dict[str, Any]]) -> str:
    """A readable, aligned table of rows (one line each), oldest first; text cells are ``printable``."""
    header = ("started_at (UTC)", "model", "status", "in", "cached", "out", "usd", "usage", "tags")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
                printable(row["model"]),
                printable(row["status"]),
                str(row["input_tokens"]),
                str(row["cached_input_tokens"]),
                str(row["output_tokens"]),
                format_usd(row["cost_nanousd"]),
                printable(row["usage_source"]),
                printable(",".join(f"{k}={v}" for k, v in row["tags"].items())),
            )
        )
    numeric = {3, 4, 5, 6}
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()
        for line in lines
    )
