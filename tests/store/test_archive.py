"""`JobArchive`: finished records are answered from memory until the store has them,
and a batch taken to ride with an inbox read is settled either way."""

from __future__ import annotations

from hub.core.job_state import JobRecord
from hub.core.messages import Result
from hub.store.archive import JobArchive
from hub.store.memory import MemoryBackplane, MemoryStore
from hub.store.redis import RedisStore
from tests.support.redis_server import free_port

TTL_MS = 60_000


def _record(job_id: str, status: str = "done") -> JobRecord:
    return JobRecord(job_id=job_id, request_id=f"req-{job_id}", status=status, node_id="n1")


async def _stored(store: MemoryStore, job_id: str) -> bytes | None:
    return await store.load_job(job_id)


async def test_records_are_answered_from_memory_until_written() -> None:
    store = MemoryStore(hub_id="hub-a", backplane=MemoryBackplane())
    archive = JobArchive(store=store, ttl_ms=TTL_MS)
    archive.put(_record("j1"))
    assert await _stored(store, "j1") is None
    loaded = await archive.load("j1")
    assert loaded is not None and loaded.status == "done"
    assert await archive.flush()
    assert await _stored(store, "j1") is not None
    assert await archive.flush()  # nothing left: a no-op


async def test_a_taken_batch_is_answered_while_written_and_queued_again_if_unsaved() -> None:
    store = MemoryStore(hub_id="hub-a", backplane=MemoryBackplane())
    archive = JobArchive(store=store, ttl_ms=TTL_MS)
    archive.put(_record("j1"))
    batch = archive.take()
    assert batch is not None and [job_id for job_id, _ in batch.items] == ["j1"]
    assert archive.take() is None  # taken once
    assert (await archive.load("j1")) is not None  # still answered while being written
    archive.settle(batch)  # not saved (the read carrying it failed)
    assert (await archive.load("j1")) is not None
    again = archive.take()
    assert again is not None and again.items == batch.items
    again.saved = True
    archive.settle(again)
    assert archive.take() is None
    assert await archive.load("j1") is None  # this store never got it: the test wrote nothing


async def test_settling_an_old_batch_keeps_a_newer_record_of_the_same_job() -> None:
    store = MemoryStore(hub_id="hub-a", backplane=MemoryBackplane())
    archive = JobArchive(store=store, ttl_ms=TTL_MS)
    archive.put(_record("j1", status="failed"))
    old = archive.take()
    assert old is not None
    archive.put(_record("j1", status="done"))  # e.g. an orphaned result replaced
    archive.settle(old)  # unsaved: must not bring the old version back over the new
    loaded = await archive.load("j1")
    assert loaded is not None and loaded.status == "done"
    assert await archive.flush()
    stored = await _stored(store, "j1")
    assert stored is not None and b'"done"' in stored


async def test_records_wait_in_memory_while_the_store_is_unreachable() -> None:
    # A real Redis client against a port nobody listens on.
    store = RedisStore(hub_id="hub-a", url=f"redis://127.0.0.1:{free_port()}/0", prefix="t")
    archive = JobArchive(store=store, ttl_ms=TTL_MS)
    try:
        archive.put(_record("j1"))
        assert not await archive.flush()
        batch = archive.take()  # queued again after the failed write
        assert batch is not None and [job_id for job_id, _ in batch.items] == ["j1"]
    finally:
        await store.aclose()


async def test_records_waiting_for_the_store_are_bounded_in_bytes() -> None:
    store = RedisStore(hub_id="hub-a", url=f"redis://127.0.0.1:{free_port()}/0", prefix="t")
    archive = JobArchive(store=store, ttl_ms=TTL_MS, max_bytes=50_000)
    big = Result(request_id="r", job_id="j", node_id="n1", ok=True, attempts=1,
                 output="o" * 20_000)
    try:
        for i in range(6):
            archive.put(JobRecord(job_id=f"j{i}", request_id=f"r{i}", status="done",
                                  node_id="n1", result=big))
        assert not await archive.flush()
        oldest = await archive.load("j0")
        newest = await archive.load("j5")
    finally:
        await store.aclose()
    assert oldest is not None and oldest.result is not None and oldest.result.error is not None
    assert oldest.result.error.code == "result_expired"
    assert newest is not None and newest.result is not None and newest.result.ok
