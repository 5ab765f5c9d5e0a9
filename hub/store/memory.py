"""`MemoryStore`: the local-mode backend, state in this process.

Everything is a dict with lazy expiry. Several hubs in one process may share
one `MemoryStore` through `MemoryBackplane` (tests use this to run the
cross-hub path without Redis); a single hub, the embedded default, has its own.
Finished job records are also bounded in bytes (`RecordShelf`,
`max_archive_bytes`): past the bound the oldest results are evicted, leaving
a tombstone that answers a resubmit with `result_expired`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from hub.core.principal import DEFAULT_TENANT
from hub.store.archive import DEFAULT_MAX_ARCHIVE_BYTES, tombstone
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

ENTRY_OVERHEAD: Final = 200
"""Bytes a record costs besides its own (key, dict slot, tuple), as `RecordShelf` counts."""


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def _request_key(tenant: str, request_id: str) -> str:
    """A binding's key: the request id within its tenant (a tenant never holds `:`)."""
    return f"{tenant}:{request_id}"


def _utterance_key(tenant: str, session_id: str, index: int) -> str:
    return f"u:{tenant}:{index}:{session_id}"


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


class RecordShelf:
    """Finished job records: each lapses `ttl_ms` after it is written, and together
    they hold at most `max_bytes` (each counted as its length + `ENTRY_OVERHEAD`).

    Past `max_bytes` the oldest records are replaced by their tombstones
    (`tombstone`: a few hundred bytes, a failed `result_expired` result in
    place of the real one), so that a resubmit is answered and the job never
    runs twice. Tombstones take at most a quarter of the budget: past it, and
    when only tombstones are left, the oldest tombstone is dropped (a resubmit
    of that request then gets `duplicate_in_flight` while its binding lasts).
    Every record is written with the same TTL (`idempotency_ttl_ms`), so
    insertion order is expiry order and both are swept from the front.
    """

    def __init__(
        self,
        clock: Callable[[], int],
        max_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
        make_tombstone: Callable[[bytes], bytes | None] = tombstone,
    ) -> None:
        self._clock = clock
        self.max_bytes = max_bytes
        self._make_tombstone = make_tombstone
        self._records: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._tombstones: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self.record_bytes = 0
        self.tombstone_bytes = 0
        self.evicted = 0
        """Results replaced by their tombstone so far."""

    def __len__(self) -> int:
        return len(self._records) + len(self._tombstones)

    def get(self, key: str) -> bytes | None:
        now = self._clock()
        for shelf in (self._records, self._tombstones):
            entry = shelf.get(key)
            if entry is not None:
                return entry[1] if entry[0] > now else None
        return None

    def is_tombstone(self, key: str) -> bool:
        return key in self._tombstones

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.set_many(((key, value),), ttl_ms)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        """`set` each of `items` (a batch of the archive's): one sweep of what lapsed and
        one fit to `max_bytes` for the batch."""
        if not items:
            return
        now = self._clock()
        self._sweep(now)
        expires = now + ttl_ms
        records = self._records
        added = 0
        for key, value in items:
            if key in records or key in self._tombstones:
                self._remove(key)
            records[key] = (expires, value)
            added += len(value) + ENTRY_OVERHEAD
        self.record_bytes += added
        self._fit()

    def _remove(self, key: str) -> None:
        entry = self._records.pop(key, None)
        if entry is not None:
            self.record_bytes -= len(entry[1]) + ENTRY_OVERHEAD
        entry = self._tombstones.pop(key, None)
        if entry is not None:
            self.tombstone_bytes -= len(entry[1]) + ENTRY_OVERHEAD

    def _fit(self) -> None:
        tombstone_share = self.max_bytes // 4
        while self.record_bytes + self.tombstone_bytes > self.max_bytes and self._records:
            key, (expires, data) = self._records.popitem(last=False)
            self.record_bytes -= len(data) + ENTRY_OVERHEAD
            self.evicted += 1
            stone = self._make_tombstone(data)
            if stone is not None:
                self._tombstones[key] = (expires, stone)
                self.tombstone_bytes += len(stone) + ENTRY_OVERHEAD
            while self.tombstone_bytes > tombstone_share:
                self._drop_tombstone()
        while self.record_bytes + self.tombstone_bytes > self.max_bytes and self._tombstones:
            self._drop_tombstone()

    def _drop_tombstone(self) -> None:
        _, (_, stone) = self._tombstones.popitem(last=False)
        self.tombstone_bytes -= len(stone) + ENTRY_OVERHEAD

    def _sweep(self, now: int) -> None:
        for shelf in (self._records, self._tombstones):
            while shelf:
                key, (expires, _) = next(iter(shelf.items()))
                if expires > now:
                    break
                self._remove(key)


@dataclass
class _Inbox:
    unread: deque[tuple[str, bytes]] = field(default_factory=deque)
    pending: dict[str, bytes] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class MemoryBackplane:
    """State shared by every `MemoryStore` of one process."""

    clock: Callable[[], int] = _monotonic_ms
    max_record_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    """`max_archive_bytes`: the bound of `jobs`."""
    bindings: _ExpiringDict = field(init=False)
    live: _ExpiringDict = field(init=False)
    """Live sessions' records and their running utterances' payloads."""
    rooms: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """Rooms' members (local mode holds its rooms for as long as they have members)."""
    jobs: RecordShelf = field(init=False)
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
        self.live = _ExpiringDict(self.clock)
        self.jobs = RecordShelf(self.clock, self.max_record_bytes)
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

    async def bind_request(
        self, request_id: str, job_id: str, ttl_ms: int, *, tenant: str = DEFAULT_TENANT
    ) -> str | None:
        return (await self.bind_requests([Binding(request_id, job_id, ttl_ms, tenant=tenant)]))[0]

    async def bind_requests(self, bindings: Sequence[Binding]) -> list[str | None]:
        made: list[str | None] = []
        for binding in bindings:
            key = _request_key(binding.tenant, binding.request_id)
            existing = self._plane.bindings.get(key)
            if existing is not None:
                made.append(str(existing))
                continue
            self._plane.bindings.set(key, binding.job_id, binding.ttl_ms)
            if binding.send_to is not None:
                await self.send_many([(binding.send_to, binding.envelope)])
            made.append(None)
        return made

    async def release_request(
        self, request_id: str, job_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        key = _request_key(tenant, request_id)
        if self._plane.bindings.get(key) == job_id:
            self._plane.bindings.delete(key)

    async def rebind_request(
        self, request_id: str, old_job_id: str, new_job_id: str, ttl_ms: int,
        *, tenant: str = DEFAULT_TENANT,
    ) -> bool:
        key = _request_key(tenant, request_id)
        if self._plane.bindings.get(key) != old_job_id:
            return False
        self._plane.bindings.set(key, new_job_id, ttl_ms)
        return True

    async def save_job(self, job_id: str, record: bytes, ttl_ms: int) -> None:
        self._plane.jobs.set(job_id, record, ttl_ms)

    async def save_jobs(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        self._plane.jobs.set_many(items, ttl_ms)

    async def load_job(self, job_id: str) -> bytes | None:
        return self._plane.jobs.get(job_id)

    # --- live sessions -----------------------------------------------------------------

    async def save_live(
        self, tenant: str, session_id: str, record: bytes, ttl_ms: int,
        *, utterance: tuple[int, bytes, int] | None = None,
    ) -> None:
        self._plane.live.set(f"s:{tenant}:{session_id}", record, ttl_ms)
        if utterance is not None:
            index, payload, utterance_ttl_ms = utterance
            self._plane.live.set(_utterance_key(tenant, session_id, index), payload,
                                 utterance_ttl_ms)

    async def load_live(self, tenant: str, session_id: str) -> bytes | None:
        value = self._plane.live.get(f"s:{tenant}:{session_id}")
        return value if isinstance(value, bytes) else None

    async def load_utterance(self, tenant: str, session_id: str, index: int) -> bytes | None:
        value = self._plane.live.get(_utterance_key(tenant, session_id, index))
        return value if isinstance(value, bytes) else None

    async def drop_utterance(self, tenant: str, session_id: str, index: int) -> None:
        self._plane.live.delete(_utterance_key(tenant, session_id, index))

    # --- rooms ---------------------------------------------------------------------------

    async def room_join(
        self, tenant: str, room: str, member_id: str, entry: bytes, *, max_members: int,
        ttl_ms: int,
    ) -> dict[str, bytes] | None:
        members = self._plane.rooms.setdefault(f"{tenant}:{room}", {})
        if member_id not in members and len(members) >= max_members:
            return None
        members[member_id] = entry
        return dict(members)

    async def room_leave(self, tenant: str, room: str, member_ids: Sequence[str]) -> None:
        key = f"{tenant}:{room}"
        members = self._plane.rooms.get(key)
        if members is None:
            return
        for member_id in member_ids:
            members.pop(member_id, None)
        if not members:
            del self._plane.rooms[key]

    async def room_members(self, tenant: str, room: str) -> dict[str, bytes]:
        return dict(self._plane.rooms.get(f"{tenant}:{room}", {}))

    # --- published nodes---------------------------------------------------------------

    async def publish_node(self, node_id: str, entry: bytes, ttl_ms: int) -> None:
        self._plane.directories.setdefault(self.hub_id, {})[node_id] = entry

    async def remove_node(self, node_id: str) -> None:
        self._plane.directories.get(self.hub_id, {}).pop(node_id, None)

    async def publish_nodes(
        self, entries: Sequence[tuple[str, bytes]], removals: Sequence[str], ttl_ms: int
    ) -> None:
        directory = self._plane.directories.setdefault(self.hub_id, {})
        for node_id in removals:
            directory.pop(node_id, None)
        directory.update(entries)

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

    async def announce(self, ttl_ms: int, *, has_nodes: bool = False) -> bool:
        present = self._plane.presence.get(self.hub_id) is not None
        if has_nodes and not self._plane.directories.get(self.hub_id):
            present = False
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

    async def claim_nodes(self, node_ids: Sequence[str], ttl_ms: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for node_id in node_ids:
            try:
                out.append((await self.claim_node(node_id, ttl_ms), self.hub_id))
            except OwnershipConflict as exc:
                out.append((-1, exc.owner))
        return out

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
            self._plane.owners[node_id] = (self.hub_id, current[1], 0, current[3])

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
