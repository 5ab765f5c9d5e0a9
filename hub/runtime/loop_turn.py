"""`LoopTurn`: "the first of this event-loop turn goes at once, the rest at its end".

The hub's writers (`WsLink`, hub-wide), the Redis pipe (`RespPipe`), the
idempotency `Binder` and the `Outbox` share one rule: a lone message must not
wait for the end of the turn, and a burst must not cost one write each. This
is that rule's bookkeeping, written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopTurn:
    __slots__ = ("_at_end", "_open")

    def __init__(self, at_end: Callable[[], None] | None = None) -> None:
        self._open = False
        self._at_end = at_end
        """Called when a turn that `first` opened ends (to send what the turn batched)."""

    def first(self) -> bool:
        """True for the first call of an event-loop turn (it then goes at once); the
        turn's later calls get False (they batch, for `at_end`)."""
        if self._open:
            return False
        self._open = True
        asyncio.get_running_loop().call_soon(self._end)
        return True

    def _end(self) -> None:
        self._open = False
        if self._at_end is not None:
            self._at_end()
