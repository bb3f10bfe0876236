"""Prompt and completion token counts computed independently of costkit, with plain tiktoken.

The fake upstream answers with these as its ``usage``, so tests compare costkit's
records with numbers costkit did not produce. The rules are the OpenAI cookbook's
"How to count tokens with tiktoken" (3 per message, the tokens of every string value,
1 more per ``name``, 3 for the reply priming, ``num_tokens_for_tools`` for tool
definitions) and, for images, gpt-4.1's tile method from OpenAI's images and vision
guide. tiktoken's own loader reads o200k_base from a private offline cache.

https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb
https://platform.openai.com/docs/guides/images-vision
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import json
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import tiktoken

DEFAULT_COMPLETION_TEXT = (
    "GPT-4.1 bills input, cached input and output tokens at three different rates, so an exact "
    "ledger prices each kind on its own, charges cached tokens once at the cached rate, and reads "
    "the final usage chunk of every streamed reply before it settles the request."
)
# Where an unknown remote image is assumed to be: the provider fetches it, a fake cannot.
REMOTE_IMAGE_SIZE = (1024, 1024)


_encoding_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def _load_offline() -> tiktoken.Encoding:
    import tiktoken

    from costkit.counting.tokens import seed_tiktoken_cache

    with tempfile.TemporaryDirectory(prefix="fakeupstream-tiktoken-") as cache:
        seed_tiktoken_cache(cache)
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        try:
            return tiktoken.get_encoding("o200k_base")
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


def reference_encoding() -> tiktoken.Encoding:
    """Plain ``tiktoken.get_encoding("o200k_base")``, loaded offline: unless tiktoken already
    holds it, the checked vocabulary costkit ships is seeded into a private cache directory that
    ``TIKTOKEN_CACHE_DIR`` names only while tiktoken's own loader reads it. Once per process;
    thread-safe.
    """
    global _encoding
    if _encoding is None:
        with _encoding_lock:
            if _encoding is None:
                import tiktoken.registry

                _encoding = tiktoken.registry.ENCODINGS.get("o200k_base") or _load_offline()
    return _encoding


def count_text(text: str) -> int:
    """o200k_base tokens of ``text``; special-token text counts as ordinary text."""
    return len((_encoding or reference_encoding()).encode_ordinary(text))


def _nested_string_tokens(value: Any) -> int:
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, Mapping):
        return sum(_nested_string_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(_nested_string_tokens(v) for v in value)
    return 0


def _tile_tokens(width: int, height: int) -> int:
    if max(width, height) > 2048:
        ratio = 2048 / max(width, height)
        width, height = int(width * ratio), int(height * ratio)
    if min(width, height) > 768:
        ratio = 768 / min(width, height)
        width, height = int(width * ratio), int(height * ratio)
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def _image_tokens(part: Mapping[str, Any]) -> int:
    image = part.get("image_url")
    if not isinstance(image, Mapping):
        raise ValueError("image_url must be an object")
    if image.get("detail") == "low":
        return 85
    url = image.get("url")
    if not isinstance(url, str):
        raise ValueError("image_url.url must be a string")
    if not url.startswith("data:"):
        return _tile_tokens(*REMOTE_IMAGE_SIZE)
    from PIL import Image

    try:
        data = base64.b64decode(url.partition(",")[2], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (binascii.Error, OSError) as exc:
        raise ValueError(f"image_url.url is not a readable image: {exc}") from None
    return _tile_tokens(width, height)


def _content_tokens(parts: list[Any]) -> int:
    total = 0
    for part in parts:
        if not isinstance(part, Mapping):
            raise ValueError("a content part must be an object")
        kind = part.get("type")
        if kind == "image_url":
            total += _image_tokens(part)
        elif kind in ("text", "refusal") and isinstance(part.get(kind), str):
            total += count_text(part[kind])
        else:
            raise ValueError(f"unsupported content part {kind!r}")
    return total


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _tools_tokens(body: Mapping[str, Any]) -> int:
    """The cookbook's ``num_tokens_for_tools`` with its gpt-4o / gpt-4o-mini constants (o200k_base:
    7 per function, 3 before the properties, 3 per property, -3 for an enum and 3 per item, 12 at
    the end): the cookbook notebook named in the module docstring."""
    functions = [t.get("function") for t in body.get("tools") or () if isinstance(t, Mapping)]
    functions += list(body.get("functions") or ())
    if not functions:
        return 0
    total = 0
    for function in functions:
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError("a tool needs a function with a name")
        total += 7 + count_text(f"{function['name']}:{_strip_period(function.get('description') or '')}")
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            total += 3
            for key, prop in properties.items():
                total += 3
                if "enum" in prop:
                    total -= 3
                    for item in prop["enum"]:
                        total += 3 + count_text(item if isinstance(item, str) else json.dumps(item))
                description = _strip_period(prop.get("description") or "")
                total += count_text(f"{key}:{prop.get('type', '')}:{description}")
    return total + 12


def _count_prompt_uncached(body: Mapping[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    total = 3  # <|start|>assistant<|message|>
    for message in messages:
        if not isinstance(message, Mapping):
            raise ValueError("a message must be an object")
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += count_text(value) + (1 if key == "name" else 0)
            elif key == "content" and isinstance(value, list):
                total += _content_tokens(value)
            else:
                total += _nested_string_tokens(value)
    return total + _tools_tokens(body)


_prompt_cache: OrderedDict[bytes, int] = OrderedDict()
_prompt_cache_lock = threading.Lock()
_PROMPT_CACHE_SIZE = 512


def count_prompt(body: Mapping[str, Any], raw: bytes | None = None) -> int:
    """``prompt_tokens`` of a chat-completions ``body`` by the cookbook rules.

    With ``raw`` (the body's bytes) the result is remembered under its digest, so a benchmark
    resending one body pays for tiktoken once. Raises ``ValueError`` for a malformed body.
    """
    if raw is None:
        return _count_prompt_uncached(body)
    key = hashlib.blake2b(raw, digest_size=16).digest()
    with _prompt_cache_lock:
        cached = _prompt_cache.get(key)
        if cached is not None:
            _prompt_cache.move_to_end(key)
            return cached
    tokens = _count_prompt_uncached(body)
    with _prompt_cache_lock:
        _prompt_cache[key] = tokens
        if len(_prompt_cache) > _PROMPT_CACHE_SIZE:
            _prompt_cache.popitem(last=False)
    return tokens


class Completion(NamedTuple):
    """A reply's text, its streamed deltas (JSON-encoded strings), tokens and finish reason."""

    text: str
    deltas: tuple[str, ...]
    tokens: int
    finish_reason: str


@lru_cache(maxsize=256)
def count_completion(text: str, limit: int | None = None) -> Completion:
    """The reply for ``text``, cut to ``limit`` tokens (finish_reason ``length``) when it is longer.

    Deltas are one per word (a word carries its leading space); they join back to ``text``.
    """
    finish = "stop"
    tokens = count_text(text)
    if limit is not None and tokens > limit:
        encoding = reference_encoding()
        text = encoding.decode(encoding.encode_ordinary(text)[: max(limit, 0)])
        tokens = count_text(text)
        finish = "length"
    words = text.split(" ")
    pieces = [words[0], *(" " + word for word in words[1:])]
    deltas = tuple(json.dumps(piece, ensure_ascii=False) for piece in pieces if piece)
    return Completion(text, deltas, tokens, finish)


@lru_cache(maxsize=64)
def completion_text_of_words(n: int) -> str:
    """An ``n``-word reply: the default completion's words, repeated as needed."""
    words = DEFAULT_COMPLETION_TEXT.split(" ")
    return " ".join(itertools.islice(itertools.cycle(words), max(n, 1)))
