"""The node endpoint over real sockets: registration, liveness, drain, capabilities, slots."""

from __future__ import annotations

from typing import Any

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, connect_node, wait_until


async def test_register_must_be_first(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1", register=False, heartbeat_s=None)
    await node.send({"type": "heartbeat"})
    error = await node.expect("error", code="not_registered")
    assert error["message"]
    # The session is still usable: registering now works.
    reply = await node.register(caps())
    assert reply["type"] == "registered"
    assert "n1" in hub.fleet.snapshot


async def test_registered_reply_fields(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(hub_id="hub-x", default_pool=7)
    node = await net.node(hub, "n1", caps())
    assert node.registered == {
        "type": "registered", "node_id": "n1", "hub_id": "hub-x", "pool": 7,
        "heartbeat_interval_ms": 50,
    }
    explicit = await net.node(hub, "n2", caps(pool=3))
    assert explicit.registered is not None and explicit.registered["pool"] == 3
    state = hub.fleet.snapshot.get("n1")
    assert state is not None and state.caps.pool == 7


async def test_invalid_capabilities_refused_with_path(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1", register=False, heartbeat_s=None)
    reply = await node.register(caps(max_concurrency=0))
    assert reply["type"] == "error" and reply["code"] == "invalid_field"
    assert reply["path"] == "$.capabilities.max_concurrency"
    bad_pool = caps()
    bad_pool["pool"] = 70000
    reply = await node.register(bad_pool)
    assert reply["code"] == "invalid_field" and reply["path"] == "$.capabilities.pool"
    bad_pair = caps()
    bad_pair["language_pairs"] = [{"src": "en"}]
    reply = await node.register(bad_pair)
    assert reply["code"] == "missing_field"
    assert reply["path"] == "$.capabilities.language_pairs[0].tgt"
    no_caps = await node.register(caps())
    assert no_caps["type"] == "registered"  # the refusals changed nothing
    assert [state.node_id for state in hub.fleet.snapshot] == ["n1"]


async def test_register_twice_on_one_session_is_refused(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    reply = await node.register(caps())
    assert reply["type"] == "error" and reply["code"] == "already_registered"


async def test_node_id_conflict_keeps_the_first_session(hub: Hub, net: Net) -> None:
    first = await net.node(hub, "n1")
    second = await net.node(hub, "n1", register=False, heartbeat_s=None)
    reply = await second.register(caps())
    assert reply["type"] == "error" and reply["code"] == "node_id_conflict"
    assert await second.wait_closed() == 4001
    # The first session still gets and completes jobs.
    client = await net.client(hub)
    accepted = await client.submitted("r1")
    assert accepted["node_id"] == "n1"
    await first.run_one("out")
    result = await client.expect("result", ok=True, output="out", node_id="n1")
    assert result["attempts"] == 1


async def test_heartbeat_silence_removes_node_and_fails_over(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(node_timeout_ms=600)
    silent = await net.node(hub, "silent", caps(), heartbeat_s=0.05)
    other = await net.node(hub, "other", caps(), heartbeat_s=0.05)
    client = await net.client(hub)
    accepted = await client.submitted("r1", preferred_node_id="silent")
    assert accepted["node_id"] == "silent"
    assign = await silent.assigned()
    await silent.accept(assign)
    await silent.stop_heartbeats()
    # The hub closes the silent session (4000) after node_timeout_ms and fails its job over.
    assert await silent.wait_closed() == 4000
    assert "silent" not in hub.fleet.snapshot
    second = await other.assigned()
    assert second["job_id"] == assign["job_id"] and second["attempt"] == 2
    await other.accept(second)
    await other.result(second, "rescued")
    result = await client.expect("result", ok=True, node_id="other", output="rescued")
    assert result["attempts"] == 2


async def test_heartbeats_keep_a_node_alive(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(node_timeout_ms=500)
    node = await net.node(hub, "n1", caps(), heartbeat_s=0.05)
    # Wait several timeouts' worth: the session must stay (bounded, 2.5x node_timeout).
    await node.quiet(1.25)
    assert not node.closed.is_set()
    assert "n1" in hub.fleet.snapshot


async def test_capabilities_update_applies_live(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1", caps([("en", "de")]))
    client = await net.client(hub)
    await client.submit("r1", "en", "fr")
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"lang_pair_unsupported": 1}
    await node.send({"type": "capabilities", "capabilities": caps([("en", "fr")], pool=5)})
    await wait_until(
        lambda: ("en", "fr") in hub.fleet.snapshot.get("n1").caps.language_pairs,  # type: ignore[union-attr]
        what="the capabilities update",
    )
    accepted = await client.submitted("r2", "en", "fr")
    assert accepted["node_id"] == "n1"
    await node.run_one()
    await client.expect("result", ok=True, request_id="r2")
    # The old pair is gone, and the pool changed with it.
    await client.submit("r3", "en", "de")
    await client.expect("rejected", code="no_node")
    state = hub.fleet.snapshot.get("n1")
    assert state is not None and state.caps.pool == 5


async def test_a_flood_of_capabilities_updates_applies_at_most_once_per_interval(
    make_hub: MakeHub, net: Net
) -> None:
    """Each update re-indexes the node: a node sending them as fast as it can gets the
    first of an interval applied at once and only the latest of the rest at its end."""
    hub = await make_hub(capabilities_interval_ms=300)
    node = await net.node(hub, "n1", caps([("en", "de")]))
    applied: list[int | None] = []

    def seen(node_id: str, state: Any) -> None:
        if node_id == "n1" and state is not None:
            applied.append(state.caps.pool)

    hub.fleet.subscribe(seen)
    for pool in range(1, 41):
        await node.send({"type": "capabilities", "capabilities": caps([("en", "de")], pool=pool)})
    await wait_until(lambda: applied[-1:] == [40], what="the latest update to apply")
    pools = [p for p in applied if p is not None]
    # The first at once, the latest at the interval's end (perhaps one more if the flood
    # spanned two intervals): never 40 re-indexings.
    assert pools[-1] == 40 and len(set(pools) - {0}) <= 3, pools
    await node.quiet(0.4)
    assert [p for p in applied if p is not None][-1] == 40


async def test_drain_stops_new_jobs_but_running_one_completes(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1", caps(max_concurrency=4))
    client = await net.client(hub)
    await client.submitted("r1")
    assign = await node.assigned()
    await node.accept(assign)
    await node.send({"type": "drain"})
    await wait_until(
        lambda: hub.fleet.snapshot.get("n1").status == "draining",  # type: ignore[union-attr]
        what="drain",
    )
    await client.submit("r2")
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"draining": 1}
    # A second node takes new work; the drained one gets nothing more.
    other = await net.node(hub, "n2", caps())
    accepted = await client.submitted("r3")
    assert accepted["node_id"] == "n2"
    await other.run_one()
    await client.expect("result", request_id="r3", ok=True)
    await node.result(assign, "finished")
    result = await client.expect("result", request_id="r1", ok=True, output="finished")
    assert result["node_id"] == "n1"
    # Even with a preferred node id, the draining node is passed over.
    accepted = await client.submitted("r4", preferred_node_id="n1")
    assert accepted["node_id"] == "n2"
    await node.quiet()  # bounded: no job_assign reaches the draining node


async def test_max_concurrency_one_never_gets_a_second_job(make_hub: MakeHub, net: Net) -> None:
    # The v1 rule, kept with `queue_timeout_ms = 0`: a full fleet refuses at once
    # (tests/net/test_queue.py has the waiting rules).
    hub = await make_hub(queue_timeout_ms=0)
    solo = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("r1")
    assign = await solo.assigned()
    # Before and after acceptance the slot is taken.
    await client.submit("r2")
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"at_capacity": 1}
    await solo.accept(assign)
    await client.submit("r3", preferred_node_id="solo")
    await client.expect("rejected", code="no_node")
    # Another node takes work preferring the busy one; the busy one hears nothing.
    spare = await net.node(hub, "spare", caps(max_concurrency=1))
    accepted = await client.submitted("r4", preferred_node_id="solo")
    assert accepted["node_id"] == "spare"
    await solo.quiet()  # bounded: no second job_assign while one is running
    await solo.result(assign, "one")
    await client.expect("result", request_id="r1", ok=True)
    # The freed slot is usable again.
    accepted = await client.submitted("r5", preferred_node_id="solo")
    assert accepted["node_id"] == "solo"
    await solo.run_one()
    await client.expect("result", request_id="r5", ok=True)
    assert [m["type"] for m in spare.received] == ["registered", "job_assign"]


async def test_slots_hold_under_a_burst_of_submits(make_hub: MakeHub, net: Net) -> None:
    # The v1 rule, kept with `queue_timeout_ms = 0`: a full fleet refuses at once
    # (tests/net/test_queue.py has the waiting rules).
    hub = await make_hub(queue_timeout_ms=0)
    nodes = [await net.node(hub, f"n{i}", caps(max_concurrency=1)) for i in range(3)]
    client = await net.client(hub)
    for i in range(6):
        await client.submit(f"r{i}")
    answers = [await client.recv() for _ in range(6)]
    accepted = [a for a in answers if a["type"] == "accepted"]
    rejected = [a for a in answers if a["type"] == "rejected"]
    assert len(accepted) == 3 and len(rejected) == 3
    assert sorted(a["node_id"] for a in accepted) == ["n0", "n1", "n2"]
    assert all(r["reasons"] == {"at_capacity": 3} for r in rejected)
    for node in nodes:
        await node.assigned()
        await node.quiet(0.1)  # bounded: exactly one job each


async def test_reconnect_after_close_registers_again(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    await node.aclose()
    await wait_until(lambda: "n1" not in hub.fleet.snapshot, what="the node to leave")
    again = await connect_node(hub.url, "n1", caps())
    net.nodes.append(again)
    assert again.registered is not None and again.registered["node_id"] == "n1"


async def test_frozen_node_is_removed_without_waiting_for_its_close(
    make_hub: MakeHub, net: Net
) -> None:
    """A peer that stops talking AND reading (a partition) must not hold its job hostage
    for the WebSocket close timeout: node_timeout_ms is what counts."""
    hub = await make_hub(node_timeout_ms=600)
    frozen = await net.node(hub, "frozen", caps(), heartbeat_s=0.05)
    other = await net.node(hub, "other", caps(), heartbeat_s=0.05)
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="frozen")
    assign = await frozen.assigned()
    await frozen.accept(assign)
    await frozen.stop_heartbeats()
    frozen.ws.transport.pause_reading()  # never answers the hub's close frame
    second = await other.assigned(wait_s=3.0)
    assert second["job_id"] == assign["job_id"] and second["attempt"] == 2
    assert "frozen" not in hub.fleet.snapshot
    await other.accept(second)
    await other.result(second, "rescued")
    await client.expect("result", ok=True, node_id="other")
    frozen.ws.transport.resume_reading()
