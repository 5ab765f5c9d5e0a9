"""`GcPacer`: keeps CPython's full garbage collections short on a big, growing heap.

A full (generation 2) collection visits every tracked object. A hub with
10,000 node sessions holds a few million of them, and while a reconnect
storm grows the heap CPython runs a full collection each time it grew by a
quarter: measured during a 10,000-agent storm, ten collections of 38 to 511
ms that freed almost nothing, each holding the event loop (and every
bystander's job) for that long.

The pacer moves what survived a full collection into the permanent
generation (`gc.freeze`, from a `gc.callbacks` hook as the collection
ends): later full collections
visit only what was allocated since, so a pause is proportional to the
growth since the last one, not to the heap. Frozen objects are still freed
by reference counting; only a reference cycle that becomes garbage while
frozen waits, until the next thaw: every `thaw_s` the pacer unfreezes
everything, so the next full collection (one long pause per interval at
most) reclaims such cycles. Knows nothing of the hub.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Final

CHECK_S: Final = 1.0


def full_collections() -> int:
    """How many full (generation 2) collections this process has run."""
    return int(gc.get_stats()[2]["collections"])


class GcPacer:
    def __init__(self, *, thaw_s: float, check_s: float = CHECK_S) -> None:
        self.thaw_s = thaw_s
        self.check_s = check_s
        self.freezes = 0
        self.thaws = 0
        self._seen = full_collections()
        self._thawed_at = time.monotonic()

    def __repr__(self) -> str:
        return f"GcPacer(frozen={gc.get_freeze_count()}, freezes={self.freezes})"

    def start(self) -> None:
        """Freeze what the process holds at start (imports, configuration, empty
        structures): none of it is garbage, and no full collection need visit it.
        From now on every full collection ends with a freeze."""
        gc.freeze()
        self.freezes += 1
        if self._collected not in gc.callbacks:
            gc.callbacks.append(self._collected)

    def stop(self) -> None:
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        # The collection's work is done when "stop" is reported: its survivors are
        # exactly what is reachable now.
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()
            self.freezes += 1
            self._seen = full_collections()

    def check(self) -> None:
        """Freeze after a full collection not yet followed by one; thaw every
        `thaw_s`."""
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
