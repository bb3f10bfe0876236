"""Interceptor overhead: the official openai SDK with and without costkit, same local server.

    .venv/bin/python bench/bench_intercept.py [--quick]

The server (``tests/fakeupstream.py``) runs in its own process on 127.0.0.1 so its
work does not share the client's interpreter. Bare and wrapped requests run in
alternating blocks (so the ledger writer's background work lands on the wrapped
client's block, not on its bare neighbour), and each figure is a median over many
requests, reported against the bare client measured in the same run. The wrapped
client records into a real SQLite ledger.

No request body is sent twice, by either client: each takes its user messages from its
own pool of distinct ones, and each message is sent once. The fake upstream remembers
prompt counts by body digest (``tests/reference_counts.count_prompt``), so a repeated
body would be answered from that cache: one client could otherwise gain from a body the
other sent first, or a phase from a body an earlier phase sent. Every timed request is a
miss there, for both clients. What the upstream does cache is the same for both and warm
before the clock starts: the reply texts (``count_completion``, keyed by the text, not the
request). In the client, costkit's own per-message count cache sees the shared system
prompt as a real application's would, and a fresh user message each time. Long streams
alternate which client goes first.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYSTEM = (
    "You are the on-call assistant of a payments team. Answer in two short sentences, name the service "
    "you suspect, and never invent log lines. If the question is not about production incidents, say so."
)
BLOCK = 50
WORDS = (
    "checkout latency spiked for EU cards after the deploy at nine forty; what should we roll back first"
).split()


def message_pools(rng: random.Random, size: int) -> tuple[list[list[dict]], list[list[dict]]]:
    """Two pools (bare, costkit) of ``size`` chat messages each, no user message in both or twice."""
    seen: set[str] = set()
    pools: list[list[list[dict]]] = [[], []]
    for pool in pools:
        while len(pool) < size:
            text = " ".join(rng.choice(WORDS) for _ in range(130))
            if text not in seen:
                seen.add(text)
                pool.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
    return pools[0], pools[1]


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeupstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"fake upstream did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


REPLAYS = 25


def replay_cost(ledger: object) -> tuple[float, float]:
    """Microseconds a chunk to read a 4002-chunk stream through httpx2, bare and wrapped.

    The stream is replayed from memory by an in-process transport, so neither the server
    nor other load on the machine is in the figure: the fastest of ``REPLAYS`` reads is
    what the interceptor's per-chunk path costs on top of httpx2's own.
    """
    import httpx2

    import costkit

    prefix = (
        '{"id":"chatcmpl-0123456789abcdef0123456789abc","object":"chat.completion.chunk",'
        '"created":1760000000,"model":"openai/gpt-4.1","service_tier":"default",'
        '"system_fingerprint":"fp_b3f1157249","choices":['
    )

    def events(usage: bool) -> list[bytes]:
        null = ',"usage":null' if usage else ""
        delta = '{{"index":0,"delta":{{"content":" word{}"}},"logprobs":null,"finish_reason":null}}'
        out = [f"data: {prefix}{delta.format(i % 7)}]{null}}}\n\n".encode() for i in range(4001)]
        if usage:
            out.append(
                f'data: {prefix}],"usage":{{"prompt_tokens":9,"completion_tokens":4001}}}}\n\n'.encode()
            )
        return [*out, b"data: [DONE]\n\n"]

    plain, with_usage = events(False), events(True)

    class Replay(httpx2.BaseTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            chosen = with_usage if b"stream_options" in request.read() else plain
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=ByteList(chosen)
            )

    class ByteList(httpx2.SyncByteStream):
        def __init__(self, items: list[bytes]) -> None:
            self.items = items

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from self.items

    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    def read(client: httpx2.Client) -> float:
        t0 = time.perf_counter()
        with client.stream("POST", "http://replay/v1/chat/completions", json=body) as response:
            count = sum(1 for _ in response.iter_raw())
        return (time.perf_counter() - t0) / count * 1e6

    bare = httpx2.Client(transport=Replay())
    wrapped = costkit.wrap(httpx2.Client(transport=Replay()), ledger=ledger)
    read(bare), read(wrapped)
    return min(read(bare) for _ in range(REPLAYS)), min(read(wrapped) for _ in range(REPLAYS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_plain = 200 if args.quick else 1000
    n_stream = 100 if args.quick else 400
    n_long = 6 if args.quick else 40

    import openai

    import costkit

    proc, base_url = start_server()
    tmp = tempfile.mkdtemp(prefix="costkit-bench-intercept-")
    ledger = costkit.Ledger(f"sqlite:///{tmp}/ledger.sqlite")
    try:
        bare = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        wrapped = costkit.wrap(
            openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0), ledger=ledger
        )
        costkit.count_text("warm the encoding")
        warm = 20
        bare_pool, ours_pool = message_pools(random.Random(7), warm + 1 + n_plain + n_stream + n_long)
        prompt_tokens = statistics.mean(
            costkit.count_request({"model": "gpt-4.1", "messages": m}).input_tokens for m in bare_pool[:50]
        )
        # Each message is taken once: no body repeats, within a client or across the two.
        bare_messages, ours_messages = iter(bare_pool), iter(ours_pool)

        def plain(client: openai.OpenAI, msgs: list[dict]) -> float:
            t0 = time.perf_counter()
            client.chat.completions.create(
                model="openai/gpt-4.1", messages=msgs, stream=False, extra_headers={"X-Fake-Scenario": "json"}
            )
            return time.perf_counter() - t0

        def first_chunk(client: openai.OpenAI, msgs: list[dict]) -> float:
            t0 = time.perf_counter()
            stream = client.chat.completions.create(
                model="openai/gpt-4.1", messages=msgs, stream=True, extra_headers={"X-Fake-Scenario": "sse"}
            )
            next(iter(stream))
            elapsed = time.perf_counter() - t0
            for _ in stream:
                pass
            return elapsed

        def long_stream(client: openai.OpenAI, msgs: list[dict]) -> tuple[float, float, int]:
            t0, c0 = time.perf_counter(), time.process_time()
            stream = client.chat.completions.create(
                model="openai/gpt-4.1",
                messages=msgs,
                stream=True,
                extra_headers={"X-Fake-Scenario": "sse", "X-Fake-Completion-Words": "4000"},
            )
            chunks = sum(1 for _ in stream)
            return time.perf_counter() - t0, time.process_time() - c0, chunks

        for _ in range(warm):  # warm connections, the encoding, costkit's code paths and the ledger
            plain(bare, next(bare_messages))
            plain(wrapped, next(ours_messages))
        long_stream(bare, next(bare_messages))  # the upstream builds the long reply text once, for both
        long_stream(wrapped, next(ours_messages))

        bare_t, ours_t = [], []
        for block in range(0, n_plain, BLOCK):
            size = min(BLOCK, n_plain - block)
            bare_t += [plain(bare, next(bare_messages)) for _ in range(size)]
            ours_t += [plain(wrapped, next(ours_messages)) for _ in range(size)]
        b, o = statistics.median(bare_t), statistics.median(ours_t)
        print(
            f"costkit interceptor benchmark  python {sys.version.split()[0]}  openai {openai.__version__}  "
            f"cpus {os.cpu_count()}"
        )
        print()
        print(
            f"plain request, ~{prompt_tokens:.0f} prompt tokens, {n_plain} each, "
            f"in alternating blocks of {BLOCK}"
        )
        print(f"  bare client      median {b * 1000:8.3f} ms")
        print(
            f"  costkit          median {o * 1000:8.3f} ms   added {(o - b) * 1000:+.3f} ms   goal <= 0.3 ms"
        )
        print()

        bare_t, ours_t = [], []
        for block in range(0, n_stream, BLOCK):
            size = min(BLOCK, n_stream - block)
            bare_t += [first_chunk(bare, next(bare_messages)) for _ in range(size)]
            ours_t += [first_chunk(wrapped, next(ours_messages)) for _ in range(size)]
        b, o = statistics.median(bare_t), statistics.median(ours_t)
        print(f"time to first chunk, streamed, {n_stream} each, in alternating blocks of {BLOCK}")
        print(f"  bare client      median {b * 1000:8.3f} ms")
        print(f"  costkit          median {o * 1000:8.3f} ms   added {(o - b) * 1000:+.3f} ms   goal <= 1 ms")
        print()

        bare_rate, ours_rate, bare_cpu, ours_cpu = [], [], [], []
        chunks = 0
        for i in range(n_long):
            order = [
                (bare, next(bare_messages), bare_rate, bare_cpu),
                (wrapped, next(ours_messages), ours_rate, ours_cpu),
            ]
            for client, msgs, rates, cpus in order if i % 2 == 0 else order[::-1]:
                t, cpu, chunks = long_stream(client, msgs)
                rates.append(chunks / t)
                cpus.append(cpu / chunks)
        b, o = statistics.median(bare_rate), statistics.median(ours_rate)
        # Each wrapped stream against the bare one run next to it: load that drifts during the run
        # (these machines are shared) moves both sides of a pair alike.
        paired = statistics.median(ours / bare for ours, bare in zip(ours_rate, bare_rate, strict=True))
        print(f"streamed chunk throughput, {chunks} chunks a stream, {n_long} streams each, alternating")
        print(f"  bare client      median {b:10,.0f} chunks/s")
        print(f"  costkit          median {o:10,.0f} chunks/s   ratio {o / b:.3f}   goal >= 0.97")
        print(f"  costkit / bare, median of {n_long} adjacent pairs: {paired:.3f}")
        bc, oc = statistics.median(bare_cpu), statistics.median(ours_cpu)
        print(
            f"  client CPU a chunk (process time, writer thread included): bare {bc * 1e6:.1f} us, "
            f"costkit {oc * 1e6:.1f} us, added {(oc - bc) * 1e6:+.1f} us"
        )
        replay_bare, replay_ours = replay_cost(ledger)
        print(
            f"  in-process replay of the same stream, no server, no SDK parsing (fastest of 25): "
            f"bare {replay_bare:.2f} us a chunk, costkit adds {replay_ours - replay_bare:+.2f} us"
        )
        assert ledger.flush(timeout=60)
        recorded = len(ledger.frame())
        assert next(bare_messages, None) is None and next(ours_messages, None) is None  # each used once
        expected = warm + 1 + n_plain + n_stream + n_long + REPLAYS + 1
        print()
        print(f"rows recorded by the wrapped client: {recorded} (expected {expected})")
        assert recorded == expected
    finally:
        ledger.close()
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
