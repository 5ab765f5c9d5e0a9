"""`RecordShelf`: the local store's finished records, bounded in bytes; the oldest
results give way to tombstones (`result_expired`), which give way in turn."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.job_state import JobRecord
from hub.core.messages import Result
from hub.store.memory import ENTRY_OVERHEAD, RecordShelf

TTL = 60_000


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


def _record(job_id: str, size: int) -> bytes:
    result = Result(request_id=f"r-{job_id}", job_id=job_id, node_id="n1", ok=True,
                    attempts=1, output="o" * size)
    return msgspec.json.encode(JobRecord(job_id=job_id, request_id=f"r-{job_id}",
                                         status="done", node_id="n1", attempt=1, result=result))


def _decoded(data: bytes | None) -> JobRecord:
    assert data is not None
    return msgspec.json.decode(data, type=JobRecord)


def test_the_oldest_results_become_tombstones_past_the_budget() -> None:
    clock = Clock()
    shelf = RecordShelf(clock, max_bytes=100_000)
    for i in range(10):
        shelf.set(f"j{i}", _record(f"j{i}", 20_000), TTL)
    assert shelf.record_bytes + shelf.tombstone_bytes <= 100_000
    assert shelf.evicted == 6  # 4 records of ~20 KB fit next to the tombstones
    for i in range(6):
        assert shelf.is_tombstone(f"j{i}")
        stone = _decoded(shelf.get(f"j{i}"))
        assert stone.result is not None and stone.result.error is not None
        assert stone.result.error.code == "result_expired" and stone.request_id == f"r-j{i}"
    for i in range(6, 10):
        kept = _decoded(shelf.get(f"j{i}"))
        assert kept.result is not None and kept.result.ok and kept.result.output == "o" * 20_000


def test_tombstones_take_at_most_a_quarter_and_the_oldest_go_first() -> None:
    shelf = RecordShelf(Clock(), max_bytes=20_000)
    for i in range(200):
        shelf.set(f"j{i}", _record(f"j{i}", 3_000), TTL)
    assert shelf.tombstone_bytes <= 5_000
    assert shelf.record_bytes + shelf.tombstone_bytes <= 20_000
    assert shelf.get("j0") is None  # its tombstone went too
    assert shelf.is_tombstone("j195") and shelf.get("j199") is not None
    assert not shelf.is_tombstone("j199")


def test_a_record_bigger_than_the_budget_is_a_tombstone_at_once() -> None:
    shelf = RecordShelf(Clock(), max_bytes=50_000)
    shelf.set("big", _record("big", 80_000), TTL)
    assert shelf.is_tombstone("big") and shelf.record_bytes == 0


def test_records_and_tombstones_expire_and_rewrites_are_counted_once() -> None:
    clock = Clock()
    shelf = RecordShelf(clock, max_bytes=100_000)
    shelf.set("a", _record("a", 60_000), TTL)
    shelf.set("b", _record("b", 60_000), TTL)  # a becomes a tombstone
    assert shelf.is_tombstone("a")
    shelf.set("b", _record("b", 10), TTL)  # rewritten: its old size no longer counts
    assert shelf.record_bytes == len(_record("b", 10)) + ENTRY_OVERHEAD
    clock.ms = TTL
    assert shelf.get("a") is None and shelf.get("b") is None
    shelf.set("c", _record("c", 10), TTL)  # sweeps the expired ones
    assert len(shelf) == 1 and shelf.tombstone_bytes == 0


def test_what_is_not_a_record_is_dropped_when_evicted() -> None:
    shelf = RecordShelf(Clock(), max_bytes=1_000)
    shelf.set("x", b"not a record" * 100, TTL)
    assert shelf.get("x") is None and len(shelf) == 0


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 12), st.integers(0, 6_000)), max_size=8),
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_a_batch_leaves_the_shelf_as_its_records_one_by_one_do(
    batches: list[list[tuple[int, int]]],
) -> None:
    """The archive writes a batch at once (`set_many`: one sweep, one fit): what is
    kept, evicted to tombstones or dropped is what writing them one by one keeps."""
    clocks = Clock(), Clock()
    one_by_one = RecordShelf(clocks[0], max_bytes=40_000)
    batched = RecordShelf(clocks[1], max_bytes=40_000)
    for step, batch in enumerate(batches):
        for clock in clocks:
            clock.ms = step * 20_000  # later batches outlive the earlier ones' TTL
        items = [(f"j{key}", _record(f"j{key}", size)) for key, size in batch]
        for job_id, data in items:
            one_by_one.set(job_id, data, TTL)
        batched.set_many(items, TTL)
        assert (batched.record_bytes, batched.tombstone_bytes, batched.evicted) == (
            one_by_one.record_bytes, one_by_one.tombstone_bytes, one_by_one.evicted
        )
        for key in range(13):
            assert batched.get(f"j{key}") == one_by_one.get(f"j{key}")
