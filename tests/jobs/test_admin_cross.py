"""The admin surface across hubs: two hubs sharing a real redis-server; an
operator talks to hub A about a node owned by hub B and a job homed on hub B."""

from __future__ import annotations

import json
import uuid

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.hubtest import http_get, http_request, wait_until
from tests.support.redis_server import RedisServer


async def two_hubs(make_hub: MakeHub, redis_server: RedisServer) -> tuple[Hub, Hub]:
    shared = {
        "deployment_mode": "cross_instance", "redis_url": redis_server.url,
        "redis_prefix": f"admin-{uuid.uuid4().hex[:8]}", "load_publish_interval_ms": 10,
    }
    return await make_hub(hub_id="adm-a", **shared), await make_hub(hub_id="adm-b", **shared)


def status_on(hub: Hub, node_id: str) -> str | None:
    state = hub.fleet.snapshot.get(node_id)
    return None if state is None else state.status


async def test_drain_a_node_of_another_hub(
    make_hub: MakeHub, redis_server: RedisServer, net: Net
) -> None:
    hub_a, hub_b = await two_hubs(make_hub, redis_server)
    node = await net.node(hub_b, "far")
    await wait_until(lambda: status_on(hub_a, "far") == "online", what="A to see B's node")
    status, _, _ = await http_request(hub_a.http_url, "POST", "/v1/nodes/far/drain")
    assert status == 204
    # The owner acted (its registry), and every hub's view follows.
    assert hub_b.service.registry.registered["far"].draining
    await wait_until(lambda: status_on(hub_a, "far") == "draining", what="A's view to drain")
    assert status_on(hub_b, "far") == "draining"
    client = await net.client(hub_a)
    await client.submit("r1", queue_timeout_ms=0)
    await client.expect("rejected", code="no_node")
    status, _, _ = await http_request(hub_a.http_url, "POST", "/v1/nodes/far/undrain")
    assert status == 204
    await wait_until(lambda: status_on(hub_a, "far") == "online", what="A's view to undrain")
    await client.submitted("r2")
    await node.run_one()
    await client.expect("result", ok=True)


async def test_cancel_a_job_homed_on_another_hub(
    make_hub: MakeHub, redis_server: RedisServer, net: Net
) -> None:
    hub_a, hub_b = await two_hubs(make_hub, redis_server)
    node = await net.node(hub_b, "n1")
    client = await net.client(hub_b)
    accepted = await client.submitted("r1")
    await node.assigned()
    job_id = accepted["job_id"]
    status, _, _ = await http_request(hub_a.http_url, "DELETE", f"/v1/jobs/{job_id}")
    assert status == 204
    result = await client.expect("result", ok=False, job_id=job_id)
    assert result["error"]["code"] == "cancelled"
    await node.expect("job_cancel", job_id=job_id)
    status, _, body = await http_request(hub_a.http_url, "DELETE", f"/v1/jobs/{job_id}")
    assert status == 404 and json.loads(body)["error"] == "job_finished"
    # A job id whose home is not a live hub: nothing to cancel.
    status, _, body = await http_request(hub_a.http_url, "DELETE", "/v1/jobs/ghost.00.1")
    assert status == 404 and json.loads(body)["error"] == "unknown_job"


async def test_unknown_node_is_404_on_any_hub(
    make_hub: MakeHub, redis_server: RedisServer
) -> None:
    hub_a, _ = await two_hubs(make_hub, redis_server)
    status, _, body = await http_request(hub_a.http_url, "POST", "/v1/nodes/nope/drain")
    assert status == 404 and json.loads(body)["error"] == "unknown_node"
    status, _, body = await http_get(hub_a.http_url, "/v1/jobs")
    assert status == 200 and json.loads(body) == []


async def test_an_owner_that_does_not_answer_is_504(
    make_hub: MakeHub, redis_server: RedisServer, net: Net
) -> None:
    hub_a, hub_b = await two_hubs(make_hub, redis_server)
    await net.node(hub_b, "far")
    await wait_until(lambda: status_on(hub_a, "far") == "online", what="A to see B's node")
    hub_a.service.admin.reply_timeout_s = 0.3
    # B stops reading its inbox (a hub hung or partitioned): A still believes it alive.
    for task in hub_b.cluster._tasks:
        if task.get_name().endswith(":inbox"):
            task.cancel()
    status, _, body = await http_request(hub_a.http_url, "POST", "/v1/nodes/far/drain")
    assert status == 504 and json.loads(body)["error"] == "hub_unreachable"
    assert not hub_b.service.registry.registered["far"].draining
    assert not hub_a.service.admin._replies  # nothing left waiting
