"""`Transit`: nodes on their way from one hub to another.

When a hub drains, its nodes stop taking jobs (`draining`), leave it and
register with another hub a moment later; when a hub dies or stops
answering, other hubs withdraw its nodes, which reconnect elsewhere once they
notice. In between they are in no hub's fleet. A submit that finds no node in
that moment would be refused `no_node` although capacity is about to come
back: during a rolling restart, when every node sits on the hub that drains,
that is every submit of the gap. So a node that drained, left after
draining, or was withdrawn with its hub (excluded or dead), is remembered as
on its way (`recent`) for `window_ms`; a job that finds no capable node
online then waits for one in the admission queue, like a job that finds
every node full. A node that left its own live hub (it crashed) is not on
its way anywhere: it just vanishes.

Where the queue is off (`queue_timeout_ms` 0), a submit waits for the next
node to come online (`arrival`, at most `wait_s`) and selects again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hub.core.capabilities import (
    AT_CAPACITY,
    DRAINING,
    OFFLINE,
    NodeCapabilities,
    Requirements,
    capability_mismatch,
)
from hub.core.fleet_view import FleetView
from hub.core.selector import Selection
from hub.core.snapshot import DRAINING as DRAINING_STATUS
from hub.core.snapshot import ONLINE, NodeState
from hub.runtime.deadline_loop import Clock


class Transit:
    __slots__ = (
        "_arrived", "_clock", "_departed", "_draining", "_hub_draining", "_hub_gone", "_online",
        "wait_s", "window_ms",
    )

    def __init__(
        self, *, fleet: FleetView, clock: Clock, window_ms: int, wait_s: float,
        hub_gone: Callable[[str], bool] = lambda hub_id: False,
        hub_draining: Callable[[str], bool] = lambda hub_id: False,
    ) -> None:
        """`hub_gone(hub_id)`: whether that hub stopped answering or died (its nodes,
        withdrawn with it, are on their way to another hub); `hub_draining(hub_id)`:
        whether that hub drains (its nodes will leave it for another)."""
        self._clock = clock
        self._hub_gone = hub_gone
        self._hub_draining = hub_draining
        self.window_ms = window_ms
        """How long after a departure a selection that finds nothing waits."""
        self.wait_s = wait_s
        """The longest such a wait lasts."""
        self._departed: dict[str, tuple[int, NodeCapabilities]] = {}
        """Nodes on their way to another hub: since when, and what they serve."""
        self._online: dict[str, tuple[NodeCapabilities, str]] = {}
        """Online nodes: what they serve and their hub."""
        self._draining: dict[str, tuple[NodeCapabilities, str]] = {}
        """Draining nodes: what they serve and their hub."""
        self._arrived: asyncio.Event | None = None
        fleet.subscribe(self._changed)

    def __repr__(self) -> str:
        return f"Transit({len(self._online)} online, {len(self._departed)} departed lately)"

    def _changed(self, node_id: str, state: NodeState | None) -> None:
        if state is not None and state.status == DRAINING_STATUS:
            self._online.pop(node_id, None)
            self._draining[node_id] = (state.caps, state.hub_id)
            return
        online = state is not None and state.status == ONLINE
        if online == (node_id in self._online) and node_id not in self._draining:
            return  # a load change: nothing came or went
        if state is not None and online:
            self._online[node_id] = (state.caps, state.hub_id)
            self._draining.pop(node_id, None)
            self._departed.pop(node_id, None)
            if self._arrived is not None:
                self._arrived.set()
            return
        was = self._online.pop(node_id, None)
        drained = self._draining.pop(node_id, None)
        if drained is not None and self._hub_draining(drained[1]):
            # It left its draining hub: it registers with another one in a moment. (A
            # node that drained itself leaves for good, and one that crashed vanishes.)
            self._departed[node_id] = (self._clock.now_ms(), drained[0])
        elif was is not None and self._hub_gone(was[1]):
            # Withdrawn with its hub, which died or stopped answering: the node
            # reconnects to another hub once it notices.
            self._departed[node_id] = (self._clock.now_ms(), was[0])

    def coming(self, selection: Selection, req: Requirements) -> bool:
        """Whether capacity for `req` is on its way: a capable node of a draining hub, one
        offline with a hub that stopped answering, or one that left such a hub lately.
        A job that finds no node then waits for one (in the queue) rather than being
        refused `no_node`."""
        if selection.reasons.get(OFFLINE):
            return True
        if selection.reasons.get(DRAINING) and any(
            node_id not in req.excluded and self._hub_draining(hub)
            and capability_mismatch(caps, req) is None
            for node_id, (caps, hub) in self._draining.items()
        ):
            return True
        return self.recent(req)

    @staticmethod
    def should_wait(selection: Selection) -> bool:
        """Whether a selection's failure may be nodes in transit: nothing fit, and no
        capable node is online here at all (a full one would be `at_capacity`: a full
        fleet is a matter of capacity, not of transit, and is answered at once)."""
        return selection.node_id is None and not selection.reasons.get(AT_CAPACITY)

    def recent(self, req: Requirements) -> bool:
        """Whether a node that could serve `req` drained (or left after draining) within
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
