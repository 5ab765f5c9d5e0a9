"""`DeadlineQueue`: pending deadlines (accept, attempt, job) in one heap.

Each deadline is keyed by its item (hashable, e.g. `(job_id, attempt, kind)`).
`discard` forgets one that no longer matters (its job finished or moved to the
next attempt), and pushing an item that is pending replaces it. The heap
entry itself is left behind and skipped when it surfaces; once those dead
entries outnumber the live ones the heap is rebuilt without them, so its size
stays within twice the live deadlines however long they were (a job's overall
deadline may be a day away). Pure: the caller passes `now_ms`.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import Final, Generic, TypeVar

T = TypeVar("T", bound=Hashable)

COMPACT_MIN: Final = 64
"""Dead entries tolerated before a rebuild is considered (small heaps never rebuild)."""


class DeadlineQueue(Generic[T]):
    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._live: dict[T, int] = {}
        """item -> sequence number of its current heap entry."""
        self._seq = 0

    def __len__(self) -> int:
        """Pending deadlines (discarded and replaced ones not counted)."""
        return len(self._live)

    @property
    def heap_size(self) -> int:
        """Heap entries, dead ones included (bounded by twice `len` plus `COMPACT_MIN`)."""
        return len(self._heap)

    def __repr__(self) -> str:
        return f"DeadlineQueue({len(self._live)} pending, next={self.next_due()})"

    def push(self, due_ms: int, item: T) -> bool:
        """Add a deadline (replacing the item's pending one); True when it is now the
        earliest entry (a sleeper should wake)."""
        self._seq += 1
        self._live[item] = self._seq
        heapq.heappush(self._heap, (due_ms, self._seq, item))
        self._compact()
        return self._heap[0][1] == self._seq

    def discard(self, item: T) -> None:
        """Forget the item's pending deadline, if any."""
        if self._live.pop(item, None) is not None:
            self._compact()

    def discard_all(self, items: Iterable[T]) -> None:
        """`discard` each of `items`, with one look at the heap's dead entries."""
        pop = self._live.pop
        found = False
        for item in items:
            if pop(item, None) is not None:
                found = True
        if found:
            self._compact()

    def next_due(self) -> int | None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # dead: discarded or replaced
        return heap[0][0] if heap else None

    def pop_due(self, now_ms: int) -> list[T]:
        due: list[T] = []
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now_ms:
            _, seq, item = heapq.heappop(heap)
            if live.get(item) == seq:
                del live[item]
                due.append(item)
        return due

    def _compact(self) -> None:
        dead = len(self._heap) - len(self._live)
        if dead > COMPACT_MIN and dead > len(self._live):
            live = self._live
            self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)
