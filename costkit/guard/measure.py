"""Every request of a set of files, measured: exact input tokens, output reserve and worst-case cost.

The measurement is ``costkit check``'s own pre-flight (``priced_preflight``). A request is named by its
file and its *line*: for a JSONL file, or a file holding one JSON object, the 1-based line the request
starts on; for a JSON array, the 0-based index of the request in the array. Two runs match requests by
(file, line).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from costkit.cli import BadInput
from costkit.cli_check import _bodies, priced_preflight
from costkit.counting.bodyfile import iter_bodies
from costkit.errors import CostkitError
from costkit.guard.sources import STDIN
from costkit.pricing import PriceBook

LINE_MEANS = (
    "the 1-based line a request starts on in a JSONL file or a file holding one JSON object; "
    "the 0-based index of the request in a JSON array"
)


@dataclass(frozen=True)
class Figures:
    """What a comparison needs of one request: where it is and what it may cost at most."""

    file: str
    line: int
    where: str
    input_tokens: int
    output_reserve: int
    max_cost_nanousd: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.file, self.line)


@dataclass(frozen=True)
class Measured(Figures):
    """One request as this run measured it."""

    model: str
    context_limit: int
    fits: bool
    price_id: str

    @property
    def overflow(self) -> int:
        return max(0, self.input_tokens + self.output_reserve - self.context_limit)


@dataclass(frozen=True)
class Options:
    """How requests are measured: ``costkit check``'s ``--context-limit``, ``--default-max-tokens``
    and price book."""

    context_limit: int | None
    default_max_tokens: int
    price_book: PriceBook


def _line(where: str, name: str) -> int:
    """The line of ``file:line`` or the index of ``file:line[i]`` (``iter_bodies``'s names)."""
    position = where[len(name) + 1 :]
    if position.endswith("]"):
        return int(position[position.index("[") + 1 : -1])
    return int(position)


def _measure(file: str, name: str, bodies: Iterable[tuple[str, Any]], options: Options) -> Iterator[Measured]:
    for where, body in bodies:
        verdict = priced_preflight(
            where, body, options.context_limit, options.default_max_tokens, options.price_book
        )
        yield Measured(
            file=file,
            line=_line(where, name),
            where=file + where[len(name) :],
            input_tokens=verdict.input_tokens,
            output_reserve=verdict.output_reserve,
            max_cost_nanousd=verdict.max_cost_nanousd,
            model=verdict.model.id,
            context_limit=verdict.context_limit,
            fits=verdict.fits,
            price_id=verdict.max_cost.price_id,
        )


def measure_files(files: Iterable[str], options: Options) -> list[Measured]:
    """Every request of the files in the working tree (``-`` is stdin); bad input is ``BadInput``."""
    out: list[Measured] = []
    for path in files:
        name = "<stdin>" if path == STDIN else path
        out.extend(_measure(name, name, _bodies((path,)), options))
    return out


def measure_contents(contents: dict[str, bytes | None], ref: str, options: Options) -> list[Measured]:
    """Every request of files read at a git ref (None: absent there); errors name ``ref:file:line``."""
    out: list[Measured] = []
    for path, data in contents.items():
        if data is None:
            continue
        name = f"{ref}:{path}"
        try:
            out.extend(_measure(path, name, iter_bodies(io.BytesIO(data), name), options))
        except CostkitError as exc:
            raise BadInput(str(exc)) from None
    return out
