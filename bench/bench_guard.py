"""``costkit guard`` on 10,000 requests, the real command, against baselines measured in the same run.

    .venv/bin/python bench/bench_guard.py [--quick] [--requests N]

The workload is N distinct chat requests (mean ~200 prompt tokens) in 10 JSONL files of a git repository
made in a temporary directory, whose previous commit differs in a tenth of the requests, lacks the last
file and holds 180 requests the change removes. Each command is a fresh process (what CI pays), timed as the
median of several repetitions run in rotation, so every command sees the same machine noise:

- ``python: read + json + tiktoken``: a Python process that imports tiktoken, reads the same files,
  parses every line and encodes every message: the least any counting tool has to do.
- ``costkit check``: the existing pre-flight on the same files.
- ``costkit guard``: the same files through a quoted glob, with ``--json``.
- ``costkit guard --base-ref``: also reads the files at ``HEAD~1`` with git, measures them, diffs and
  writes the Markdown (twice the requests, most of their messages already in the count cache).

Wall time is what CI waits; CPU time (user + system, from ``getrusage``) is printed beside it because
it hardly grows when other processes share the cores, as they do on this project's machines.
The goal (issue 9) is ``costkit guard`` on 10,000 requests in under 2 s. Token totals must equal the
raw tiktoken process's, or the script fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COSTKIT = str(Path(sys.executable).with_name("costkit"))
GOAL_S = 2.0
FILES = 10

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an had they you were their one all we can her has there been if more when will would who "
    "so no ledger token cached prompt budget request stream usage model latency report nightly eval "
    "team search feature invoice customer PostgreSQL SQLite Alembic tiktoken café naïve 2026 3.14 42"
).split()

RAW = r"""
import json, sys, tiktoken
enc = tiktoken.get_encoding("o200k_base")
total = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for line in f:
            body = json.loads(line)
            total += 3
            for m in body["messages"]:
                total += 3 + len(enc.encode_ordinary(m["role"])) + len(enc.encode_ordinary(m["content"]))
print(total)
"""


def _request(rng: random.Random, i: int) -> dict[str, object]:
    words = rng.randint(60, 260)
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You grade answers against a reference. Reply PASS or FAIL."},
            {"role": "user", "content": f"Case {i}: {text}"},
        ],
        "max_tokens": rng.choice([64, 128, 256, 512]),
    }


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def make_repo(root: Path, n: int) -> list[Path]:
    """A repository whose HEAD holds n requests in FILES files and whose HEAD~1 differs from it."""
    rng = random.Random(9)
    requests = [_request(rng, i) for i in range(n)]
    per_file = -(-n // FILES)
    evals = root / "evals"
    evals.mkdir(parents=True)
    _git(root, "init", "-q")

    def write(reqs: list[dict[str, object]], files: int) -> None:
        for f in range(files):
            chunk = reqs[f * per_file : (f + 1) * per_file]
            (evals / f"suite-{f:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))

    # HEAD~1: a tenth of the requests reserve less output, the last file does not exist yet, and
    # every file ends with 20 requests the change removes
    old = [dict(r, max_tokens=64) if i % 10 == 0 else r for i, r in enumerate(requests)]
    write(old, FILES - 1)
    for f in range(FILES - 1):
        with (evals / f"suite-{f:02d}.jsonl").open("a") as out:
            out.writelines(json.dumps(_request(rng, n + 20 * f + k)) + "\n" for k in range(20))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    write(requests, FILES)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "head")
    return sorted(evals.glob("*.jsonl"))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall time, CPU time (user + system) and stdout of one fresh process."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}... exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (too few to quote)")
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    reps = 2 if args.quick else 7
    import tiktoken

    from costkit.counting.tokens import seed_tiktoken_cache

    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        root = Path(tmp) / "repo"
        files = make_repo(root, args.requests)
        rel = [str(p.relative_to(root)) for p in files]
        env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
        env["XDG_DATA_HOME"] = str(Path(tmp) / "data")
        # raw tiktoken loads o200k_base with its own loader from an offline cache seeded with the same file
        raw_env = dict(env, TIKTOKEN_CACHE_DIR=str(Path(tmp) / "tiktoken-cache"))
        seed_tiktoken_cache(raw_env["TIKTOKEN_CACHE_DIR"])
        commands = {
            "costkit --version (process floor)": [COSTKIT, "--version"],
            "python: read + json + tiktoken": [sys.executable, "-c", RAW, *rel],
            "costkit check": [COSTKIT, "check", *rel, "--json"],
            "costkit guard": [COSTKIT, "guard", "evals/*.jsonl", "--json"],
            "costkit guard --base-ref HEAD~1": [
                COSTKIT, "guard", "evals/*.jsonl", "--base-ref", "HEAD~1", "--json", "--markdown", "out.md",
            ],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu_times: dict[str, list[float]] = {name: [] for name in commands}
        outputs: dict[str, str] = {}
        for _ in range(reps):
            for name, argv in commands.items():
                elapsed, cpu, out = run(argv, root, raw_env if argv[0] == sys.executable else env)
                times[name].append(elapsed)
                cpu_times[name].append(cpu)
                outputs[name] = out

        raw_tokens = int(outputs["python: read + json + tiktoken"])
        guard = json.loads(outputs["costkit guard"])
        diffed = json.loads(outputs["costkit guard --base-ref HEAD~1"])
        check = json.loads(outputs["costkit check"])
        assert guard["totals"]["requests"] == args.requests
        if guard["totals"]["input_tokens"] != raw_tokens:
            raise SystemExit(
                f"token totals differ: guard {guard['totals']['input_tokens']}, raw {raw_tokens}"
            )
        assert guard["totals"]["max_cost_nanousd"] == check["total_max_cost_nanousd"]
        counts = diffed["diff"]["counts"]

        medians = {name: statistics.median(t) for name, t in times.items()}
        cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
        mean_tokens = raw_tokens / args.requests
        print(
            f"costkit guard benchmark  python {sys.version.split()[0]}  tiktoken {tiktoken.__version__}  "
            f"cpus {os.cpu_count()}  reps {reps}  load average {os.getloadavg()[0]:.2f} at end"
        )
        print()
        print(
            f"{args.requests:,} requests in {len(files)} JSONL files (mean {mean_tokens:.0f} prompt tokens, "
            f"all distinct); HEAD~1: {counts}"
        )
        print(f"  {'':<36} {'wall, median':>15} {'ratio to check':>15} {'CPU, median':>14}")
        base = medians["costkit check"]
        for name, median in medians.items():
            print(f"  {name:<36} {median * 1000:12.1f} ms {median / base:14.3f}x {cpu[name] * 1000:11.1f} ms")
        print()
        print(f"goal: costkit guard on {args.requests:,} requests under {GOAL_S:.0f} s")
        for name in ("costkit guard", "costkit guard --base-ref HEAD~1"):
            verdict = "met" if medians[name] < GOAL_S else "MISSED"
            print(f"  {name:<36} {medians[name]:6.2f} s wall ({cpu[name]:.2f} s CPU)   {verdict}")
        print("token totals identical to raw tiktoken: yes")


if __name__ == "__main__":
    main()
