"""`FleetStats`: counts over the fleet, kept current change by change.

`/v1/stats` and the `nodehub_nodes` gauge read them in constant time instead
of visiting every node (100,000 nodes take about 10 ms to visit). `FleetView`
calls `changed(old, new)` for every change it makes and `reset` after a
rebuild. Pure.

Besides the whole fleet and each pool, the console reads the
fleet per hub (cross-instance mode) and per language pair. A node's slots
count for every pair it serves, so a load change adds to one tally per pair
of the node: each distinct pair set keeps the list of its pairs' tallies
(`_PairSet`), so that costs one dict lookup (a frozenset's hash is cached)
and one addition per pair, with no hashing of the pairs themselves. A pair's
tally lives as long as some node serves the pair, which a pair set's list
relies on (a set with nodes keeps each of its pairs served). Measured: a
load change costs about 70 ns more for a node of 1 pair than without the
pair and hub tallies, 110 ns for 4 pairs, 300 ns for 16 (against ~100 ns).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.core.snapshot import NodeState

PairSet = frozenset[tuple[str, str]]
K = TypeVar("K")


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


class _PairSet:
    """The nodes with one `language_pairs` set: how many, and their pairs' tallies."""

    __slots__ = ("nodes", "tallies")

    def __init__(self, tallies: list[Tally]) -> None:
        self.nodes = 0
        self.tallies = tallies


class FleetStats:
    """The whole fleet's `Tally`, and one per pool, per hub and per language pair."""

    __slots__ = ("all", "hubs", "pair_sets", "pairs", "pools")

    def __init__(self) -> None:
        self.all = Tally()
        self.pools: dict[int, Tally] = {}
        self.hubs: dict[str, Tally] = {}
        """Per hub the nodes are connected to."""
        self.pairs: dict[tuple[str, str], Tally] = {}
        """Per language pair: the nodes serving it."""
        self.pair_sets: dict[PairSet, _PairSet] = {}
        """Per distinct `language_pairs` set, its pairs' tallies (see the module docstring)."""

    def changed(self, old: NodeState | None, new: NodeState | None) -> None:
        if old is not None:
            if (
                new is not None and old.status == new.status and old.caps is new.caps
                and old.hub_id == new.hub_id
            ):
                # A load change (the hot path): only the busy slots move.
                delta = new.running - old.running
                self.all.slots_busy += delta
                self.pools[old.caps.pool].slots_busy += delta
                self.hubs[old.hub_id].slots_busy += delta
                for tally in self.pair_sets[old.caps.language_pairs].tallies:
                    tally.slots_busy += delta
                return
            self._add(old, -1)
        if new is not None:
            self._add(new, 1)

    def _add(self, state: NodeState, sign: int) -> None:
        self.all.add(state, sign)
        _add_to(self.pools, state.caps.pool, state, sign)
        _add_to(self.hubs, state.hub_id, state, sign)
        pairs = state.caps.language_pairs
        for pair in pairs:
            _add_to(self.pairs, pair, state, sign)
        entry = self.pair_sets.get(pairs)
        if entry is None:
            entry = self.pair_sets[pairs] = _PairSet([self.pairs[p] for p in pairs])
        entry.nodes += sign
        if not entry.nodes:
            del self.pair_sets[pairs]

    def reset(self, states: list[NodeState]) -> None:
        self.all = Tally()
        self.pools = {}
        self.hubs = {}
        self.pairs = {}
        self.pair_sets = {}
        for state in states:
            self._add(state, 1)

    def pair_view(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The `limit` language pairs with the most slots (then by name), each
        `{"src", "tgt", "nodes", "slots": {"total", "busy"}}`, and how many pairs the
        fleet serves in all. A node counts for every pair it serves."""
        top = heapq.nsmallest(
            limit, self.pairs.items(), key=lambda item: (-item[1].slots_total, item[0])
        )
        return [
            {"src": src, "tgt": tgt, "nodes": t.nodes,
             "slots": {"total": t.slots_total, "busy": t.slots_busy}}
            for (src, tgt), t in top
        ], len(self.pairs)


def _add_to(tallies: dict[K, Tally], key: K, state: NodeState, sign: int) -> None:
    tally = tallies.get(key)
    if tally is None:
        tally = tallies[key] = Tally()
    tally.add(state, sign)
    if not tally.nodes:
        del tallies[key]
