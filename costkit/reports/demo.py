"""``costkit demo``: realistic synthetic traffic in a separate demo ledger, through the real accounting path.

Every request goes through ``costkit.intercept``'s accounting core (``Call``): its body
is parsed and counted with tiktoken, pre-flighted (a document over the feature's context
limit is refused and recorded as blocked), and its response bytes (JSON, or SSE chunks
with a usage chunk, or a stream cut short) are read by the same ``ResponseReader`` the
transports use, then priced and recorded. Only the network is left out (no HTTP server:
a 30-day demo in seconds) and the clock: each call is backdated, and its latency and
time to first token are drawn, not measured.

The traffic: four teams and their features, each with a long shared system prompt (so
prompts hit the cache), busier on weekdays and in working hours, a few errors and
interrupted streams. It is deterministic: the same ``seed`` and end date give the same
rows, with ids ``demo-<seed>-<n>``. The demo ledger is ``demo.sqlite`` beside the real
ledger (never the real one); a database holding other rows is refused.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from costkit.budgets.budget import Budget
from costkit.counting.tokens import count_text
from costkit.errors import RequestRefused
from costkit.intercept.accounting import Call
from costkit.intercept.options import Options
from costkit.ledger import Ledger
from costkit.ledger.location import default_sqlite_path
from costkit.ledger.row import Row

DEFAULT_SEED = 7
DEFAULT_DAYS = 30
HOST = "demo.costkit.invalid"
ID_PREFIX = "demo-"
STREAM_WORDS = 16
"""Words per streamed chunk: real streams send a token or two, which only makes the demo slower."""
_WORDS = (
    "account answer billing cache catalogue context customer delivery document draft escalation "
    "feature invoice knowledge latency ledger order policy priority product query refund release "
    "report request response review search session shipping summary support ticket token update"
).split()


@dataclass(frozen=True)
class Feature:
    team: str
    name: str
    model: str
    per_weekday: int
    prompt_words: int
    stream: bool
    output: tuple[int, int]
    context_limit: int | None = None


FEATURES = (
    Feature("search", "answer", "gpt-4.1", 70, 1900, True, (120, 600)),
    Feature("search", "rerank", "gpt-4.1-mini", 90, 1300, False, (5, 40)),
    Feature("support", "chat-assist", "gpt-4.1", 55, 2600, True, (80, 450)),
    Feature("support", "summarise", "gpt-4.1-mini", 30, 900, False, (60, 200)),
    Feature("growth", "email-drafts", "gpt-4.1", 14, 700, False, (200, 700)),
    Feature("platform", "doc-ingest", "gpt-4.1-nano", 12, 1500, False, (20, 80), context_limit=4200),
)


def demo_path() -> Path:
    """``demo.sqlite`` beside the default ledger (``ledger.sqlite``) in the user data directory."""
    return default_sqlite_path().with_name("demo.sqlite")


def demo_budgets() -> list[Budget]:
    """The demo's budgets: a monthly one the traffic comes close to, and one per team."""
    return [
        Budget("demo-monthly", Decimal("20.00"), period="month", warn_at=("0.5", "0.8", "1")),
        Budget("demo-support-daily", Decimal("0.10"), period="day", tags={"team": "support"}),
    ]


class _Backdated:
    """The recorder the demo's calls write through: stable ids, drawn timings, then the ledger."""

    def __init__(self, ledger: Ledger, seed: int) -> None:
        self.ledger = ledger
        self.seed = seed
        self.count = 0
        self.timing: tuple[int, int | None] = (0, None)
        self.store_text = False

    def record(self, row: Row) -> None:
        self.count += 1
        row.request_id = f"{ID_PREFIX}{self.seed}-{self.count:07d}"
        latency, ttft = self.timing
        row.latency_us = latency if row.status != "blocked" else None
        row.ttft_us = ttft if row.stream and row.status in ("ok", "partial") else None
        row.finished_at = None if row.latency_us is None else row.started_at + timedelta(microseconds=latency)
        self.ledger.record(row)


def _prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=words))


def _json_response(model: str, text: str, usage: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
    ).encode()


def _sse_response(model: str, text: str, usage: dict[str, Any] | None) -> bytes:
    words = text.split(" ")
    events = []
    for start in range(0, len(words), STREAM_WORDS):
        piece = " ".join(words[start : start + STREAM_WORDS]) + " "
        chunk = {
            "id": "chatcmpl-demo",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n")
    if usage is not None:
        done = {
            "id": "chatcmpl-demo",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [],
            "usage": usage,
        }
        events.append(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n")
    return "".join(events).encode()


class _Traffic:
    """Draws and sends the demo's requests, one call at a time, in time order per day."""

    def __init__(self, ledger: Ledger, seed: int) -> None:
        self.rng = random.Random(seed)
        self.recorder = _Backdated(ledger, seed)
        self.system = {f.name: _prompt(random.Random(f"{seed}-{f.name}"), f.prompt_words) for f in FEATURES}
        self.options = {
            f.name: Options(
                ledger=self.recorder, tags={"team": f.team, "feature": f.name}, context_limit=f.context_limit
            )
            for f in FEATURES
        }
        self.system_tokens = {name: count_text(text) for name, text in self.system.items()}
        self.last_seen: dict[str, datetime] = {}

    def day(self, day: date) -> None:
        weekend = day.weekday() >= 5
        calls: list[tuple[datetime, Feature]] = []
        for feature in FEATURES:
            count = int(feature.per_weekday * (0.25 if weekend else 1.0) * self.rng.uniform(0.8, 1.2))
            for _ in range(count):
                hour = min(23, max(0, int(self.rng.gauss(13.5, 3.2))))
                start = datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc) + timedelta(
                    seconds=self.rng.randrange(3600), microseconds=self.rng.randrange(1_000_000)
                )
                calls.append((start, feature))
        calls.sort(key=lambda item: (item[0], item[1].name))
        for start, feature in calls:
            self.send(start, feature)

    def send(self, start: datetime, feature: Feature) -> None:
        rng = self.rng
        document = feature.context_limit is not None and rng.random() < 0.06
        user_words = rng.randint(2000, 2600) if document else rng.randint(8, 120)
        body = {
            "model": f"openai/{feature.model}",
            "messages": [
                {"role": "system", "content": self.system[feature.name]},
                {"role": "user", "content": _prompt(rng, user_words)},
            ],
            "max_tokens": 1024,
            "stream": feature.stream,
        }
        call = Call(
            self.options[feature.name],
            HOST,
            [(b"content-type", b"application/json")],
            json.dumps(body).encode(),
        )
        call.started_at = start
        latency = int(rng.lognormvariate(0, 0.45) * (900_000 if feature.stream else 600_000)) + 80_000
        self.recorder.timing = (latency, int(latency * rng.uniform(0.08, 0.3)))
        try:
            call.prepare()
        except RequestRefused:
            return  # recorded as blocked by the accounting core; nothing was "sent"
        self.respond(call, feature, start)

    def respond(self, call: Call, feature: Feature, start: datetime) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.012:
            reader = call.tap(429 if roll < 0.008 else 500, {"content-type": "application/json"})
            message = "Rate limit reached for gpt-4.1" if roll < 0.008 else "The server had an error"
            reader.feed(json.dumps({"error": {"message": message, "type": "demo"}}).encode())
            reader.ended = True
            reader.close()
            return
        estimate = call.verdict.input_tokens if call.verdict is not None else 0
        prompt = estimate + (rng.choice((0, 0, 0, 1, 2, -1)) if rng.random() < 0.3 else 0)
        # The shared system prompt is cached in 128-token steps when the feature ran minutes ago.
        warm = feature.name in self.last_seen and start - self.last_seen[feature.name] < timedelta(minutes=8)
        self.last_seen[feature.name] = start
        shared = self.system_tokens[feature.name]
        cached = (shared // 128) * 128 if warm and shared >= 1024 and rng.random() < 0.9 else 0
        output = rng.randint(*feature.output)
        text = _prompt(rng, max(1, output * 3 // 4))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
        }
        if feature.stream:
            reader = call.tap(200, {"content-type": "text/event-stream"})
            cut = rng.random() < 0.025
            data = _sse_response(feature.model, text, None if cut else usage)
            if cut:
                data = data[: len(data) // 2]
            reader.feed(data)
            if cut:
                reader.close(exhausted=False, interrupted="demo: the client went away mid-stream")
                return
        else:
            reader = call.tap(200, {"content-type": "application/json"})
            reader.feed(_json_response(feature.model, text, usage))
        reader.ended = True  # read to its end, as the transports say of a body they finished
        reader.close()


def fill_demo(
    url: str | None = None, *, days: int = DEFAULT_DAYS, seed: int = DEFAULT_SEED, end: date | None = None
) -> tuple[str, int]:
    """Fill the demo ledger (default ``demo_path()``) with ``days`` days up to the day before ``end``.

    Returns ``(url, rows recorded)``. Earlier demo rows are replaced; a ledger holding any
    other row is refused (``ValueError``), so real traffic never mixes with demo data.
    """
    if not 1 <= days <= 366:
        raise ValueError(f"--days must be from 1 to 366, not {days}")
    target = url if url is not None else str(demo_path())
    end = end if end is not None else datetime.now(timezone.utc).date()
    ledger = Ledger(target)
    try:
        _clear_demo(ledger)
        traffic = _Traffic(ledger, seed)
        for offset in range(days, 0, -1):
            traffic.day(end - timedelta(days=offset))
        if not ledger.flush(timeout=120):
            raise ValueError(f"the demo ledger {target} did not take the rows (is the database up?)")
        return target, traffic.recorder.count
    finally:
        ledger.close()


def _clear_demo(ledger: Ledger) -> None:
    from sqlalchemy import text

    ledger.rows(last=1)  # makes sure the schema exists (the writer may not have created it yet)
    with ledger.engine.begin() as connection:
        others = connection.execute(
            text("SELECT COUNT(*) FROM costkit_requests WHERE request_id NOT LIKE :demo"),
            {"demo": f"{ID_PREFIX}%"},
        ).scalar_one()
        if others:
            raise ValueError(
                f"{ledger!r} holds {others} requests not from the demo: the demo needs a database of its own"
            )
        connection.execute(
            text("DELETE FROM costkit_request_tags WHERE request_id LIKE :demo"), {"demo": f"{ID_PREFIX}%"}
        )
        connection.execute(
            text("DELETE FROM costkit_requests WHERE request_id LIKE :demo"), {"demo": f"{ID_PREFIX}%"}
        )


def ensure_demo() -> str:
    """The demo ledger's path, filled first with the default demo if it does not exist yet."""
    path = demo_path()
    if not path.exists():
        fill_demo()
    return str(path)
