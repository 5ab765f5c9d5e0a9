"""`DeadlineQueue`: pending deadlines (accept, attempt, job) in one heap.

Entries are never removed when they stop mattering; whoever pops one checks
whether it still applies (the job may have moved on). That keeps a push at
O(log n) with no handle to cancel. Pure: the caller passes `now_ms`.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

T = TypeVar("T")


class DeadlineQueue(Generic[T]):
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"DeadlineQueue({len(self._heap)} pending, next={self.next_due()})"

    def push(self, due_ms: int, item: T) -> bool:
        """Add a deadline; True when it is now the earliest (a sleeper should wake)."""
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, item))
        return self._heap[0][1] == self._seq

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> list[T]:
        due: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            due.append(heapq.heappop(heap)[2])
        return due
