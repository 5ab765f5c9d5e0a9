"""`Reaper`: what is left in a dead hub's inbox, handled by a live hub, then the hub forgotten.

The inbox is paged through in id order (`Store.claim_inbox` with the last id
seen), every entry collected before any is handled: node events (results to
archive) go first, so that a job whose result is already in the inbox is never
run again for a resubmit queued behind it. Envelopes are handled through this
hub's `Inbox.handle` with `reaped_from` set: the router handles them on the
dead hub's behalf. The hub is dropped only if nothing arrived after the last
entry drained (`Store.drop_hub(upto=...)`), else the inbox is drained again.

One live hub reaps a dead hub at a time (the store's reaper lock): another
that finds the lock held (`InboxLocked`) waits until the holder has dropped the
hub, and never drops it itself. A hub whose presence is live is never reaped;
concurrent calls for one hub (a presence tick and several resubmits) run one
after the other.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from loguru import logger

from hub.cluster.inbox import Inbox
from hub.core.envelopes import NodeEvent, decode_envelope
from hub.store.base import InboxLocked, Store, stream_id
from hub.store.keys import REAPER_LOCK_TTL_MS

CLAIM_COUNT: Final = 256
"""Entries per claim call (the inbox is paged through in calls of this size)."""
MAX_ROUNDS: Final = 10
"""Drains of one inbox when entries keep arriving after each."""
LOCK_POLL_S: Final = 0.05
LOCK_WAIT_S: Final = 2 * REAPER_LOCK_TTL_MS / 1000
"""How long to wait for another hub's reap (its lock lapses if it died meanwhile)."""


class Reaper:
    def __init__(self, *, store: Store, inbox: Inbox) -> None:
        self.store = store
        self.inbox = inbox
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaped: set[str] = set()
        self._reaping: dict[str, asyncio.Task[object] | None] = {}
        """The task reaping each hub right now."""

    def __repr__(self) -> str:
        return f"Reaper(reaped={sorted(self._reaped)})"

    def revived(self, hub_ids: set[str]) -> None:
        """These hubs announced themselves again: reap them anew when they die."""
        self._reaped -= hub_ids

    async def reap(self, hub_id: str) -> None:
        """Drain `hub_id`'s inbox and forget the hub, or wait for the hub that does.

        Called again from within the reap (a reaped envelope's handling asks for
        it), it returns at once: the reap is under way in this very task."""
        if self._reaping.get(hub_id) is asyncio.current_task():
            return
        lock = self._locks.setdefault(hub_id, asyncio.Lock())
        async with lock:
            self._reaping[hub_id] = asyncio.current_task()
            try:
                await self._reap_once(hub_id)
            finally:
                del self._reaping[hub_id]

    async def _reap_once(self, hub_id: str) -> None:
        if hub_id in self._reaped or hub_id in await self.store.live_hubs():
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                if not await self._reap(hub_id):
                    return  # entries kept arriving: left for a later try
                break
            except InboxLocked as exc:
                # Another hub is draining it: its results are being archived. Wait for
                # it to finish (it drops the hub), never drop it under it.
                if hub_id not in await self.store.known_hubs():
                    break
                if time.monotonic() > deadline:
                    logger.warning("gave up waiting for {}", exc)
                    return
                await asyncio.sleep(LOCK_POLL_S)
        self._reaped.add(hub_id)

    async def _reap(self, hub_id: str) -> bool:
        """Drain and drop; False when entries kept arriving (try again later)."""
        after = "0-0"
        for _ in range(MAX_ROUNDS):
            entries: list[tuple[str, bytes]] = []
            while batch := await self.store.claim_inbox(hub_id, count=CLAIM_COUNT, after=after):
                entries.extend(batch)
                after = max(after, *(entry_id for entry_id, _ in batch), key=stream_id)
            if entries:
                entries.sort(key=lambda entry: 0 if _is_node_event(entry[1]) else 1)
                handled = await self.inbox.handle(hub_id, entries, reaped_from=hub_id)
                await self.store.ack_inbox(handled, hub_id=hub_id)
            if await self.store.drop_hub(hub_id, upto=after):
                return True
        logger.warning("hub {}'s inbox kept filling while being reaped; left for later", hub_id)
        return False


def _is_node_event(data: bytes) -> bool:
    try:
        return isinstance(decode_envelope(data), NodeEvent)
    except Exception:
        return False
