"""The admin surface over real sockets (protocol-v1.1 "Admin surface"):
drain/undrain a node, cancel a job, list jobs; the admin role with `auth = "jwt"`."""

from __future__ import annotations

import json

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.auth import SECRET, token
from tests.support.hubtest import caps, http_get, http_request, wait_until


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sub='op')}"}


async def node_status(hub: Hub, node_id: str) -> str:
    status, _, body = await http_get(hub.http_url, "/v1/nodes")
    assert status == 200
    return str(next(n["status"] for n in json.loads(body) if n["node_id"] == node_id))


async def test_drain_and_undrain_a_node(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    status, headers, body = await http_request(hub.http_url, "POST", "/v1/nodes/n1/drain")
    assert (status, body) == (204, b"")
    assert "content-length" not in headers
    assert await node_status(hub, "n1") == "draining"
    # Drained: no new job goes to it (the queue is off: refused at once).
    await client.submit("r1", queue_timeout_ms=0)
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"draining": 1}
    assert (await http_request(hub.http_url, "POST", "/v1/nodes/n1/undrain"))[0] == 204
    assert await node_status(hub, "n1") == "online"
    await client.submitted("r2")
    await node.run_one()
    await client.expect("result", ok=True)


async def test_undrain_takes_a_waiting_job_at_once(hub: Hub, net: Net) -> None:
    """An undrained node is a freed slot: a job waiting in the queue goes to it."""
    busy = await net.node(hub, "n1", caps(max_concurrency=1))
    spare = await net.node(hub, "n2", caps(max_concurrency=1))
    client = await net.client(hub)
    assert (await http_request(hub.http_url, "POST", "/v1/nodes/n2/drain"))[0] == 204
    await client.submitted("r1")
    await busy.assigned()
    await client.submit("r2", queue_timeout_ms=10_000)
    await client.expect("accepted", queued=True)
    assert (await http_request(hub.http_url, "POST", "/v1/nodes/n2/undrain"))[0] == 204
    assign = await spare.run_one()
    result = await client.expect("result", ok=True)
    assert result["job_id"] == assign["job_id"]


async def test_undrain_of_a_node_that_drained_itself(hub: Hub, net: Net) -> None:
    """Documented rule: an operator's undrain undoes the node's own `drain` too."""
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await node.send({"type": "drain"})
    await wait_until(lambda: hub.service.registry.registered["n1"].draining, what="drain")
    assert await node_status(hub, "n1") == "draining"
    assert (await http_request(hub.http_url, "POST", "/v1/nodes/n1/undrain"))[0] == 204
    assert await node_status(hub, "n1") == "online"
    assert not hub.service.registry.registered["n1"].self_drained
    await client.submitted("r1")
    await node.run_one()
    await client.expect("result", ok=True)


async def test_drain_unknown_node_is_404(hub: Hub) -> None:
    for action in ("drain", "undrain"):
        status, _, body = await http_request(hub.http_url, "POST", f"/v1/nodes/nope/{action}")
        assert status == 404
        assert json.loads(body)["error"] == "unknown_node"


async def test_node_ids_are_percent_decoded(hub: Hub, net: Net) -> None:
    await net.node(hub, "gpu a/1")
    status, _, _ = await http_request(hub.http_url, "POST", "/v1/nodes/gpu%20a%2F1/drain")
    assert status == 204
    assert await node_status(hub, "gpu a/1") == "draining"


async def test_cancel_a_running_job(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    accepted = await client.submitted("r1")
    assign = await node.assigned()
    status, _, _ = await http_request(hub.http_url, "DELETE", f"/v1/jobs/{accepted['job_id']}")
    assert status == 204
    await node.expect("job_cancel", job_id=assign["job_id"], reason="cancelled")
    result = await client.expect("result", ok=False)
    assert result["error"]["code"] == "cancelled"
    # Again: the job is finished now.
    status, _, body = await http_request(
        hub.http_url, "DELETE", f"/v1/jobs/{accepted['job_id']}"
    )
    assert status == 404 and json.loads(body)["error"] == "job_finished"
    status, _, body = await http_request(hub.http_url, "DELETE", "/v1/jobs/t1.0000.999")
    assert status == 404 and json.loads(body)["error"] == "unknown_job"


async def test_cancel_a_queued_job(hub: Hub, net: Net) -> None:
    await net.node(hub, "n1", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("r1")
    await client.submit("r2", queue_timeout_ms=10_000)
    queued = await client.expect("accepted", queued=True)
    status, _, body = await http_get(hub.http_url, "/v1/jobs?state=queued")
    assert status == 200
    assert [r["job_id"] for r in json.loads(body)] == [queued["job_id"]]
    status, _, _ = await http_request(hub.http_url, "DELETE", f"/v1/jobs/{queued['job_id']}")
    assert status == 204
    result = await client.expect("result", ok=False, job_id=queued["job_id"])
    assert result["error"]["code"] == "cancelled"
    assert len(hub.service.home.waiting) == 0


async def test_list_jobs(hub: Hub, net: Net) -> None:
    await net.node(hub, "n1", caps(max_concurrency=2))
    client = await net.client(hub)
    first = await client.submitted("r1")
    second = await client.submitted("r2")
    await client.submit("r3", queue_timeout_ms=10_000)
    third = await client.expect("accepted", queued=True)
    status, _, body = await http_get(hub.http_url, "/v1/jobs")
    assert status == 200
    records = json.loads(body)
    assert [r["job_id"] for r in records] == [
        first["job_id"], second["job_id"], third["job_id"]
    ]
    assert [r["state"] for r in records] == ["active", "active", "queued"]
    assert all(r["node_id"] == "n1" for r in records[:2])
    status, _, body = await http_get(hub.http_url, "/v1/jobs?state=active&limit=1")
    assert [r["job_id"] for r in json.loads(body)] == [first["job_id"]]
    for query, name in (("state=done", "state"), ("limit=0", "limit"), ("limit=x", "limit")):
        status, _, body = await http_get(hub.http_url, f"/v1/jobs?{query}")
        assert status == 400 and json.loads(body)["path"] == name, query


async def test_wrong_methods_are_405(hub: Hub) -> None:
    for method, path, allow in (
        ("GET", "/v1/nodes/n1/drain", "POST"),
        ("DELETE", "/v1/nodes/n1/undrain", "POST"),
        ("POST", "/v1/jobs/x", "GET, DELETE"),
        ("POST", "/v1/jobs", "GET"),
        ("DELETE", "/v1/stats", "GET"),
        ("POST", "/healthz", "GET"),
    ):
        status, headers, body = await http_request(hub.http_url, method, path)
        assert status == 405, (method, path)
        assert headers["allow"] == allow
        assert json.loads(body)["error"] == "method_not_allowed"
    status, _, _ = await http_request(hub.http_url, "POST", "/v1/nope")
    assert status == 404


async def test_admin_endpoints_take_the_admin_role(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(auth="jwt", jwt_secret=SECRET)
    await net.node(hub, "n1", token=token("node", sub="n1"))
    for method, path in (
        ("POST", "/v1/nodes/n1/drain"), ("POST", "/v1/nodes/n1/undrain"),
        ("DELETE", "/v1/jobs/x.y.1"), ("GET", "/v1/jobs"),
    ):
        assert (await http_request(hub.http_url, method, path))[0] == 401, path
        for role in ("client", "node"):
            status, _, _ = await http_request(hub.http_url, method, path, headers=bearer(role))
            assert status == 403, (role, path)
    status, _, _ = await http_request(
        hub.http_url, "POST", "/v1/nodes/n1/drain", headers=bearer("admin")
    )
    assert status == 204
    assert hub.service.registry.registered["n1"].draining
