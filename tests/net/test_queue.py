"""The admission queue over real sockets, one hub (local mode): a full fleet waits.

Every rule of protocol-v1.1 "Admission queue" as a client and a node see it:
`accepted` with `queued: true` and no `node_id`, dispatch when a slot frees
(result, reject, cancel, timeout, a join, more concurrency), priority, turns
between client sessions, `queue_timeout`, `overloaded`, `cancel`, the job
record's `state`, the metrics. Waits are bounded (`expect`, `wait_until`).
"""

from __future__ import annotations

import json

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, http_get, wait_until


async def test_a_full_fleet_queues_and_dispatches_when_the_slot_frees(
    hub: Hub, net: Net
) -> None:
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("r1")
    first = await node.assigned()
    waiting = await client.submitted("r2")
    assert waiting["queued"] is True and "node_id" not in waiting
    assert waiting["duplicate"] is False
    status, _, body = await http_get(hub.http_url, f"/v1/jobs/{waiting['job_id']}")
    assert status == 200
    record = json.loads(body)
    assert (record["state"], record["status"], record["attempts"]) == ("queued", "queued", [])
    await node.quiet()  # bounded: no second job while the one slot is taken
    await node.accept(first)
    await node.result(first, "one")
    await client.expect("result", request_id="r1", ok=True)
    second = await node.assigned()
    assert second["job_id"] == waiting["job_id"] and second["attempt"] == 1
    await node.accept(second)
    await node.result(second, "two")
    result = await client.expect("result", request_id="r2", ok=True, output="two")
    assert result["attempts"] == 1 and result["node_id"] == "solo"


async def test_a_burst_beyond_capacity_all_completes_never_past_the_slots(
    hub: Hub, net: Net
) -> None:
    """The issue's case: 8 slots, many submits. Before: 8 ok and the rest no_node."""
    nodes = [await net.node(hub, f"n{i}", caps(max_concurrency=2)) for i in range(4)]
    client = await net.client(hub)
    for i in range(40):
        await client.submit(f"r{i}", payload=i)
    answers = [await client.expect("accepted") for _ in range(40)]
    assert sum(1 for a in answers if a.get("queued")) == 32
    running: dict[str, list[dict[str, object]]] = {f"n{i}": [] for i in range(4)}
    done = 0
    while done < 40:
        for node in nodes:
            while not node.inbox.empty():
                assign = node.inbox.get_nowait()
                assert assign["type"] == "job_assign"
                running[node.node_id].append(assign)
                assert len(running[node.node_id]) <= 2, "a node got more jobs than slots"
        for node in nodes:
            if running[node.node_id]:
                assign = running[node.node_id].pop(0)
                await node.accept(assign)
                await node.result(assign, "ok")
                await client.expect("result", ok=True)
                done += 1
        if done < 40:
            await wait_until(
                lambda: any(not n.inbox.empty() for n in nodes) or any(running.values()),
                what="the next assignment",
            )
    assert len(hub.service.home.waiting) == 0
    assert hub.metrics.submits.get("accepted") == 40
    assert hub.metrics.no_node.get("at_capacity") > 0  # they did find the fleet full


async def test_priority_then_age_and_sessions_take_turns(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    heavy, light = await net.client(hub), await net.client(hub)
    await heavy.submitted("hold")
    holding = await node.assigned()
    for i in range(3):
        await heavy.submitted(f"h{i}", payload=f"h{i}")
    for i in range(2):
        await light.submitted(f"l{i}", payload=f"l{i}")
    await heavy.submitted("urgent", payload="urgent", priority=9)
    order = []
    assign = holding
    for _ in range(6):
        await node.accept(assign)
        await node.result(assign, "ok")
        assign = await node.assigned()
        order.append(assign["payload"])
    assert order == ["urgent", "h0", "l0", "h1", "l1", "h2"]


async def test_queue_timeout_ends_a_job_that_waited_too_long(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    await node.assigned()
    waiting = await client.submitted("w", queue_timeout_ms=100)
    result = await client.expect("result", request_id="w", ok=False)
    assert result["error"]["code"] == "queue_timeout" and result["attempts"] == 0
    assert result["job_id"] == waiting["job_id"]
    await node.quiet()  # bounded: the node never hears of it
    status, _, body = await http_get(hub.http_url, f"/v1/jobs/{waiting['job_id']}")
    assert status == 200 and json.loads(body)["state"] == "finished"


async def test_the_hubs_queue_timeout_applies_without_the_field(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(queue_timeout_ms=80)
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    await node.assigned()
    await client.submitted("w")
    result = await client.expect("result", request_id="w", ok=False)
    assert result["error"]["code"] == "queue_timeout"


async def test_past_max_queued_jobs_submits_are_overloaded(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_queued_jobs=2)
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    hold = await node.assigned()
    await client.submitted("w1")
    await client.submitted("w2")
    await client.submit("w3")
    rejected = await client.expect("rejected", request_id="w3", code="overloaded")
    assert rejected["message"]
    # Another client's session is not starved by it: it is refused the same way, and
    # once slots free both can submit again.
    other = await net.client(hub)
    await other.submit("o1")
    await other.expect("rejected", request_id="o1", code="overloaded")
    await node.accept(hold)
    await node.result(hold, "ok")
    await client.expect("result", request_id="hold", ok=True)
    await wait_until(lambda: len(hub.service.home.waiting) == 1, what="w1 to leave the queue")
    accepted = await other.submitted("o1")
    assert accepted["queued"] is True


async def test_cancel_of_a_waiting_job_frees_its_place(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    hold = await node.assigned()
    waiting = await client.submitted("w")
    await client.cancel(waiting["job_id"])
    result = await client.expect("result", request_id="w", ok=False)
    assert result["error"]["code"] == "cancelled"
    await node.accept(hold)
    await node.result(hold, "ok")
    await client.expect("result", request_id="hold", ok=True)
    await node.quiet()  # bounded: the cancelled job never runs


async def test_a_node_joining_takes_waiting_jobs(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "first", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    await node.assigned()
    waiting = await client.submitted("w")
    late = await net.node(hub, "late", caps(max_concurrency=1))
    assign = await late.assigned()
    assert assign["job_id"] == waiting["job_id"]


async def test_more_concurrency_takes_waiting_jobs(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    await node.assigned()
    await client.submitted("w")
    await node.send({"type": "capabilities", "capabilities": caps(max_concurrency=2)})
    assign = await node.assigned()
    assert assign["attempt"] == 1


async def test_a_reject_when_the_rest_is_full_waits_instead_of_no_node(
    hub: Hub, net: Net
) -> None:
    one = await net.node(hub, "one", caps(max_concurrency=1))
    two = await net.node(hub, "two", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("a")
    await client.submitted("b")
    by_node = {"one": await one.assigned(), "two": await two.assigned()}
    rejected = by_node["one"]
    await one.reject(rejected)
    await client.quiet()  # bounded: no no_node result; the job waits for "two"
    await two.accept(by_node["two"])
    await two.result(by_node["two"], "ok")
    again = await two.assigned()
    assert again["job_id"] == rejected["job_id"] and again["attempt"] == 2
    await two.accept(again)
    await two.result(again, "retried")
    results = [await client.expect("result") for _ in range(2)]
    retried = next(r for r in results if r["job_id"] == rejected["job_id"])
    assert retried["ok"] is True and retried["attempts"] == 2


async def test_nothing_capable_is_still_no_node_at_once(hub: Hub, net: Net) -> None:
    await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submit("r1", "en", "ja")
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"lang_pair_unsupported": 1}


async def test_bad_queue_fields_are_refused(hub: Hub, net: Net) -> None:
    client = await net.client(hub)
    await client.submit("r1", priority=10)
    error = await client.expect("error", code="invalid_field")
    assert error["path"] == "$.priority"
    await client.submit("r2", queue_timeout_ms=-1)
    error = await client.expect("error", code="invalid_field")
    assert error["path"] == "$.queue_timeout_ms"


async def test_queue_metrics(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("hold")
    hold = await node.assigned()
    await client.submitted("w")
    _, _, body = await http_get(hub.http_url, "/metrics")
    text = body.decode()
    assert "nodehub_queued_jobs 1" in text.splitlines()
    assert "# TYPE nodehub_queue_wait_seconds histogram" in text
    await node.accept(hold)
    await node.result(hold, "ok")
    await node.assigned()
    _, _, body = await http_get(hub.http_url, "/metrics")
    lines = body.decode().splitlines()
    assert "nodehub_queued_jobs 0" in lines
    assert "nodehub_queue_wait_seconds_count 1" in lines
