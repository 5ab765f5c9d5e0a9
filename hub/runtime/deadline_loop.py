"""`DeadlineLoop`: fires the job path's deadlines on time (the I/O half of `timers.py`).

`DeadlineQueue` (pure) orders them; this loop sleeps until the next one is
due, wakes early when an earlier one is pushed, and hands each due item to
its handler, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from loguru import logger

from hub.core.timers import DeadlineQueue

T = TypeVar("T", bound=Hashable)


class Clock:
    """Monotonic milliseconds for deadlines, wall-clock milliseconds for the wire."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


TICK_MS = 10
"""Deadlines fire on multiples of this (up to this late), so that a steady stream
of jobs wakes the loop once a tick for all the deadlines due in it, not once each."""
STALL_MS = 100
"""Waking this much later than planned means the event loop stalled (CPU steal, a long
GC pause, SIGSTOP): see `DeadlineLoop.run`."""


class DeadlineLoop(Generic[T]):
    def __init__(self, clock: Clock, on_due: Callable[[T], Awaitable[None]]) -> None:
        self.clock = clock
        self._on_due = on_due
        self._queue: DeadlineQueue[T] = DeadlineQueue()
        self._wake = asyncio.Event()
        self._wake_at: int | None = None
        """When the sleeping loop wakes next (None: when something is pushed)."""

    def push(self, due_ms: int, item: T) -> None:
        self._queue.push(due_ms, item)
        if self._wake_at is None or due_ms < self._wake_at - TICK_MS:
            self._wake.set()  # due before the planned wake-up's tick: plan again

    def discard(self, item: T) -> None:
        """Forget a pending deadline (its job finished, or moved on)."""
        self._queue.discard(item)

    def discard_all(self, items: Iterable[T]) -> None:
        """`discard` each of `items` (a job's deadlines of every kind, as it ends)."""
        self._queue.discard_all(items)

    @property
    def heap_size(self) -> int:
        return self._queue.heap_size

    async def run(self) -> None:
        """Fire deadlines until cancelled; one item's failure does not stop the rest."""
        while True:
            due = self._queue.next_due()
            self._wake.clear()
            if due is None:
                self._wake_at = None
                await self._wake.wait()
                continue
            self._wake_at = due + (-due % TICK_MS)
            delay_s = (self._wake_at - self.clock.now_ms()) / 1000
            if delay_s > 0:
                # Not `wait_for`: on Python 3.11 it swallows a cancel that coincides with
                # the wake-up, and this loop would then outlive `Hub.aclose` forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await self._wake.wait()
                continue
            if self.clock.now_ms() - self._wake_at > STALL_MS:
                # The loop stalled: what peers sent meanwhile (a node's accept, its
                # result) is waiting in the sockets, and the timers came due in the same
                # loop turn as that input. Read it first (one tick), then judge silence.
                await asyncio.sleep(TICK_MS / 1000)
            await self.fire_due()

    def __len__(self) -> int:
        return len(self._queue)

    async def fire_due(self) -> None:
        """Hand every deadline due by the clock's now to the handler, in order."""
        for item in self._queue.pop_due(self.clock.now_ms()):
            try:
                await self._on_due(item)
            except Exception:  # one job's trouble must not stop every deadline
                logger.exception("deadline handling failed for {}", item)
