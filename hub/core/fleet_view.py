"""`FleetView`: the hub's view of the fleet, its current snapshot and the only place
that replaces it.

Selection reads `fleet.snapshot` (an immutable `Snapshot`); every change
(join, leave, capabilities, drain, load) goes through a method here, which
derives the next snapshot and tells the subscribers (in cross-instance mode,
the `FleetReplica` that publishes this hub's nodes to the others). Two
read-side companions follow every change: `node_ids`, the node ids in sorted
order (a `SortedList`, O(log n) a join or leave), which pages `/v1/nodes`
without sorting the fleet, and `stats` (`FleetStats`), the counts behind
`/v1/stats`. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from sortedcontainers import SortedList

from hub.core.capabilities import NodeCapabilities
from hub.core.fleet_stats import FleetStats
from hub.core.snapshot import DRAINING, ONLINE, NodeState, NodeStatus, Snapshot

Listener = Callable[[str, NodeState | None], None]
"""Called with (node_id, new state or None when the node left) after each change."""


class FleetView:
    __slots__ = ("_listeners", "node_ids", "snapshot", "stats")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot if snapshot is not None else Snapshot()
        self._listeners: list[Listener] = []
        self.node_ids: SortedList[str] = SortedList()
        self.stats = FleetStats()
        self._reindex()

    def _reindex(self) -> None:
        states = list(self.snapshot)
        self.node_ids = SortedList(state.node_id for state in states)
        self.stats.reset(states)

    def _replace(self, snapshot: Snapshot, node_id: str) -> None:
        """Install `snapshot`, which differs from the current one in `node_id` only."""
        old = self.snapshot.get(node_id)
        new = snapshot.get(node_id)
        self.snapshot = snapshot
        if old is new:
            return
        if old is None:
            self.node_ids.add(node_id)
        elif new is None:
            self.node_ids.remove(node_id)
        self.stats.changed(old, new)

    def __repr__(self) -> str:
        return f"FleetView({self.snapshot!r})"

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, node_id: str) -> None:
        state = self.snapshot.get(node_id)
        for listener in self._listeners:
            listener(node_id, state)

    def join(self, node_id: str, caps: NodeCapabilities, *, hub_id: str, running: int = 0) -> None:
        self._replace(self.snapshot.with_node(
            NodeState.create(node_id, caps, hub_id=hub_id, status=ONLINE, running=running)
        ), node_id)
        self._changed(node_id)

    def put(self, state: NodeState) -> None:
        """Install a state as given (a remote hub's node, in cross-instance mode)."""
        self._replace(self.snapshot.with_node(state), state.node_id)
        self._changed(state.node_id)

    def rebuild(self, states: list[NodeState]) -> None:
        """Replace the whole snapshot in one pass (a first sync of a large fleet).

        Listeners are not told: they follow this hub's own nodes, which a caller
        must carry over unchanged."""
        self.snapshot = Snapshot.of(states)
        self._reindex()

    def leave(self, node_id: str) -> None:
        if node_id in self.snapshot:
            self._replace(self.snapshot.without_node(node_id), node_id)
            self._changed(node_id)

    def set_capabilities(self, node_id: str, caps: NodeCapabilities) -> None:
        old = self.snapshot.get(node_id)
        if old is None:
            return
        self._replace(self.snapshot.with_node(
            NodeState.create(
                node_id, caps, hub_id=old.hub_id, status=old.status, running=old.running
            )
        ), node_id)
        self._changed(node_id)

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        self._replace(self.snapshot.with_status(node_id, status), node_id)
        self._changed(node_id)

    def drain(self, node_id: str) -> None:
        self.set_status(node_id, DRAINING)

    def set_running(self, node_id: str, running: int) -> None:
        snapshot = self.snapshot
        old = snapshot.get(node_id)
        self.snapshot = snapshot.with_running(node_id, running)
        if old is not None and old.running != running:
            self.stats.changed(old, self.snapshot.get(node_id))
        if self._listeners:
            self._changed(node_id)

    def page(
        self, *, after: str | None, limit: int, pool: int | None, status: str | None,
        scan: int, hub_id: str | None = None,
    ) -> tuple[list[NodeState], str | None]:
        """Up to `limit` nodes in node_id order after `after`, of `pool`, `status` and
        `hub_id` (the hub the node is connected to) when given, looking at no
        more than `scan` nodes; and the node id to continue after (None when no node
        follows). A filter that matches few nodes may return a short (even empty) page
        with a continuation: the cost of one page is bounded, whatever the fleet and
        the filter."""
        ids = self.node_ids
        start = 0 if after is None else ids.bisect_right(after)
        lookup = self.snapshot.get
        out: list[NodeState] = []
        last: str | None = None
        seen = 0
        for node_id in ids.islice(start):
            if len(out) >= limit or seen >= scan:
                return out, last
            seen += 1
            last = node_id
            state = lookup(node_id)
            if state is None:
                continue
            if (
                (pool is None or state.caps.pool == pool)
                and (status is None or state.status == status)
                and (hub_id is None or state.hub_id == hub_id)
            ):
                out.append(state)
        return out, None
