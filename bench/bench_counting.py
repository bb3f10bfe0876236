"""Counting benchmarks: costkit against raw tiktoken computing the same formula, in one run.

    .venv/bin/python bench/bench_counting.py [--quick]

Every workload is timed as the median of several interleaved repetitions and
reported as a ratio against its baseline measured in the same run (these
machines are noisy; absolute times vary, ratios much less). Counts must be
identical to raw tiktoken's on every workload, or the script fails.

Raw tiktoken is ``tiktoken.get_encoding("o200k_base")`` loaded by tiktoken's
own loader from an offline cache seeded with the same vocabulary. The peers (LiteLLM's
``token_counter`` and tokencost's ``count_message_tokens``) come with the ``bench`` extra:
``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an had they you were their one all we can her has there been if more when will would who "
    "so no ledger token cached prompt budget request stream usage model latency report nightly eval "
    "team search feature invoice customer PostgreSQL SQLite Alembic tiktoken café naïve 2026 3.14 42 "
    "x/y don't it's we're"
).split()


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + rng.choice(".!?;:")


def paragraph(rng: random.Random, tokens: int) -> str:
    out, n = [], 0
    while n < tokens:
        s = sentence(rng, rng.randint(4, 18))
        out.append(s)
        n += len(s) // 4 + 1
    return " ".join(out)


def raw_count(enc, messages: list[dict]) -> int:
    """The cookbook formula with plain tiktoken: what costkit must equal and compete with."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(enc.encode_ordinary(value))
            if key == "name":
                total += 1
    return total + 3


def median_time(fn: Callable[[], object], reps: int, setup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(reps):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(
    a: Callable[[], object], b: Callable[[], object], reps: int, setup_b: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Median times of a and b, alternating so both see the same machine noise."""
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        if setup_b:
            setup_b()
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def report(
    name: str, base_name: str, base: float, ours: float, goal: str, ours_name: str = "costkit"
) -> None:
    print(f"{name}")
    print(f"  {base_name:<34} median {base * 1000:10.2f} ms")
    print(f"  {ours_name:<34} median {ours * 1000:10.2f} ms   ratio {ours / base:6.3f}x   goal {goal}")


def load_peers() -> dict[str, Callable[[list[dict]], int]]:
    """LiteLLM's token_counter and tokencost (the ``bench`` extra); network off: local price maps.

    A peer that is not installed is named on stdout and left out of the rows.
    """
    peers: dict[str, Callable[[list[dict]], int]] = {}
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    try:
        import litellm

        peers["LiteLLM token_counter"] = lambda messages: litellm.token_counter(
            model="gpt-4.1", messages=messages
        )
    except ImportError:
        print("peer not measured, litellm is not installed (pip install -e '.[bench]')")
    try:
        import tokencost

        peers["tokencost"] = lambda messages: tokencost.count_message_tokens(messages, "gpt-4.1")
    except ImportError:
        print("peer not measured, tokencost is not installed (pip install -e '.[bench]')")
    if saved is not None:  # LiteLLM points TIKTOKEN_CACHE_DIR at its own folder on import
        os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return peers


def peer_run(
    counter: Callable[[list[dict]], int], workload: list[list[dict]], reps: int
) -> tuple[list[int], float]:
    counts = [counter(m) for m in workload]

    def run() -> None:
        for m in workload:
            counter(m)

    return counts, median_time(run, reps)


def report_peers(
    peers: dict[str, Callable[[list[dict]], int]],
    workload: list[list[dict]],
    expected: list[int],
    base: float,
    reps: int,
) -> None:
    for name, counter in peers.items():
        quiet = logging.getLogger("tokencost.costs")  # it logs a warning on every call
        level, quiet.level = quiet.level, logging.ERROR
        try:
            counts, t = peer_run(counter, workload, reps)
        finally:
            quiet.setLevel(level)
        same = sum(c == e for c, e in zip(counts, expected, strict=True))
        drift = statistics.mean((c - e) / e for c, e in zip(counts, expected, strict=True)) * 100

        print(
            f"  {name:<34} median {t * 1000:10.2f} ms   ratio {t / base:6.3f}x   "
            f"counts equal to raw tiktoken: {same}/{len(expected)} (mean drift {drift:+.2f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 3 if args.quick else 7

    cache_dir = tempfile.mkdtemp(prefix="costkit-bench-tiktoken-")
    from costkit.counting.tokens import get_encoding, seed_tiktoken_cache

    seed_tiktoken_cache(cache_dir)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    import tiktoken

    enc = tiktoken.get_encoding("o200k_base")
    get_encoding()
    from costkit import count_request, preflight
    from costkit.counting.requests import message_cache

    print(
        f"costkit counting benchmark  python {sys.version.split()[0]}  tiktoken {tiktoken.__version__}  "
        f"cpus {os.cpu_count()}  reps {reps}"
    )
    print()

    rng = random.Random(2026)
    # 1. 10,000 small requests of ~200 tokens, every message distinct (the cache cannot help).
    system_prompts = [paragraph(rng, 40) for _ in range(10_000)]
    bodies = [
        {
            "model": "openai/gpt-4.1",
            "messages": [
                {"role": "system", "content": system_prompts[i]},
                {"role": "user", "content": paragraph(rng, 150)},
            ],
        }
        for i in range(10_000)
    ]
    raw_counts = [raw_count(enc, b["messages"]) for b in bodies]
    ours_counts = [count_request(b).input_tokens for b in bodies]
    assert ours_counts == raw_counts, "small requests: counts differ from raw tiktoken"
    mean_tokens = statistics.mean(raw_counts)

    def raw_small() -> None:
        for b in bodies:
            raw_count(enc, b["messages"])

    def ours_small() -> None:
        for b in bodies:
            count_request(b)

    base, ours = interleaved(
        raw_small,
        ours_small,
        reps,
        setup_b=message_cache.clear,
    )
    report(
        f"10,000 small requests (mean {mean_tokens:.0f} tokens, all distinct, cold cache)",
        "raw tiktoken formula",
        base,
        ours,
        "<= 1.15x",
    )
    peers = load_peers()
    report_peers(peers, [b["messages"] for b in bodies], raw_counts, base, max(1, reps // 3))
    print()

    # 2. One ~1,000,000-token request: exact count, and the fit verdict of a < 1 MB request.
    big_text = "\n".join(paragraph(rng, 60) for _ in range(16_500))
    big = {"model": "gpt-4.1", "messages": [{"role": "user", "content": big_text}]}
    expected = raw_count(enc, big["messages"])
    message_cache.clear()
    assert count_request(big).input_tokens == expected, "1M request: count differs"
    base, ours = interleaved(
        lambda: raw_count(enc, big["messages"]),
        lambda: count_request(big),
        reps,
        setup_b=message_cache.clear,
    )
    report(
        f"exact count of one {expected:,}-token request ({len(big_text.encode()) / 1e6:.1f} MB)",
        "raw tiktoken, single thread",
        base,
        ours,
        "<= 1.0x (aim well below)",
    )
    report_peers(peers, [big["messages"]], [expected], base, max(1, reps // 3))
    print()

    sub_mb = big_text[:950_000]
    sub = {"model": "gpt-4.1", "messages": [{"role": "user", "content": sub_mb}]}
    sub_tokens = raw_count(enc, sub["messages"])
    verdict = preflight(sub)
    assert verdict.fits and not verdict.exact
    assert verdict.input_tokens == sub_tokens
    base, ours = interleaved(
        lambda: raw_count(enc, sub["messages"]),
        lambda: preflight(sub).fits,
        reps,
    )
    report(
        f"fit verdict for a {len(sub_mb.encode()) / 1e6:.2f} MB request ({sub_tokens:,} tokens): "
        "a byte bound against an encode",
        "raw tiktoken encoding it (exact)",
        base,
        ours,
        f">= 20x faster (here {base / ours:,.0f}x)",
        ours_name="costkit preflight (UTF-8 bound)",
    )
    print(
        "  not like for like: preflight's 'fits' comes from the request's UTF-8 length, an upper bound\n"
        "  on its tokens (every o200k token is at least one byte), so it encodes nothing; costkit's\n"
        "  exact count, against the same raw tiktoken, is the row above"
    )
    print()

    # 3. A 50-turn conversation re-sending its whole history each turn.
    history = [{"role": "system", "content": paragraph(rng, 300)}]
    turns = []
    for _ in range(50):
        history = [*history, {"role": "user", "content": paragraph(rng, 100)}]
        turns.append({"model": "gpt-4.1", "messages": history})
        history = [*history, {"role": "assistant", "content": paragraph(rng, 300)}]
    raw_turns = [raw_count(enc, t["messages"]) for t in turns]
    message_cache.clear()
    assert [count_request(t).input_tokens for t in turns] == raw_turns, "conversation: counts differ"

    def raw_turns_() -> None:
        for t in turns:
            raw_count(enc, t["messages"])

    def ours_turns() -> None:
        for t in turns:
            count_request(t)

    base, ours = interleaved(
        raw_turns_,
        ours_turns,
        reps,
        setup_b=message_cache.clear,
    )
    report(
        f"50-turn conversation re-sending history ({sum(raw_turns):,} tokens counted in all)",
        "raw tiktoken recounting each turn",
        base,
        ours,
        f">= 10x faster (here {base / ours:.1f}x)",
    )
    print()

    # 4. Cold start: `costkit check` on a small file against a bare tiktoken start.
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.json"
        small.write_text(json.dumps(bodies[0]))
        costkit_bin = str(Path(sys.executable).with_name("costkit"))
        env = {**os.environ, "TIKTOKEN_CACHE_DIR": cache_dir}
        bare = [sys.executable, "-c", "import tiktoken; tiktoken.get_encoding('o200k_base').encode('hi')"]
        ours_cmd = [costkit_bin, "check", str(small)]
        for cmd in (bare, ours_cmd):  # warm the page cache
            subprocess.run(cmd, env=env, check=True, capture_output=True)
        cold_reps = 5 if args.quick else 11
        base, ours = interleaved(
            lambda: subprocess.run(bare, env=env, check=True, capture_output=True),
            lambda: subprocess.run(ours_cmd, env=env, check=True, capture_output=True),
            cold_reps,
        )
        report("cold start on a small file", "python -c 'import tiktoken; encode'", base, ours, "<= 1.5x")
    print()
    print("counts identical to raw tiktoken on every workload: yes")


if __name__ == "__main__":
    main()
