"""FleetView's read-side companions: the sorted node ids, the stats, and paging,
checked against brute force over random joins, leaves and changes."""

from __future__ import annotations

import random

from hub.core.capabilities import NodeCapabilities
from hub.core.fleet_stats import Tally
from hub.core.fleet_view import FleetView
from hub.core.snapshot import DRAINING, OFFLINE, ONLINE, NodeState


def _caps(rng: random.Random) -> NodeCapabilities:
    return NodeCapabilities(
        language_pairs=frozenset({("en", "de")}), max_concurrency=rng.randint(1, 4),
        pool=rng.randrange(3),
    )


def _expected_tally(states: list[NodeState]) -> Tally:
    t = Tally()
    for s in states:
        t.add(s, 1)
    t.by_status = {k: v for k, v in t.by_status.items() if v}
    return t


def assert_consistent(fleet: FleetView) -> None:
    states = list(fleet.snapshot)
    assert list(fleet.node_ids) == sorted(s.node_id for s in states)
    want = _expected_tally(states)
    got = fleet.stats.all
    assert (got.nodes, got.slots_total, got.slots_busy) == (
        want.nodes, want.slots_total, want.slots_busy)
    assert {k: v for k, v in got.by_status.items() if v} == want.by_status
    pools = {s.caps.pool for s in states}
    assert set(fleet.stats.pools) == pools
    for pool in pools:
        want_pool = _expected_tally([s for s in states if s.caps.pool == pool])
        got_pool = fleet.stats.pools[pool]
        assert (got_pool.nodes, got_pool.slots_total, got_pool.slots_busy) == (
            want_pool.nodes, want_pool.slots_total, want_pool.slots_busy)


def walk(fleet: FleetView, *, limit: int, pool: int | None, status: str | None,
         scan: int) -> list[str]:
    """Every page from the start, following the continuation."""
    out: list[str] = []
    after = None
    for _ in range(10_000):
        page, after = fleet.page(after=after, limit=limit, pool=pool, status=status, scan=scan)
        assert len(page) <= limit
        out.extend(s.node_id for s in page)
        if after is None:
            return out
    raise AssertionError("paging did not end")


def test_random_changes_keep_order_stats_and_pages_right() -> None:
    rng = random.Random(11)
    fleet = FleetView()
    for step in range(1_500):
        node_id = f"n{rng.randrange(300):03d}"
        op = rng.random()
        present = node_id in fleet.snapshot
        if op < 0.45:
            fleet.join(node_id, _caps(rng), hub_id="h", running=rng.randint(0, 2))
        elif op < 0.6:
            fleet.leave(node_id)
        elif op < 0.8 and present:
            fleet.set_running(node_id, rng.randint(0, 4))
        elif op < 0.9 and present:
            fleet.set_status(node_id, rng.choice((ONLINE, DRAINING, OFFLINE)))
        elif present:
            fleet.set_capabilities(node_id, _caps(rng))
        if step % 100 == 0:
            assert_consistent(fleet)
    assert_consistent(fleet)
    states = sorted(fleet.snapshot, key=lambda s: s.node_id)
    for pool in (None, 0, 2):
        for status in (None, ONLINE, DRAINING):
            want = [s.node_id for s in states
                    if (pool is None or s.caps.pool == pool)
                    and (status is None or s.status == status)]
            for limit, scan in ((7, 1_000), (50, 13), (1_000, 1_000)):
                assert walk(fleet, limit=limit, pool=pool, status=status, scan=scan) == want
    # After the last node: nothing, and no continuation.
    assert fleet.page(after="zzz", limit=5, pool=None, status=None, scan=10) == ([], None)
    # A rebuild re-derives the order and the stats.
    fleet.rebuild([*fleet.snapshot][:40])
    assert_consistent(fleet)


# --- per hub and per language pair (the console) ---------------------------------

_PAIRS = [("en", "de"), ("en", "fr"), ("de", "en"), ("fr", "en"), ("en", "ja")]


def _mixed_caps(rng: random.Random) -> NodeCapabilities:
    return NodeCapabilities(
        language_pairs=frozenset(rng.sample(_PAIRS, rng.randint(0, 3))),
        max_concurrency=rng.randint(1, 4), pool=rng.randrange(3),
    )


def assert_hubs_and_pairs(fleet: FleetView) -> None:
    states = list(fleet.snapshot)
    hubs = {s.hub_id for s in states}
    assert set(fleet.stats.hubs) == hubs
    for hub_id in hubs:
        want = _expected_tally([s for s in states if s.hub_id == hub_id])
        got = fleet.stats.hubs[hub_id]
        assert (got.nodes, got.slots_total, got.slots_busy) == (
            want.nodes, want.slots_total, want.slots_busy)
        assert {k: v for k, v in got.by_status.items() if v} == want.by_status
    expected = {}
    for pair in _PAIRS:
        serving = [s for s in states if pair in s.caps.language_pairs]
        if serving:
            expected[pair] = (
                len(serving), sum(s.caps.max_concurrency for s in serving),
                sum(s.running for s in serving),
            )
    top, total = fleet.stats.pair_view(limit=3)
    assert total == len(expected)
    want_top = sorted(expected.items(), key=lambda item: (-item[1][1], item[0]))[:3]
    assert top == [
        {"src": s, "tgt": t, "nodes": n, "slots": {"total": total_, "busy": busy}}
        for (s, t), (n, total_, busy) in want_top
    ]


def test_hub_and_pair_tallies_follow_every_change() -> None:
    rng = random.Random(16)
    fleet = FleetView()
    for step in range(1_500):
        node_id = f"n{rng.randrange(200):03d}"
        op = rng.random()
        present = node_id in fleet.snapshot
        if op < 0.4:
            fleet.join(node_id, _mixed_caps(rng), hub_id=rng.choice("abc"),
                       running=rng.randint(0, 1))
        elif op < 0.55:
            fleet.leave(node_id)
        elif op < 0.8 and present:
            fleet.set_running(node_id, rng.randint(0, 4))
        elif op < 0.9 and present:
            fleet.set_status(node_id, rng.choice((ONLINE, DRAINING, OFFLINE)))
        elif present:
            fleet.set_capabilities(node_id, _mixed_caps(rng))
        if step % 100 == 0:
            assert_hubs_and_pairs(fleet)
    assert_hubs_and_pairs(fleet)
    fleet.rebuild([*fleet.snapshot][:50])
    assert_hubs_and_pairs(fleet)


def test_pages_filter_by_hub() -> None:
    fleet = FleetView()
    for i in range(30):
        fleet.join(f"n{i:02d}", NodeCapabilities(max_concurrency=1), hub_id="ab"[i % 2])
    page, after = fleet.page(after=None, limit=100, pool=None, status=None, scan=1_000,
                             hub_id="b")
    assert [s.node_id for s in page] == [f"n{i:02d}" for i in range(1, 30, 2)]
    assert after is None
    assert walk(fleet, limit=4, pool=None, status=None, scan=5) == [f"n{i:02d}" for i in range(30)]


def test_a_node_that_moves_to_another_hub_moves_its_tally() -> None:
    """Cross-instance: another hub took the node over; same capabilities object."""
    fleet = FleetView()
    caps = NodeCapabilities(language_pairs=frozenset({("en", "de")}), max_concurrency=3)
    fleet.join("n1", caps, hub_id="a", running=1)
    fleet.put(NodeState.create("n1", caps, hub_id="b", running=2))
    assert set(fleet.stats.hubs) == {"b"}
    assert (fleet.stats.hubs["b"].nodes, fleet.stats.hubs["b"].slots_busy) == (1, 2)
    assert_hubs_and_pairs(fleet)
