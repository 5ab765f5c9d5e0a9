"""`Transit`: nodes on their way from one hub to another.

When a hub drains (or dies), its nodes leave it and register with another hub
a moment later (a reconnect and a registration: ~0.1-0.3 s). In between they
are in no hub's fleet. A submit that finds no node in that moment would be
refused `no_node` although capacity is about to come back: during a rolling
restart, when every node sits on the hub that drains, that is every submit
of the gap. So when a selection finds nothing shortly after a node that could
serve the job left the fleet or stopped taking jobs (`recent`), the submit
waits for the next node to come online (`arrival`, bounded) and selects
again. Otherwise (nothing left lately, or nothing that served such a job),
`no_node` is answered at once as before.
"""

from __future__ import annotations

import asyncio

from hub.core.capabilities import NodeCapabilities, Requirements, capability_mismatch
from hub.core.fleet_view import FleetView
from hub.core.snapshot import ONLINE, NodeState
from hub.runtime.deadline_loop import Clock


class Transit:
    __slots__ = ("_arrived", "_clock", "_departed", "_online", "wait_s", "window_ms")

    def __init__(self, *, fleet: FleetView, clock: Clock, window_ms: int, wait_s: float) -> None:
        self._clock = clock
        self.window_ms = window_ms
        """How long after a departure a selection that finds nothing waits."""
        self.wait_s = wait_s
        """The longest such a wait lasts."""
        self._departed: dict[str, tuple[int, NodeCapabilities]] = {}
        """Nodes that left (or stopped taking jobs) lately: when, and what they serve."""
        self._online: dict[str, NodeCapabilities] = {}
        self._arrived: asyncio.Event | None = None
        fleet.subscribe(self._changed)

    def __repr__(self) -> str:
        return f"Transit({len(self._online)} online, {len(self._departed)} departed lately)"

    def _changed(self, node_id: str, state: NodeState | None) -> None:
        online = state is not None and state.status == ONLINE
        if online == (node_id in self._online):
            return  # a load change: nothing came or went
        if state is not None and online:
            self._online[node_id] = state.caps
            self._departed.pop(node_id, None)
            if self._arrived is not None:
                self._arrived.set()
        else:
            caps = self._online.pop(node_id, None)
            if caps is not None:
                self._departed[node_id] = (self._clock.now_ms(), caps)

    def recent(self, req: Requirements) -> bool:
        """Whether a node that could serve `req` left (or stopped taking jobs) within
        `window_ms`: it may be on its way to another hub."""
        horizon = self._clock.now_ms() - self.window_ms
        for node_id, (left_ms, _) in list(self._departed.items()):
            if left_ms < horizon:
                del self._departed[node_id]
        return any(
            node_id not in req.excluded and capability_mismatch(caps, req) is None
            for node_id, (_, caps) in self._departed.items()
        )

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
