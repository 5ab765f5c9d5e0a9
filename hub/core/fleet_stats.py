"""`FleetStats`: counts over the fleet, kept current change by change.

`/v1/stats` and the `nodehub_nodes` gauge read them in constant time instead
of visiting every node (100,000 nodes take about 10 ms to visit). `FleetView`
calls `changed(old, new)` for every change it makes and `reset` after a
rebuild. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.core.snapshot import NodeState


@dataclass(slots=True)
class Tally:
    """Nodes by status and slots (`max_concurrency`, `running`) of a set of nodes."""

    nodes: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    slots_total: int = 0
    slots_busy: int = 0

    def add(self, state: NodeState, sign: int) -> None:
        self.nodes += sign
        self.by_status[state.status] = self.by_status.get(state.status, 0) + sign
        self.slots_total += sign * state.caps.max_concurrency
        self.slots_busy += sign * state.running

    def view(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "status": {s: n for s, n in sorted(self.by_status.items()) if n},
            "slots": {"total": self.slots_total, "busy": self.slots_busy},
        }


class FleetStats:
    """The whole fleet's `Tally` and one per pool."""

    __slots__ = ("all", "pools")

    def __init__(self) -> None:
        self.all = Tally()
        self.pools: dict[int, Tally] = {}

    def changed(self, old: NodeState | None, new: NodeState | None) -> None:
        if old is not None:
            if (
                new is not None and old.status == new.status and old.caps is new.caps
            ):
                # A load change (the hot path): only the busy slots move.
                delta = new.running - old.running
                self.all.slots_busy += delta
                self.pools[old.caps.pool].slots_busy += delta
                return
            self._add(old, -1)
        if new is not None:
            self._add(new, 1)

    def _add(self, state: NodeState, sign: int) -> None:
        self.all.add(state, sign)
        pool = state.caps.pool
        tally = self.pools.get(pool)
        if tally is None:
            tally = self.pools[pool] = Tally()
        tally.add(state, sign)
        if not tally.nodes:
            del self.pools[pool]

    def reset(self, states: list[NodeState]) -> None:
        self.all = Tally()
        self.pools = {}
        for state in states:
            self._add(state, 1)
