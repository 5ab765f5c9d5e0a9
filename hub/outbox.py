"""`Outbox`: envelopes for other hubs, sent in one store call per event-loop turn.

Everything queued in one turn leaves together (`Store.send_many`), in order.
A node's accept still queued when its result is queued is dropped: the result
implies it, and the job's home gets one envelope instead of two. While the
store is unreachable, envelopes wait for the next try, oldest first, up to
`OUTBOX_LIMIT`; past it the oldest are dropped (their attempts time out and
fail over, as for any lost message).
"""

from __future__ import annotations

import asyncio

from loguru import logger

from hub.envelopes import Envelope, NodeEvent, encode
from hub.errors import StoreUnavailable
from hub.messages import JobAccept, JobResult
from hub.store.base import Store

OUTBOX_LIMIT = 100_000
"""Envelopes kept for retry while the store is unreachable; older ones are dropped."""


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.closing = False
        self._queue: list[tuple[str, bytes] | None] = []
        self._accepts: dict[tuple[str, str, int], int] = {}
        """(hub, job, attempt) -> queue index of a node's accept not sent yet."""
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return sum(entry is not None for entry in self._queue)

    def send(self, hub_id: str, envelope: Envelope) -> None:
        """Queue an envelope for `hub_id`; sent with the others of this loop turn."""
        if isinstance(envelope, NodeEvent):
            message = envelope.message
            key = (hub_id, message.job_id, message.attempt)
            if isinstance(message, JobAccept):
                self._accepts[key] = len(self._queue)
            elif isinstance(message, JobResult):
                index = self._accepts.pop(key, None)
                if index is not None:  # a result implies its accept: one envelope, not two
                    self._queue[index] = None
        self._queue.append((hub_id, encode(envelope)))
        self._ready.set()

    async def flush(self) -> None:
        """Send what is queued; on `StoreUnavailable` keep it for the next try."""
        if self._queue:
            batch = [entry for entry in self._queue if entry is not None]
            self._queue = []
            self._accepts.clear()
            try:
                await self.store.send_many(batch)
            except StoreUnavailable:
                self._queue[:0] = batch
                self._accepts.clear()  # indexes moved; such accepts are simply sent
                del self._queue[: max(0, len(self._queue) - OUTBOX_LIMIT)]
                raise

    async def run(self) -> None:
        """Flush whenever something is queued, until `closing`."""
        while not self.closing:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self.flush()
            except StoreUnavailable:
                logger.warning("store unavailable: {} envelopes waiting", len(self))
                await asyncio.sleep(0.1)
