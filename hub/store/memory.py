"""`MemoryStore`: the local-mode backend, state in this process.

Everything is a dict with lazy expiry. Several hubs in one process may share
one `MemoryStore` through `MemoryBackplane` (tests use this to run the
cross-hub path without Redis); a single hub, the embedded default, has its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from hub.store.base import (
    Binding,
    HubBeat,
    InboxLocked,
    OwnershipConflict,
    RecordBatch,
    new_boot,
    stream_id,
)
from hub.store.keys import REAPER_LOCK_TTL_MS


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class _ExpiringDict:
    """A dict whose entries lapse `ttl_ms` after their last write."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._data: dict[str, tuple[int, bytes | str]] = {}
        self._expiries: deque[tuple[int, str]] = deque()

    def get(self, key: str) -> bytes | str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._data[key]
            return None
        return entry[1]

    def set(self, key: str, value: bytes | str, ttl_ms: int) -> None:
        now = self._clock()
        self._sweep(now)
        expires = now + ttl_ms
        self._data[key] = (expires, value)
        self._expiries.append((expires, key))

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def items(self) -> list[tuple[str, bytes | str]]:
        now = self._clock()
        return [(k, v) for k, (exp, v) in self._data.items() if exp > now]

    def _sweep(self, now: int) -> None:
        # Entries were appended in expiry order per TTL; stop at the first live one.
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, key = expiries.popleft()
            entry = self._data.get(key)
            if entry is not None and entry[0] <= now:
                del self._data[key]


@dataclass
class _Inbox:
    unread: deque[tuple[str, bytes]] = field(default_factory=deque)
    pending: dict[str, bytes] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class MemoryBackplane:
    """State shared by every `MemoryStore` of one process."""

    clock: Callable[[], int] = _monotonic_ms
    bindings: _ExpiringDict = field(init=False)
    jobs: _ExpiringDict = field(init=False)
    presence: _ExpiringDict = field(init=False)
    known: set[str] = field(default_factory=set)
    directories: dict[str, dict[str, bytes]] = field(default_factory=dict)
    owners: dict[str, tuple[str, int, int, str]] = field(default_factory=dict)
    """node id -> (hub id, epoch, lease expiry ms, the owner's boot token)"""
    beats: dict[str, int] = field(default_factory=dict)
    """hub id -> its last liveness beat (ms)"""
    boots: dict[str, str] = field(default_factory=dict)
    """hub id -> the boot token of its current run"""
    inboxes: dict[str, _Inbox] = field(default_factory=dict)
    subscribers: list[asyncio.Queue[bytes | None]] = field(default_factory=list)
    dead_letters: list[tuple[str, str, bytes, str]] = field(default_factory=list)
    reapers: dict[str, tuple[str, int]] = field(default_factory=dict)
    """dead hub id -> (reaping hub id, lock expiry ms)"""
    sequence: int = 0

    def __post_init__(self) -> None:
        self.bindings = _ExpiringDict(self.clock)
        self.jobs = _ExpiringDict(self.clock)
        self.presence = _ExpiringDict(self.clock)

    def inbox(self, hub_id: str) -> _Inbox:
        inbox = self.inboxes.get(hub_id)
        if inbox is None:
            inbox = self.inboxes[hub_id] = _Inbox()
        return inbox


class MemoryStore:
    """The `Store` of local mode; see the module docstring."""

    waits = False  # every call completes without suspending (except reading the inbox)

    def __init__(
        self, *, hub_id: str, backplane: MemoryBackplane | None = None, boot: str | None = None,
        hub_timeout_ms: int = 3_000,
    ) -> None:
        self.hub_id = hub_id
        self.boot = boot or new_boot()
        self.hub_timeout_ms = hub_timeout_ms
        self._plane = backplane if backplane is not None else MemoryBackplane()
        self._updates: asyncio.Queue[bytes | None] | None = None

    def __repr__(self) -> str:
        return f"MemoryStore(hub_id={self.hub_id!r})"

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        if self._updates is not None:
            if self._updates in self._plane.subscribers:
                self._plane.subscribers.remove(self._updates)
            self._updates.put_nowait(None)
            self._updates = None

    # --- idempotency and job records ---------------------------------------------------

    async def bind_request(self, request_id: str, job_id: str, ttl_ms: int) -> str | None:
        return (await self.bind_requests([Binding(request_id, job_id, ttl_ms)]))[0]

    async def bind_requests(self, bindings: Sequence[Binding]) -> list[str | None]:
        made: list[str | None] = []
        for binding in bindings:
            existing = self._plane.bindings.get(binding.request_id)
            if existing is not None:
                made.append(str(existing))
                continue
            self._plane.bindings.set(binding.request_id, binding.job_id, binding.ttl_ms)
            if binding.send_to is not None:
                await self.send_many([(binding.send_to, binding.envelope)])
            made.append(None)
        return made

    async def release_request(self, request_id: str, job_id: str) -> None:
        if self._plane.bindings.get(request_id) == job_id:
            self._plane.bindings.delete(request_id)

    async def rebind_request(
        self, request_id: str, old_job_id: str, new_job_id: str, ttl_ms: int
    ) -> bool:
        if self._plane.bindings.get(request_id) != old_job_id:
            return False
        self._plane.bindings.set(request_id, new_job_id, ttl_ms)
        return True

    async def save_job(self, job_id: str, record: bytes, ttl_ms: int) -> None:
        self._plane.jobs.set(job_id, record, ttl_ms)

    async def save_jobs(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        for job_id, record in items:
            self._plane.jobs.set(job_id, record, ttl_ms)

    async def load_job(self, job_id: str) -> bytes | None:
        record = self._plane.jobs.get(job_id)
        return record if isinstance(record, bytes) else None

    # --- published nodes---------------------------------------------------------------

    async def publish_node(self, node_id: str, entry: bytes, ttl_ms: int) -> None:
        self._plane.directories.setdefault(self.hub_id, {})[node_id] = entry

    async def remove_node(self, node_id: str) -> None:
        self._plane.directories.get(self.hub_id, {}).pop(node_id, None)

    async def clear_nodes(self) -> None:
        self._plane.directories.pop(self.hub_id, None)

    async def node_entries(self) -> dict[str, bytes]:
        live = await self.live_hubs()
        return {
            node_id: entry
            for hub_id, entries in self._plane.directories.items()
            if hub_id in live
            for node_id, entry in entries.items()
        }

    async def publish_fleet_update(self, update: bytes) -> None:
        for queue in self._plane.subscribers:
            queue.put_nowait(update)

    async def fleet_updates(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._updates = queue
        self._plane.subscribers.append(queue)
        try:
            while (update := await queue.get()) is not None:
                yield update
        finally:
            if queue in self._plane.subscribers:
                self._plane.subscribers.remove(queue)

    # --- presence and ownership ----------------------------------------------------------

    async def announce(self, ttl_ms: int) -> bool:
        present = self._plane.presence.get(self.hub_id) is not None
        self._plane.presence.set(self.hub_id, self.hub_id, ttl_ms)
        self._plane.known.add(self.hub_id)
        return present

    async def beat(self) -> dict[str, HubBeat]:
        plane = self._plane
        now = plane.clock()
        plane.beats[self.hub_id] = now
        plane.boots[self.hub_id] = self.boot
        return {h: HubBeat(now - t, plane.boots.get(h, "")) for h, t in plane.beats.items()}

    async def live_hubs(self) -> set[str]:
        return {k for k, _ in self._plane.presence.items()}

    async def known_hubs(self) -> set[str]:
        return set(self._plane.known)

    async def drop_hub(self, hub_id: str, *, upto: str | None = None) -> bool:
        self._check_reaper(hub_id)
        inbox = self._plane.inboxes.get(hub_id)
        if upto is not None and inbox is not None:
            last = stream_id(upto)
            ids = [*inbox.pending, *(entry_id for entry_id, _ in inbox.unread)]
            if any(stream_id(entry_id) > last for entry_id in ids):
                return False
        self._plane.known.discard(hub_id)
        self._plane.directories.pop(hub_id, None)
        self._plane.inboxes.pop(hub_id, None)
        self._plane.reapers.pop(hub_id, None)
        self._plane.beats.pop(hub_id, None)
        self._plane.boots.pop(hub_id, None)
        return True

    def _check_reaper(self, hub_id: str) -> None:
        """Raise `InboxLocked` when another hub holds `hub_id`'s reaper lock."""
        lock = self._plane.reapers.get(hub_id)
        if lock is not None and lock[0] != self.hub_id and lock[1] > self._plane.clock():
            raise InboxLocked(hub_id, lock[0])

    async def claim_node(self, node_id: str, ttl_ms: int, *, take_over: bool = False) -> int:
        plane = self._plane
        now = plane.clock()
        current = plane.owners.get(node_id)
        if current is not None and current[0] == self.hub_id and current[3] == self.boot and (
            current[2] > now
        ):
            epoch = current[1]
        elif current is None or current[2] <= now or not self._owner_live(current, now):
            epoch = 1 if current is None else current[1] + 1
        elif take_over or current[0] == self.hub_id:  # this hub's previous run
            epoch = current[1] + 1
        else:
            raise OwnershipConflict(node_id, current[0])
        plane.owners[node_id] = (self.hub_id, epoch, now + ttl_ms, self.boot)
        return epoch

    def _owner_live(self, owner: tuple[str, int, int, str], now: int) -> bool:
        """Whether a node's owner still holds it: presence, recent beats, same run."""
        hub_id, _, _, boot = owner
        beat = self._plane.beats.get(hub_id)
        return (
            self._plane.presence.get(hub_id) is not None
            and (beat is None or now - beat <= self.hub_timeout_ms)
            and self._plane.boots.get(hub_id, boot) == boot
        )

    async def renew_nodes(self, node_ids: Sequence[str], ttl_ms: int) -> list[str]:
        claims = await self.renew_claims(node_ids, ttl_ms)
        return [node_id for node_id, epoch in claims.items() if epoch is None]

    async def renew_claims(self, node_ids: Sequence[str], ttl_ms: int) -> dict[str, int | None]:
        claims: dict[str, int | None] = {}
        for node_id in node_ids:
            try:
                claims[node_id] = await self.claim_node(node_id, ttl_ms)
            except OwnershipConflict:
                claims[node_id] = None
        return claims

    async def release_node(self, node_id: str, epoch: int) -> None:
        current = self._plane.owners.get(node_id)
        if current is not None and current[0] == self.hub_id and (
            current[1] == epoch or current[3] == self.boot
        ):
            # Keep the epoch so the next owner's is higher: mark the lease lapsed.
            self._plane.owners[node_id] = (self.hub_id, epoch, 0, current[3])

    async def node_owner(self, node_id: str) -> tuple[str, int] | None:
        current = self._plane.owners.get(node_id)
        if current is None or current[2] <= self._plane.clock():
            return None
        return current[0], current[1]

    # --- inboxes ---------------------------------------------------------------------------

    async def send_to_hub(self, hub_id: str, envelope: bytes) -> None:
        await self.send_many([(hub_id, envelope)])

    async def send_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for hub_id, envelope in items:
            self._plane.sequence += 1
            inbox = self._plane.inbox(hub_id)
            inbox.unread.append((f"{self._plane.sequence}-0", envelope))
            inbox.arrived.set()

    async def read_inbox(
        self, *, block_ms: int, count: int, ack: Sequence[str] = (),
        records: RecordBatch | None = None,
    ) -> Sequence[tuple[str, bytes]]:
        if records is not None:
            await self.save_jobs(records.items, records.ttl_ms)
            records.saved = True
        await self.ack_inbox(ack)
        inbox = self._plane.inbox(self.hub_id)
        if not inbox.unread:
            inbox.arrived.clear()
            try:
                # Not `wait_for`, which on 3.11 can swallow the reader's cancellation.
                async with asyncio.timeout(block_ms / 1000):
                    await inbox.arrived.wait()
            except TimeoutError:
                return []
        entries: list[tuple[str, bytes]] = []
        while inbox.unread and len(entries) < count:
            entry_id, envelope = inbox.unread.popleft()
            inbox.pending[entry_id] = envelope
            entries.append((entry_id, envelope))
        return entries

    async def pending_inbox(self, *, count: int, after: str = "0-0") -> Sequence[tuple[str, bytes]]:
        inbox = self._plane.inboxes.get(self.hub_id)
        if inbox is None:
            return []
        start = stream_id(after)
        mine = sorted(
            (item for item in inbox.pending.items() if stream_id(item[0]) > start),
            key=lambda item: stream_id(item[0]),
        )
        return mine[:count]

    async def ack_inbox(self, entry_ids: Sequence[str], *, hub_id: str | None = None) -> None:
        inbox = self._plane.inboxes.get(hub_id or self.hub_id)
        if inbox is not None:
            for entry_id in entry_ids:
                inbox.pending.pop(entry_id, None)

    async def claim_inbox(
        self, hub_id: str, *, count: int, after: str = "0-0"
    ) -> Sequence[tuple[str, bytes]]:
        self._check_reaper(hub_id)
        self._plane.reapers[hub_id] = (self.hub_id, self._plane.clock() + REAPER_LOCK_TTL_MS)
        inbox = self._plane.inboxes.get(hub_id)
        if inbox is None:
            return []
        start = stream_id(after)
        pending = sorted(
            (item for item in inbox.pending.items() if stream_id(item[0]) > start),
            key=lambda item: stream_id(item[0]),
        )
        entries = pending[:count]
        while inbox.unread and len(entries) < count:
            entry_id, envelope = inbox.unread.popleft()
            inbox.pending[entry_id] = envelope
            entries.append((entry_id, envelope))
        return entries

    async def dead_letter(self, hub_id: str, entry_id: str, envelope: bytes, why: str) -> None:
        self._plane.dead_letters.append((hub_id, entry_id, envelope, why))
        await self.ack_inbox([entry_id], hub_id=hub_id)
