"""Proxy overhead: the same local upstream direct, through ``costkit proxy``, and through LiteLLM's proxy.

    .venv/bin/python bench/bench_proxy.py [--quick] [--litellm-venv /tmp/litellm-venv]

LiteLLM is installed only in its own virtual environment, never in costkit's (create it once;
``--litellm-venv`` defaults to /tmp/litellm-venv)::

    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'

One fake upstream (``tests/fakeupstream.py``, its own process, a long default reply) serves all
three; each proxy is its own process with one worker. LiteLLM's proxy runs with no database (no
``DATABASE_URL``: its spend logs and keys are off), its local price map
(``LITELLM_LOCAL_MODEL_COST_MAP``: no network) and no master key, which it refuses unless told
``dangerously_permit_weak_or_unset_master_key`` (so neither proxy checks keys here). costkit's
records every chat completion into a fresh SQLite ledger.

LiteLLM leaves ``"stream"`` out of a plain request, which this provider would answer with a
stream (its default is true), and LiteLLM then fails with a 500. So the bench's upstream answers a
request without ``"stream"`` as OpenAI does, with JSON, for all three targets (costkit sends the
caller's body as it is, ``"stream": false`` included).

Every request body is new (a numbered user message), so the upstream's count cache favours no
one. Plain requests and first chunks are timed in blocks that rotate between the three targets, so
drift in machine load falls on all of them alike; each figure is a median (p99 too for plain
requests) and "added" is against direct, measured in the same run. Streams are the upstream's long
reply (about 4,000 events); requests per second are 32 concurrent asyncio clients for a fixed
count of requests. The client, the upstream and the proxy share this machine's cores: requests per
second mostly measure how much CPU each proxy spends per request.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ("direct", "costkit", "litellm")
LONG_WORDS = 4000
UPSTREAM = f"""
import signal, sys, threading
from tests import fakeupstream
from tests.fakeupstream import FakeUpstream, completion_text_of_words

chat = fakeupstream._Handler._chat
def openai_default(self, raw, body, scenario, started, recorded):
    # LiteLLM leaves "stream" out of a plain request: answer it as OpenAI would (JSON), for everyone.
    if scenario is None and isinstance(body, dict) and "stream" not in body:
        scenario = "json"
    chat(self, raw, body, scenario, started, recorded)
fakeupstream._Handler._chat = openai_default
server = FakeUpstream(completion_text=completion_text_of_words({LONG_WORDS}), record=False).start()
print("READY", server.base_url, flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
server.stop()
"""
LITELLM_CONFIG = """
model_list:
  - model_name: openai/gpt-4.1
    litellm_params:
      model: openai/openai/gpt-4.1
      api_base: {upstream}
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  dangerously_permit_weak_or_unset_master_key: true
"""


def body(n: int, stream: bool, max_tokens: int | None = 16) -> dict:
    out: dict = {
        "model": "openai/gpt-4.1",
        "messages": [{"role": "user", "content": f"Request {n}: name three prime numbers and stop."}],
        "stream": stream,
    }
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    return out


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if line[:1] != ["READY"]:
        proc.kill()
        raise SystemExit("the fake upstream did not start")
    return proc, line[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{what} did not answer in {timeout} s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_costkit(upstream: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    costkit = Path(sys.executable).with_name("costkit")
    db = f"sqlite:///{workdir / 'ledger.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTKIT_")}
    env["XDG_DATA_HOME"] = str(workdir / "data")
    log = (workdir / "costkit.log").open("wb")
    proc = subprocess.Popen(
        [str(costkit), "proxy", "--upstream", upstream, "--port", str(port), "--db", db],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}/costkit/health", proc, "costkit proxy")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_litellm(upstream: str, venv: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    litellm = venv / "bin" / "litellm"
    if not litellm.exists():
        raise SystemExit(f"{litellm} not found: create the venv as this script's docstring says")
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(upstream=upstream))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_DOCS="True", DISABLE_ADMIN_UI="True"
    )
    log = (workdir / "litellm.log").open("wb")
    proc = subprocess.Popen(
        [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1", "--telemetry", "False"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, "LiteLLM's proxy")
    return proc, f"http://127.0.0.1:{port}/v1", version


HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


def plain_once(client: httpx.Client, base: str, n: int) -> float:
    started = time.perf_counter()
    response = client.post(f"{base}/chat/completions", json=body(n, stream=False), headers=HEADERS)
    response.read()
    took = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{base}: HTTP {response.status_code}: {response.text[:300]}")
    return took


def first_chunk_once(client: httpx.Client, base: str, n: int) -> float:
    started = time.perf_counter()
    with client.stream(
        "POST", f"{base}/chat/completions", json=body(n, stream=True), headers=HEADERS
    ) as response:
        first = None
        for _ in response.iter_raw():
            if first is None:
                first = time.perf_counter() - started
        if response.status_code != 200 or first is None:
            raise SystemExit(f"{base}: HTTP {response.status_code} on a stream")
    return first


def stream_rate_once(client: httpx.Client, base: str, n: int) -> tuple[float, int, int]:
    """Events a second over one long stream, how many events it carried, in how many reads."""
    started = time.perf_counter()
    with client.stream(
        "POST", f"{base}/chat/completions", json=body(n, stream=True, max_tokens=None), headers=HEADERS
    ) as response:
        parts = list(response.iter_raw())
    took = time.perf_counter() - started
    events = b"".join(parts).count(b"data: ")
    return events / took, events, len(parts)


async def rps_once(base: str, total: int, concurrency: int, first: int) -> float:
    counter = itertools.count(first)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker(share: int) -> None:
            for _ in range(share):
                response = await client.post(
                    f"{base}/chat/completions", json=body(next(counter), stream=False), headers=HEADERS
                )
                if response.status_code != 200:
                    raise SystemExit(f"{base}: HTTP {response.status_code}")

        await worker(1)  # connect
        started = time.perf_counter()
        await asyncio.gather(*(worker(total // concurrency) for _ in range(concurrency)))
        return (total // concurrency) * concurrency / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rotated(round_no: int) -> list[str]:
    shift = round_no % len(TARGETS)
    return list(TARGETS[shift:] + TARGETS[:shift])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (too short to quote)")
    parser.add_argument("--litellm-venv", default="/tmp/litellm-venv", type=Path)
    args = parser.parse_args()
    rounds, block = (4, 10) if args.quick else (20, 25)
    streams = 3 if args.quick else 15
    rps_total, rps_rounds = (320, 1) if args.quick else (3200, 3)
    load = os.getloadavg()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        upstream_proc, upstream = start_upstream()
        procs: list[subprocess.Popen] = [upstream_proc]
        try:
            costkit_proc, costkit_url = start_costkit(upstream, workdir)
            procs.append(costkit_proc)
            litellm_proc, litellm_url, litellm_version = start_litellm(upstream, args.litellm_venv, workdir)
            procs.append(litellm_proc)
            bases = {"direct": upstream, "costkit": costkit_url, "litellm": litellm_url}
            print(
                f"$ .venv/bin/python bench/bench_proxy.py   # {stamp}, {os.cpu_count()} cores, "
                f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
            )
            import uvicorn

            print(
                f"costkit proxy benchmark  python {platform.python_version()}  httpx {httpx.__version__}  "
                f"uvicorn {uvicorn.__version__}  litellm {litellm_version}  cpus {os.cpu_count()}"
            )
            numbers = itertools.count()
            clients = {t: httpx.Client(timeout=60) for t in TARGETS}
            for target in TARGETS:  # warm: connections, imports, caches
                for _ in range(20):
                    plain_once(clients[target], bases[target], next(numbers))
                    first_chunk_once(clients[target], bases[target], next(numbers))
            plain: dict[str, list[float]] = {t: [] for t in TARGETS}
            first: dict[str, list[float]] = {t: [] for t in TARGETS}
            for round_no in range(rounds):
                for target in rotated(round_no):
                    for _ in range(block):
                        plain[target].append(plain_once(clients[target], bases[target], next(numbers)))
                    for _ in range(block):
                        first[target].append(first_chunk_once(clients[target], bases[target], next(numbers)))
            rates: dict[str, list[float]] = {t: [] for t in TARGETS}
            events: dict[str, int] = {}
            reads: dict[str, list[int]] = {t: [] for t in TARGETS}
            for round_no in range(streams):
                for target in rotated(round_no):
                    rate, events[target], count = stream_rate_once(
                        clients[target], bases[target], next(numbers)
                    )
                    rates[target].append(rate)
                    reads[target].append(count)
            rps: dict[str, list[float]] = {t: [] for t in TARGETS}
            for round_no in range(rps_rounds):
                for target in rotated(round_no):
                    start = next(numbers) * 10_000
                    rps[target].append(asyncio.run(rps_once(bases[target], rps_total, 32, start)))
            report(plain, first, rates, events, reads, rps, rounds * block, streams, rps_total, rps_rounds)
            end_load = os.getloadavg()
            print(f"load average at the end {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}")
            rows = ledger_rows(workdir)
            print(f"rows recorded by costkit proxy: {rows}")
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


def ledger_rows(workdir: Path) -> int:
    import sqlite3

    time.sleep(0.5)
    with sqlite3.connect(workdir / "ledger.sqlite") as connection:
        return int(connection.execute("SELECT count(*) FROM costkit_requests").fetchone()[0])


def report(plain, first, rates, events, reads, rps, n_plain, n_streams, rps_total, rps_rounds) -> None:
    ms = 1000
    print(f"\nplain request (stream false, max_tokens 16), {n_plain} each, blocks rotating between targets")
    base50, base99 = statistics.median(plain["direct"]) * ms, pct(plain["direct"], 0.99) * ms
    for target in TARGETS:
        p50, p99 = statistics.median(plain[target]) * ms, pct(plain[target], 0.99) * ms
        added = (
            "" if target == "direct" else f"   added p50 {p50 - base50:+.3f} ms  p99 {p99 - base99:+.3f} ms"
        )
        print(f"  {target:8} p50 {p50:8.3f} ms  p99 {p99:8.3f} ms{added}")
    print("  goal: costkit added p50 <= 1 ms, and less than LiteLLM's")
    print(f"\ntime to first chunk (stream true, max_tokens 16), {n_plain} each")
    base = statistics.median(first["direct"]) * ms
    for target in TARGETS:
        value = statistics.median(first[target]) * ms
        added = "" if target == "direct" else f"   added {value - base:+.3f} ms"
        print(f"  {target:8} median {value:8.3f} ms{added}")
    print("  goal: costkit added <= 1 ms, and less than LiteLLM's")
    print(
        f"\nstreamed events/s, the upstream's long reply (~{events['direct']} events), "
        f"{n_streams} streams each"
    )
    base = statistics.median(rates["direct"])
    for target in TARGETS:
        value = statistics.median(rates[target])
        ratio = "" if target == "direct" else f"   ratio {value / base:.3f}"
        got = f"{events[target]} events in {statistics.median(reads[target]):.0f} reads"
        print(f"  {target:8} median {value:10,.0f} events/s  ({got}){ratio}")
    print("  goal: costkit ratio >= 0.9, and above LiteLLM's")
    print(
        f"\nrequests/s, 32 concurrent clients, {rps_total} plain requests a run, median of {rps_rounds} runs"
    )
    base = statistics.median(rps["direct"])
    for target in TARGETS:
        value = statistics.median(rps[target])
        ratio = "" if target == "direct" else f"   ratio {value / base:.3f}"
        print(f"  {target:8} median {value:8,.0f} req/s{ratio}")
    print("  goal: costkit above LiteLLM")


if __name__ == "__main__":
    sys.exit(main())
