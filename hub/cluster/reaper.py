"""`Reaper`: what is left in a dead hub's inbox, handled by a live hub, then the hub forgotten.

Node events (results to archive) go first, so that a job whose result is
already in the inbox is never run again for a resubmit queued behind it.
Envelopes are handled through this hub's `Inbox.handle` with `reaped_from`
set: the router handles them on the dead hub's behalf. A hub whose presence
is live is never reaped; concurrent calls for one hub (a presence tick and
several resubmits) run one after the other.
"""

from __future__ import annotations

import asyncio
from typing import Final

from hub.cluster.inbox import Inbox
from hub.core.envelopes import NodeEvent, decode_envelope
from hub.store.base import Store

CLAIM_COUNT: Final = 256


class Reaper:
    def __init__(self, *, store: Store, inbox: Inbox) -> None:
        self.store = store
        self.inbox = inbox
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaped: set[str] = set()

    def __repr__(self) -> str:
        return f"Reaper(reaped={sorted(self._reaped)})"

    def revived(self, hub_ids: set[str]) -> None:
        """These hubs announced themselves again: reap them anew when they die."""
        self._reaped -= hub_ids

    async def reap(self, hub_id: str) -> None:
        lock = self._locks.setdefault(hub_id, asyncio.Lock())
        async with lock:
            if hub_id in self._reaped or hub_id in await self.store.live_hubs():
                return
            await self._reap(hub_id)
            self._reaped.add(hub_id)

    async def _reap(self, hub_id: str) -> None:
        entries: list[tuple[str, bytes]] = []
        while batch := await self.store.claim_inbox(hub_id, count=CLAIM_COUNT):
            known = {entry_id for entry_id, _ in entries}
            fresh = [entry for entry in batch if entry[0] not in known]
            if not fresh:
                break
            entries.extend(fresh)
        entries.sort(key=lambda entry: 0 if _is_node_event(entry[1]) else 1)
        if entries:
            handled = await self.inbox.handle(hub_id, entries, reaped_from=hub_id)
            await self.store.ack_inbox(handled, hub_id=hub_id)
        await self.store.drop_hub(hub_id)


def _is_node_event(data: bytes) -> bool:
    try:
        return isinstance(decode_envelope(data), NodeEvent)
    except Exception:
        return False
