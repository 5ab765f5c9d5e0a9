"""`FleetView`: the hub's view of the fleet, its current snapshot and the only place
that replaces it.

Selection reads `fleet.snapshot` (an immutable `Snapshot`); every change
(join, leave, capabilities, drain, load) goes through a method here, which
derives the next snapshot and tells the subscribers (in cross-instance mode,
the `FleetReplica` that publishes this hub's nodes to the others). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from hub.core.capabilities import NodeCapabilities
from hub.core.snapshot import DRAINING, ONLINE, NodeState, NodeStatus, Snapshot

Listener = Callable[[str, NodeState | None], None]
"""Called with (node_id, new state or None when the node left) after each change."""


class FleetView:
    __slots__ = ("_listeners", "snapshot")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot if snapshot is not None else Snapshot()
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        return f"FleetView({self.snapshot!r})"

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, node_id: str) -> None:
        state = self.snapshot.get(node_id)
        for listener in self._listeners:
            listener(node_id, state)

    def join(self, node_id: str, caps: NodeCapabilities, *, hub_id: str, running: int = 0) -> None:
        self.snapshot = self.snapshot.with_node(
            NodeState.create(node_id, caps, hub_id=hub_id, status=ONLINE, running=running)
        )
        self._changed(node_id)

    def put(self, state: NodeState) -> None:
        """Install a state as given (a remote hub's node, in cross-instance mode)."""
        self.snapshot = self.snapshot.with_node(state)
        self._changed(state.node_id)

    def rebuild(self, states: list[NodeState]) -> None:
        """Replace the whole snapshot in one pass (a first sync of a large fleet).

        Listeners are not told: they follow this hub's own nodes, which a caller
        must carry over unchanged."""
        self.snapshot = Snapshot.of(states)

    def leave(self, node_id: str) -> None:
        if node_id in self.snapshot:
            self.snapshot = self.snapshot.without_node(node_id)
            self._changed(node_id)

    def set_capabilities(self, node_id: str, caps: NodeCapabilities) -> None:
        old = self.snapshot.get(node_id)
        if old is None:
            return
        self.snapshot = self.snapshot.with_node(
            NodeState.create(
                node_id, caps, hub_id=old.hub_id, status=old.status, running=old.running
            )
        )
        self._changed(node_id)

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        self.snapshot = self.snapshot.with_status(node_id, status)
        self._changed(node_id)

    def drain(self, node_id: str) -> None:
        self.set_status(node_id, DRAINING)

    def set_running(self, node_id: str, running: int) -> None:
        self.snapshot = self.snapshot.with_running(node_id, running)
        if self._listeners:
            self._changed(node_id)
