"""The HTTP GET endpoints on the hub's one port, and graceful shutdown."""

from __future__ import annotations

import asyncio
import json

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, http_get, wait_until

NODE_FIELDS = {"node_id", "hub_id", "pool", "status", "running", "max_concurrency", "capabilities"}


async def test_healthz(hub: Hub) -> None:
    status, headers, body = await http_get(hub.http_url, "/healthz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "ok"


async def test_unknown_path_is_404(hub: Hub) -> None:
    status, _, _ = await http_get(hub.http_url, "/nope")
    assert status == 404


async def test_metrics_is_prometheus_text(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await client.submitted("r1")
    await node.run_one()
    await client.expect("result", ok=True)
    await client.submit("r2", "en", "zz")
    await client.expect("rejected", code="no_node")
    await client.send_raw("garbage")
    await client.expect("error")
    status, headers, body = await http_get(hub.http_url, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "nodehub_jobs_total", "nodehub_submits_total", "nodehub_attempts_total",
        "nodehub_no_node_total", "nodehub_protocol_errors_total", "nodehub_selection_seconds",
        "nodehub_nodes", "nodehub_active_jobs",
    ):
        assert f"# TYPE {name}" in text, name
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    assert samples['nodehub_jobs_total{outcome="ok"}'] == 1
    assert samples['nodehub_no_node_total{reason="lang_pair_unsupported"}'] == 1
    assert any(k.startswith("nodehub_protocol_errors_total") for k in samples)


async def test_nodes_lists_required_fields(hub: Hub, net: Net) -> None:
    status, _, body = await http_get(hub.http_url, "/v1/nodes")
    assert status == 200 and json.loads(body) == []
    await net.node(hub, "n1", caps(pool=3, max_concurrency=2, labels={"gpu": "a100"}))
    drained = await net.node(hub, "n2", caps([("fr", "en")]))
    await drained.send({"type": "drain"})
    await drained.send({"type": "job_accept", "job_id": "barrier", "attempt": 1})
    await drained.expect("error")  # the drain was handled before this error
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="n1")
    status, headers, body = await http_get(hub.http_url, "/v1/nodes")
    assert status == 200 and headers["content-type"] == "application/json"
    nodes = {n["node_id"]: n for n in json.loads(body)}
    assert set(nodes) == {"n1", "n2"}
    for entry in nodes.values():
        assert entry.keys() >= NODE_FIELDS
        assert entry["hub_id"] == hub.config.hub_id
    n1 = nodes["n1"]
    assert (n1["pool"], n1["status"], n1["running"], n1["max_concurrency"]) == (3, "online", 1, 2)
    assert n1["capabilities"]["language_pairs"] == [{"src": "en", "tgt": "de"}]
    assert n1["capabilities"]["labels"] == {"gpu": "a100"}
    assert nodes["n2"]["status"] == "draining"


async def test_job_record_and_404(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    accepted = await client.submitted("r1", payload="p")
    job_id = accepted["job_id"]
    await node.accept(await node.assigned())
    status, _, body = await http_get(hub.http_url, f"/v1/jobs/{job_id}")
    assert status == 200
    running = json.loads(body)
    assert running["job_id"] == job_id and running["status"] == "accepted"
    assert running["node_id"] == "n1" and running["request_id"] == "r1"
    await node.result({"job_id": job_id, "attempt": 1}, "out")
    await client.expect("result", ok=True)
    status, _, body = await http_get(hub.http_url, f"/v1/jobs/{job_id}")
    assert status == 200
    done = json.loads(body)
    assert done["status"] == "done" and done["result"]["output"] == "out"
    status, _, body = await http_get(hub.http_url, "/v1/jobs/no-such-job")
    assert status == 404


async def test_graceful_shutdown(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub()
    node = await net.node(hub, "n1")
    idle = await net.node(hub, "n2")
    client = await net.client(hub)
    accepted = await client.submitted("r1", preferred_node_id="n1")
    assign = await node.assigned()
    await node.accept(assign)
    await hub.aclose()
    cancel = await node.expect("job_cancel", job_id=accepted["job_id"])
    assert cancel["reason"] == "hub_shutdown"
    result = await client.expect("result", request_id="r1", ok=False)
    assert result["error"]["code"] == "hub_shutdown"
    for peer in (node, idle, client):
        assert await peer.wait_closed() == 1001
    await hub.aclose()  # idempotent


async def test_livez_and_readyz(hub: Hub) -> None:
    status, _, body = await http_get(hub.http_url, "/livez")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = await http_get(hub.http_url, "/readyz")
    assert status == 200 and json.loads(body) == {"status": "ok", "hub_id": hub.config.hub_id}


async def test_drain_lets_the_running_job_finish_and_lets_idle_nodes_go(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub()
    node = await net.node(hub, "n1")
    idle = await net.node(hub, "n2")
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="n1")
    assign = await node.assigned()
    await node.accept(assign)
    draining = asyncio.create_task(hub.drain(timeout_s=5.0))
    # At once: not ready, new submits refused, the idle node let go (1001).
    assert await idle.wait_closed() == 1001
    status, _, body = await http_get(hub.http_url, "/readyz")
    assert status == 503 and json.loads(body)["status"] == "draining"
    assert (await http_get(hub.http_url, "/livez"))[0] == 200
    await client.submit("r2")
    assert (await client.expect("rejected", request_id="r2"))["code"] == "hub_shutdown"
    # The running job finishes normally; then the drain is over, its node let go too.
    await node.result(assign, output="done")
    assert (await client.expect("result", request_id="r1"))["ok"] is True
    assert await asyncio.wait_for(draining, 5.0) is True
    assert await node.wait_closed() == 1001
    late = await net.node(hub, "n3", register=False)
    await late.send({"type": "register", "node_id": "n3", "capabilities": caps()})
    assert (await late.expect("error"))["code"] == "hub_shutdown"
    assert await late.wait_closed() == 1001


async def test_drain_waits_for_running_jobs_not_for_queued_ones(
    make_hub: MakeHub, net: Net
) -> None:
    # The drain with the admission queue: a job waiting for a slot keeps waiting
    # while the hub drains, but does not keep the drain going; once nothing runs the
    # drain is over, and the waiting job ends `hub_shutdown` when the hub closes.
    hub = await make_hub()
    node = await net.node(hub, "solo", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("r1")
    assign = await node.assigned()
    await node.accept(assign)
    waiting = await client.submitted("r2")
    assert waiting["queued"] is True
    draining = asyncio.create_task(hub.drain(timeout_s=30.0))
    await wait_until(lambda: hub.sessions.draining, what="the drain to start")
    assert not draining.done()  # r1 still runs
    await node.quiet()  # the draining node is offered nothing, the queued job included
    await node.result(assign, output="done")
    assert (await client.expect("result", request_id="r1"))["ok"] is True
    # Well before the 30 s drain timeout: the queued job does not hold the drain.
    assert await asyncio.wait_for(draining, 10.0) is True
    assert len(hub.service.home.waiting) == 1
    await hub.aclose()
    result = await client.expect("result", request_id="r2", ok=False)
    assert result["error"]["code"] == "hub_shutdown"
