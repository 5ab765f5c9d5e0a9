"""`Inbox`: this hub's stream of envelopes from other hubs, read and handled in order.

Entries are read in batches by the consumer group and handed to the
`EnvelopeHandler` one by one. A handled entry is acknowledged by the next
read (the XACK rides in the same write, after the blocking read: Redis runs
it when the read returns, so it costs no wake-up of its own); the records of
the jobs a batch finished ride with that read too, between the two, so a
record is stored no later than the entry that finished its job is
acknowledged. An entry that cannot be decoded or handled goes to the
dead-letter stream; a store outage gets a few tries first. A dead hub's
inbox is drained through the same `handle` by whoever reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from loguru import logger

from hub.core.envelopes import Envelope, decode_envelope
from hub.core.errors import StoreUnavailable
from hub.store.archive import JobArchive
from hub.store.base import RecordBatch, Store, stream_id

MAX_DELIVERIES: Final = 3
INBOX_BLOCK_MS: Final = 250
"""How long an inbox read waits for entries; also the longest a handled entry waits
for its acknowledgement, which rides with the next read."""
RECORDS_BLOCK_MS: Final = 5
"""As `INBOX_BLOCK_MS`, for a read that carries finished jobs' records."""
READ_COUNT: Final = 512


class EnvelopeHandler(Protocol):
    async def handle_envelope(self, envelope: Envelope, *, reaped_from: str | None) -> None:
        """Act on an envelope; `reaped_from` names the dead hub it was meant for."""


class Inbox:
    def __init__(
        self, *, hub_id: str, store: Store, archive: JobArchive, handler: EnvelopeHandler,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.hub_id = hub_id
        self._on_failure = on_failure
        """Told when a read fails (the store's health, see `Cluster.store_troubled`)."""
        self.store = store
        self.archive = archive
        self.handler = handler
        self.closing = False
        self._unacked: list[str] = []
        """Entries handled, to acknowledge with the next read."""

    def __repr__(self) -> str:
        return f"Inbox(hub={self.hub_id!r}, unacked={len(self._unacked)})"

    async def run(self) -> None:
        """Read and handle this hub's inbox until `closing`."""
        records: RecordBatch | None = None
        while not self.closing:
            try:
                # Entries handled are acknowledged by the next read, and the records of
                # the jobs they finished written with it (see `Store.read_inbox`); the
                # read waits less then, so that they are not held back long when idle.
                entries = await self.store.read_inbox(
                    block_ms=INBOX_BLOCK_MS if records is None else RECORDS_BLOCK_MS,
                    count=READ_COUNT, ack=self._unacked, records=records,
                )
                self._unacked = []
            except BaseException as exc:
                self._settle(records)  # unsaved ones are queued again
                records = None
                if isinstance(exc, StoreUnavailable):
                    self._on_failure()
                elif isinstance(exc, Exception):  # e.g. the stream deleted under a read
                    logger.exception("reading the inbox failed")
                else:
                    raise
                await asyncio.sleep(0.2)
                continue
            if entries:
                # The entries first (a job's result on its way to its client), then the
                # bookkeeping of the records the read carried.
                try:
                    self._unacked = await self.handle(self.hub_id, entries, reaped_from=None)
                finally:
                    self._settle(records)
                records = self.archive.take()  # now, before its own writer wakes
                # Let the writes these entries caused (a job to its node, a result to
                # its client: flushed at the end of the loop turn) leave before the
                # next read's round trip is started.
                await asyncio.sleep(0)
            else:
                self._settle(records)
                records = None

    def _settle(self, records: RecordBatch | None) -> None:
        """The records a read carried: saved, or queued again (`JobArchive.settle`)."""
        if records is not None:
            self.archive.settle(records)

    async def recover(self) -> int:
        """At start: handle the entries an earlier run of this hub read and never
        acknowledged (it died in between); how many there were."""
        recovered = 0
        after = "0-0"
        while batch := await self.store.pending_inbox(count=READ_COUNT, after=after):
            after = max((entry_id for entry_id, _ in batch), key=stream_id)
            handled = await self.handle(self.hub_id, batch, reaped_from=None)
            await self.store.ack_inbox(handled)
            recovered += len(batch)
        if recovered:
            logger.info("handled {} inbox entries an earlier run left unacknowledged", recovered)
        return recovered

    async def handle(
        self, inbox_hub: str, entries: Sequence[tuple[str, bytes]], *, reaped_from: str | None
    ) -> list[str]:
        """Handle entries in order; the ids of those handled, still to acknowledge
        (those that failed went to the dead letters, which acknowledges them)."""
        done: list[str] = []
        for entry_id, data in entries:
            # Retried here, in order: a consumer group never hands an unacknowledged
            # entry to the same reader again. A store outage gets a few tries; an
            # entry that cannot be decoded or handled goes to the dead letters at once.
            for tries in range(1, MAX_DELIVERIES + 1):
                try:
                    envelope = decode_envelope(data)
                    await self.handler.handle_envelope(envelope, reaped_from=reaped_from)
                except StoreUnavailable as exc:
                    if tries < MAX_DELIVERIES:
                        await asyncio.sleep(0.2 * tries)
                        continue
                    failure: Exception | None = exc
                except Exception as exc:
                    failure = exc
                else:
                    failure = None
                break
            if failure is None:
                done.append(entry_id)
            else:
                logger.opt(exception=failure).error("inbox entry {} failed", entry_id)
                await self.store.dead_letter(inbox_hub, entry_id, data, repr(failure))
        return done

    async def ack_rest(self) -> None:
        """Acknowledge what was handled and still waits for the next read (closing)."""
        if self._unacked:
            with contextlib.suppress(StoreUnavailable):
                await self.store.ack_inbox(self._unacked)
            self._unacked = []
