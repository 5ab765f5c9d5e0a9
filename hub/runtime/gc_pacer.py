"""`GcPacer`: keeps CPython's full garbage collections short on a big, growing heap.

A full (generation 2) collection visits every tracked object. A hub with
10,000 node sessions holds a few million of them, and while a reconnect
storm grows the heap CPython runs a full collection each time it grew by a
quarter: measured during a 10,000-agent storm, ten collections of 38 to 511
ms that freed almost nothing, each holding the event loop (and every
bystander's job) for that long.

The pacer moves what survived a long full collection into the permanent
generation (`gc.freeze`, from a `gc.callbacks` hook as the collection ends):
later full collections visit only what was allocated since, so a pause is
proportional to the growth since the last freeze, not to the heap. Frozen
objects are still freed by reference counting; only a reference cycle that
becomes garbage while frozen waits, until the next thaw: every `thaw_s` the
pacer unfreezes everything, so the next full collection (one long pause per
interval at most) reclaims such cycles, and, being long, freezes the rest
again.

Only a collection that took `freeze_after_s` or more freezes (measured
between the hook's "start" and "stop"). Freezing after every full collection,
as the pacer first did, also froze whatever was in flight at that instant: a
heap that does not grow (a node reconnecting in a loop) still runs a full
collection every few hundred milliseconds, each froze the session of the
moment, and any cycle that session left when it ended stayed for the whole
thaw interval (measured: RSS from 47 to 315 MB in 45 s of register churn). A
short collection is cheap to repeat, so there is nothing to gain from
freezing its survivors; a long one means the unfrozen part of the heap grew
(a storm, or a thaw), and freezing it is what keeps the next ones short. The
pause is the measure rather than a count of objects because it is what the
pacer is for, and because it costs nothing: counting what is unfrozen
(`gc.get_objects(2)`) or frozen (`gc.get_freeze_count`) walks those objects,
a quarter of a full collection again. Unfrozen survivors of short
collections pile up until one takes `freeze_after_s`, so on a heap that does
not grow a pause stays within a few times `freeze_after_s` (register churn,
benchmarks/gc_churn.py: 0.6 ms median, 5 ms p99, against 20 and 40 ms
without the pacer); during a storm the pauses are what they were with a
freeze after every collection (benchmarks/storm.py).

The pacer only makes cycles wait; the sessions make none: an ended
connection, its session and registration are freed by reference counting
at once, frozen or not (hub/net/server.py, `_Connection` and
`WsServer._handle`).

Knows nothing of the hub.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Final

CHECK_S: Final = 1.0
FREEZE_AFTER_S: Final = 0.002
"""A full collection at least this long freezes its survivors (tens of thousands of the
hub's objects on the 2-core reference box)."""


def full_collections() -> int:
    """How many full (generation 2) collections this process has run."""
    return int(gc.get_stats()[2]["collections"])


class GcPacer:
    def __init__(
        self, *, thaw_s: float, check_s: float = CHECK_S, freeze_after_s: float = FREEZE_AFTER_S
    ) -> None:
        self.thaw_s = thaw_s
        self.check_s = check_s
        self.freeze_after_s = freeze_after_s
        self.freezes = 0
        self.thaws = 0
        self.skipped = 0
        """Full collections short enough to leave their survivors unfrozen."""
        self._seen = full_collections()
        self._thawed_at = time.monotonic()
        self._started_at = 0.0

    def __repr__(self) -> str:
        return (
            f"GcPacer(frozen={gc.get_freeze_count()}, freezes={self.freezes}, "
            f"skipped={self.skipped})"
        )

    def start(self) -> None:
        """Freeze what the process holds at start (imports, configuration, empty
        structures): none of it is garbage, and no full collection need visit it.
        From now on every long full collection ends with a freeze."""
        gc.freeze()
        self.freezes += 1
        if self._collected not in gc.callbacks:
            gc.callbacks.append(self._collected)

    def stop(self) -> None:
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started_at = time.perf_counter()
            return
        # The collection's work is done when "stop" is reported: its survivors are
        # exactly what is reachable now.
        self._seen = full_collections()
        if time.perf_counter() - self._started_at >= self.freeze_after_s:
            gc.freeze()
            self.freezes += 1
        else:
            self.skipped += 1

    def check(self) -> None:
        """Freeze after a full collection the hook did not see; thaw every `thaw_s`."""
        now = time.monotonic()
        if now - self._thawed_at >= self.thaw_s:
            gc.unfreeze()
            self.thaws += 1
            self._thawed_at = now
            self._seen = full_collections()
            return
        count = full_collections()
        if count != self._seen:  # a collection the hook did not see (not started)
            self._seen = count
            gc.freeze()
            self.freezes += 1

    async def run(self) -> None:
        """Check every `check_s` until cancelled; stops freezing and thaws on the way
        out."""
        try:
            while True:
                await asyncio.sleep(self.check_s)
                self.check()
        finally:
            self.stop()
