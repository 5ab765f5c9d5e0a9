"""`Transit`: nodes on their way from one hub to another.

When a hub drains (or dies), its nodes leave it and register with another hub
a moment later (a reconnect and a registration: ~0.1-0.3 s). In between they
are in no hub's fleet. A submit that finds no node in that moment would be
refused `no_node` although capacity is about to come back: during a rolling
restart, when every node sits on the hub that drains, that is every submit
of the gap. So when a selection finds nothing shortly after a node left the
fleet or stopped taking jobs (`recent`), the submit waits for the next node
to come online (`arrival`, bounded) and selects again. Without a recent
departure, `no_node` is answered at once as before.
"""

from __future__ import annotations

import asyncio

from hub.core.fleet_view import FleetView
from hub.core.snapshot import ONLINE, NodeState
from hub.runtime.deadline_loop import Clock


class Transit:
    __slots__ = ("_arrived", "_clock", "_last_departure_ms", "_online", "wait_s", "window_ms")

    def __init__(self, *, fleet: FleetView, clock: Clock, window_ms: int, wait_s: float) -> None:
        self._clock = clock
        self.window_ms = window_ms
        """How long after a departure a selection that finds nothing waits."""
        self.wait_s = wait_s
        """The longest such a wait lasts."""
        self._last_departure_ms: int | None = None
        self._online: set[str] = set()
        self._arrived: asyncio.Event | None = None
        fleet.subscribe(self._changed)

    def __repr__(self) -> str:
        return f"Transit({len(self._online)} online, last departure {self._last_departure_ms})"

    def _changed(self, node_id: str, state: NodeState | None) -> None:
        online = state is not None and state.status == ONLINE
        if online == (node_id in self._online):
            return  # a load change: nothing came or went
        if online:
            self._online.add(node_id)
            if self._arrived is not None:
                self._arrived.set()
        else:
            self._online.discard(node_id)
            self._last_departure_ms = self._clock.now_ms()

    def recent(self) -> bool:
        """Whether a node left (or stopped taking jobs) within `window_ms`."""
        last = self._last_departure_ms
        return last is not None and self._clock.now_ms() - last <= self.window_ms

    async def arrival(self, timeout_s: float) -> bool:
        """Wait (up to `timeout_s`) for a node to come online; whether one did."""
        if timeout_s <= 0:
            return False
        if self._arrived is None:
            self._arrived = asyncio.Event()
        self._arrived.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._arrived.wait()
        except TimeoutError:
            return False
        return True
