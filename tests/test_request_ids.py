"""Request ids: UUID version 7 (RFC 9562), time-ordered to the millisecond, unique across forks."""

from __future__ import annotations

import os
import time
import uuid

from costkit.ledger.row import Row, new_request_id


def test_an_id_is_a_version_7_uuid_whose_prefix_is_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = new_request_id()
    after = time.time_ns() // 1_000_000
    assert len(made) == 32 and made == made.lower() and int(made, 16) >= 0
    parsed = uuid.UUID(hex=made)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= int(made[:12], 16) <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    made = []
    for _ in range(5):
        made.append(new_request_id())
        started = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == started:
            pass
    assert made == sorted(made)
    assert len({m[:12] for m in made}) == 5


def test_ids_are_unique_and_their_random_part_varies() -> None:
    made = [new_request_id() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    # the 74 random bits: every hex digit after the version takes many values
    for position in (13, 14, 15, 17, 31):
        assert len({m[position] for m in made}) == 16
    assert {m[16] for m in made} <= set("89ab")  # the variant's two bits, then random bits


def test_a_row_gets_a_fresh_id_by_default() -> None:
    first, second = Row(model="gpt-4.1", status="ok"), Row(model="gpt-4.1", status="ok")
    assert first.request_id != second.request_id
    assert uuid.UUID(hex=first.request_id).version == 7


def test_a_forked_child_makes_ids_its_parent_does_not() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: ids made at the same moment as the parent's
        try:
            os.write(write_end, "".join(new_request_id() for _ in range(1000)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent = {new_request_id() for _ in range(1000)}
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    assert len(child) == 1000
    assert not parent & child
