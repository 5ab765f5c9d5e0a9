"""`JobArchive`: finished jobs' records, kept in the store for duplicates and `GET /v1/jobs`.

A finished record is queued in memory and written in batches (one store
round trip for everything finished since the last write), so that no handler
waits on the store after a job's result is out: by `run` (woken at the end of
the loop turn that queued it), or, for the jobs that an inbox batch finished,
with the inbox's next read (`Inbox` takes them with `take` in the step that
finished them, before `run` wakes: the write costs no round trip of its own and
is stored before the entries that finished those jobs are acknowledged). Until written, `load`
answers from memory; while the store is unreachable the queue is kept and
retried, bounded by `max_bytes` (`max_archive_bytes`: past it the oldest
records are replaced by their tombstones, see `tombstone`) and by
`BACKLOG_LIMIT` records (oldest dropped first).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import msgspec
from loguru import logger

from hub.core.errors import StoreUnavailable
from hub.core.job_state import JobRecord
from hub.core.messages import JobResult, Result
from hub.core.principal import DEFAULT_TENANT
from hub.runtime.loop_turn import LoopTurn
from hub.store.base import RecordBatch, Store

BACKLOG_LIMIT = 200_000
"""Finished records kept while the store is unreachable; half the oldest go past it."""
DEFAULT_MAX_ARCHIVE_BYTES = 268_435_456
"""`HubConfig.max_archive_bytes`'s default."""
RECENT_S = 10.0
"""Records written this long ago are kept, to write again if the store restarts empty."""
RECENT_LIMIT = 10_000

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobRecord)


def tombstone(record: bytes) -> bytes | None:
    """What stays of an encoded record whose result is evicted from memory: its
    `JobRecord.expired` (a few hundred bytes); None if `record` is not a record."""
    try:
        return _encoder.encode(_decoder.decode(record).expired())
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class JobArchive:
    def __init__(
        self, *, store: Store, ttl_ms: int, max_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    ) -> None:
        self._store = store
        self._ttl_ms = ttl_ms
        self._max_bytes = max_bytes
        self._queued: dict[str, bytes] = {}
        """Records not written yet."""
        self._writing: dict[str, bytes] = {}
        """Records being written (by `flush`, or riding with an inbox read)."""
        self._ready = asyncio.Event()
        self._turn = LoopTurn(at_end=self._wake)
        """`put` wakes the writer at the end of the loop turn, not at once: the inbox
        takes the records an inbox batch finished in the same step (`take`), and a
        writer woken for each of them would find nothing to write."""
        self._recent: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        """Records written lately (monotonic s), oldest first; within `max_bytes` too
        (past it the oldest are kept as their tombstones)."""
        self._recent_bytes = 0
        self._keep_recent = store.waits
        """Only a store that can restart empty under a running hub (Redis) needs them."""

    def __repr__(self) -> str:
        return f"JobArchive({len(self._queued)} queued, {len(self._writing)} being written)"

    def put(self, record: JobRecord) -> None:
        """Archive a finished job's record (written by `run` shortly after, unless
        whoever finished it takes it first)."""
        self._queued[record.job_id] = _encoder.encode(record)
        self._turn.first()

    def _wake(self) -> None:
        if self._queued:
            self._ready.set()

    async def load(self, job_id: str) -> JobRecord | None:
        """A finished job's record (its `result` is set), from any hub; None if unknown."""
        data = self._queued.get(job_id) or self._writing.get(job_id)
        if data is None:
            data = await self._store.load_job(job_id)
        return None if data is None else _decoder.decode(data)

    def take(self) -> RecordBatch | None:
        """The queued records, to write now (whoever takes them calls `settle`)."""
        if not self._queued:
            return None
        batch = RecordBatch(list(self._queued.items()), self._ttl_ms)
        self._writing.update(self._queued)
        self._queued = {}
        return batch

    def settle(self, batch: RecordBatch) -> None:
        """A taken batch was written (`batch.saved`), or not: then it is queued again."""
        now = time.monotonic()
        for job_id, data in batch.items:
            if self._writing.get(job_id) is data:
                del self._writing[job_id]
            if not batch.saved:
                self._queued.setdefault(job_id, data)  # unless a newer one was put
            elif self._keep_recent:
                self._keep(job_id, now, data)
        if not batch.saved:
            self._ready.set()
            return
        if not self._keep_recent:
            return
        # Forgotten only once writes go through again: what was written just before the
        # store failed may be lost with it.
        horizon = now - RECENT_S
        recent = self._recent
        while recent and (len(recent) > RECENT_LIMIT or next(iter(recent.values()))[0] < horizon):
            self._recent_bytes -= len(recent.popitem(last=False)[1][1])
        if self._recent_bytes > self._max_bytes:
            self._shrink_recent()

    def _keep(self, job_id: str, now: float, data: bytes) -> None:
        old = self._recent.pop(job_id, None)
        if old is not None:
            self._recent_bytes -= len(old[1])
        self._recent[job_id] = (now, data)
        self._recent_bytes += len(data)

    def _shrink_recent(self) -> None:
        """Past `max_bytes`, the oldest recent records are kept as their tombstones (a
        resubmit after a store restart gets `result_expired`, never a second run)."""
        recent = self._recent
        for job_id, (written, data) in list(recent.items()):
            stone = tombstone(data)
            if stone is not None and len(stone) < len(data):
                recent[job_id] = (written, stone)
                self._recent_bytes -= len(data) - len(stone)
                if self._recent_bytes <= self._max_bytes:
                    return

    def rewrite_recent(self) -> list[JobRecord]:
        """The store restarted empty: queue the records written lately to be written
        again; those records (whose request bindings the caller restores)."""
        records = []
        for job_id, (_, data) in self._recent.items():
            self._queued.setdefault(job_id, data)
            records.append(_decoder.decode(data))
        if records:
            self._ready.set()
        return records

    async def run(self) -> None:
        """Write queued records, many per round trip; runs until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            if not await self.flush():
                await asyncio.sleep(0.2)  # the store is down: retry, keeping the records
                self._ready.set()

    async def flush(self) -> bool:
        """Write what is queued; False when the store could not be reached."""
        batch = self.take()
        if batch is None:
            return True
        try:
            await self._store.save_jobs(batch.items, batch.ttl_ms)
            batch.saved = True
        except StoreUnavailable as exc:
            logger.warning("{} finished job records wait for the store: {}", len(batch.items), exc)
        finally:
            self.settle(batch)
        if not batch.saved:
            self._trim()
        return batch.saved

    def _trim(self) -> None:
        """Bound the records waiting for an unreachable store (oldest first)."""
        queued = self._queued
        if len(queued) > BACKLOG_LIMIT:
            for job_id in list(queued)[: len(queued) // 2]:
                del queued[job_id]  # only a late resubmit misses them
        size = sum(len(data) for data in queued.values())
        if size <= self._max_bytes:
            return
        for job_id, data in list(queued.items()):
            stone = tombstone(data)
            if stone is not None and len(stone) < len(data):
                queued[job_id] = stone
                size -= len(data) - len(stone)
                if size <= self._max_bytes:
                    return

    async def put_orphan(
        self, node_id: str, request_id: str, message: JobResult, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        """Keep the result of a job whose home hub died, for the client's resubmit."""
        if await self.load(message.job_id) is not None:
            return
        result = Result(
            request_id=request_id, job_id=message.job_id, node_id=node_id, ok=message.ok,
            attempts=message.attempt, output=message.output, error=message.error,
        )
        self.put(JobRecord(
            job_id=message.job_id, request_id=request_id, node_id=node_id,
            status="done" if message.ok else "failed", attempt=message.attempt, result=result,
            orphaned=True, tenant=tenant,
        ))
