"""`CapabilityUpdates`: a node's `capabilities` messages, applied at most once per interval.

Applying capabilities re-indexes the node (selection rings, the fleet's
statistics, its publication to other hubs): about a millisecond for the
largest valid set, and a node may send them as fast as its socket takes them.
Each node's updates are coalesced: the first one in an interval applies at
once, later ones wait for the interval's end and only the latest of them
applies then (each message replaces the whole set, so nothing is lost). A
flood costs its sender's decoding and nothing more. One timer per node with
an update waiting; none otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hub.core.capabilities import NodeCapabilities
from hub.core.messages import CapabilitiesUpdate
from hub.jobs.owner.registry import NodeRegistry, RegisteredNode

Waiting = tuple[RegisteredNode, CapabilitiesUpdate, asyncio.TimerHandle]
"""A node's update waiting for its interval's end, and the timer that applies it."""


class CapabilityUpdates:
    __slots__ = ("_applied", "_clock", "_default_pool", "_registry", "_waiting", "interval_s")

    def __init__(
        self, *, registry: NodeRegistry, default_pool: int, interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._default_pool = default_pool
        self.interval_s = interval_s
        self._clock = clock
        self._applied: dict[str, float] = {}
        """When each node's last update was applied (a node's first update after it
        registered applies at once: a node that loads a model says so once)."""
        self._waiting: dict[str, Waiting] = {}

    def __repr__(self) -> str:
        return f"CapabilityUpdates({len(self._waiting)} waiting)"

    def __len__(self) -> int:
        return len(self._waiting)

    def update(self, node: RegisteredNode, message: CapabilitiesUpdate) -> None:
        node_id = node.node_id
        waiting = self._waiting.get(node_id)
        if waiting is not None and waiting[0] is node:
            self._waiting[node_id] = (node, message, waiting[2])  # the latest wins
            return
        now = self._clock()
        due = self._applied.get(node_id, float("-inf")) + self.interval_s
        if now >= due:
            self._apply(node, message, now)
            return
        timer = asyncio.get_running_loop().call_later(due - now, self._due, node_id)
        self._waiting[node_id] = (node, message, timer)

    def forget(self, node: RegisteredNode) -> None:
        """The node's session ended: its waiting update goes with it."""
        waiting = self._waiting.get(node.node_id)
        if waiting is not None and waiting[0] is node:
            waiting[2].cancel()
            del self._waiting[node.node_id]
        if self._registry.registered.get(node.node_id) in (None, node):
            self._applied.pop(node.node_id, None)

    def _due(self, node_id: str) -> None:
        waiting = self._waiting.pop(node_id, None)
        if waiting is None:
            return
        node, message, _ = waiting
        if node.gone or self._registry.registered.get(node_id) is not node:
            return
        self._apply(node, message, self._clock())

    def _apply(self, node: RegisteredNode, message: CapabilitiesUpdate, now: float) -> None:
        self._applied[node.node_id] = now
        self._registry.set_capabilities(node, NodeCapabilities.from_wire(
            message.capabilities, default_pool=self._default_pool
        ))
