"""`MemoryStore`: the local-mode backend, state in this process.

Everything is a dict with lazy expiry. Several hubs in one process may share
one `MemoryStore` through `MemoryBackplane` (tests use this to run the
cross-hub path without Redis); a single hub, the embedded default, has its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hub.store.base import OwnershipConflict


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
            expires, key = expiries.popleft()
            entry = self._data.get(key)
            if entry is not None and entry[0] <= now:
                del self._data[key]


@dataclass
class MemoryBackplane:
    """State shared by every `MemoryStore` of one process."""

    clock: Callable[[], int] = _monotonic_ms
    bindings: _ExpiringDict = field(init=False)
    jobs: _ExpiringDict = field(init=False)
    nodes: _ExpiringDict = field(init=False)
    presence: _ExpiringDict = field(init=False)
    owners: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """node id -> (hub id, epoch, lease expiry ms)"""
    inboxes: dict[str, asyncio.Queue[tuple[str, bytes]]] = field(default_factory=dict)
    sequence: int = 0

    def __post_init__(self) -> None:
        self.bindings = _ExpiringDict(self.clock)
        self.jobs = _ExpiringDict(self.clock)
        self.nodes = _ExpiringDict(self.clock)
        self.presence = _ExpiringDict(self.clock)

    def inbox(self, hub_id: str) -> asyncio.Queue[tuple[str, bytes]]:
        queue = self.inboxes.get(hub_id)
        if queue is None:
            queue = self.inboxes[hub_id] = asyncio.Queue()
        return queue


class MemoryStore:
    """The `Store` of local mode; see the module docstring."""

    def __init__(self, *, hub_id: str, backplane: MemoryBackplane | None = None) -> None:
        self.hub_id = hub_id
        self._plane = backplane if backplane is not None else MemoryBackplane()

    def __repr__(self) -> str:
        return f"MemoryStore(hub_id={self.hub_id!r})"

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def bind_request(self, request_id: str, job_id: str, ttl_ms: int) -> str | None:
        existing = self._plane.bindings.get(request_id)
        if existing is not None:
            return str(existing)
        self._plane.bindings.set(request_id, job_id, ttl_ms)
        return None

    async def release_request(self, request_id: str, job_id: str) -> None:
        if self._plane.bindings.get(request_id) == job_id:
            self._plane.bindings.delete(request_id)

    async def save_job(self, job_id: str, record: bytes, ttl_ms: int) -> None:
        self._plane.jobs.set(job_id, record, ttl_ms)

    async def load_job(self, job_id: str) -> bytes | None:
        record = self._plane.jobs.get(job_id)
        return None if record is None else bytes(record) if isinstance(record, bytes) else None

    async def publish_node(self, node_id: str, entry: bytes, ttl_ms: int) -> None:
        self._plane.nodes.set(node_id, entry, ttl_ms)

    async def remove_node(self, node_id: str) -> None:
        self._plane.nodes.delete(node_id)

    async def directory(self) -> dict[str, bytes]:
        return {k: v for k, v in self._plane.nodes.items() if isinstance(v, bytes)}

    async def announce(self, ttl_ms: int) -> None:
        self._plane.presence.set(self.hub_id, self.hub_id, ttl_ms)

    async def live_hubs(self) -> set[str]:
        return {k for k, _ in self._plane.presence.items()}

    async def claim_node(self, node_id: str, ttl_ms: int, *, take_over: bool = False) -> int:
        now = self._plane.clock()
        current = self._plane.owners.get(node_id)
        if current is None or current[2] <= now:
            epoch = 1 if current is None else current[1] + 1
        elif current[0] == self.hub_id:
            epoch = current[1]
        elif take_over:
            epoch = current[1] + 1
        else:
            raise OwnershipConflict(node_id, current[0])
        self._plane.owners[node_id] = (self.hub_id, epoch, now + ttl_ms)
        return epoch

    async def release_node(self, node_id: str, epoch: int) -> None:
        current = self._plane.owners.get(node_id)
        if current is not None and current[0] == self.hub_id and current[1] == epoch:
            # Keep the epoch so the next owner's is higher: mark the lease lapsed.
            self._plane.owners[node_id] = (self.hub_id, epoch, 0)

    async def node_owner(self, node_id: str) -> tuple[str, int] | None:
        current = self._plane.owners.get(node_id)
        if current is None or current[2] <= self._plane.clock():
            return None
        return current[0], current[1]

    async def send_to_hub(self, hub_id: str, envelope: bytes) -> None:
        self._plane.sequence += 1
        self._plane.inbox(hub_id).put_nowait((f"{self._plane.sequence}-0", envelope))

    async def read_inbox(self, *, block_ms: int, count: int) -> Sequence[tuple[str, bytes]]:
        queue = self._plane.inbox(self.hub_id)
        if queue.empty():
            try:
                first = await asyncio.wait_for(queue.get(), block_ms / 1000)
            except TimeoutError:
                return []
        else:
            first = queue.get_nowait()
        entries = [first]
        while len(entries) < count and not queue.empty():
            entries.append(queue.get_nowait())
        return entries

    async def ack_inbox(self, entry_ids: Sequence[str]) -> None:
        # Delivery within one process cannot be lost; nothing stays pending.
        return None
