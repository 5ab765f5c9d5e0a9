"""Authentication, roles, takeover, expiry, Origin and tenancy over real sockets
(protocol-v1.1, "Authentication and tenancy").

Every refusal of the contract is tried against a real hub with `auth = "jwt"`:
HTTP 401 / 403 at the handshake with the JSON body, no session made; close
codes 4003 (`forbidden`), 4004 (`token_expired`), 4005 (`replaced`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
import pytest
from loguru import logger
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.auth import OTHER_SECRET, SECRET, token
from tests.support.hubtest import (
    TIMEOUT_S,
    caps,
    connect_client,
    http_get,
    http_request,
    wait_until,
)


@pytest.fixture
async def auth_hub(make_hub: MakeHub) -> Hub:
    return await make_hub(auth="jwt", jwt_secret=SECRET)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def refused(url: str, *, headers: dict[str, str] | None = None,
                  origin: str | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a WebSocket handshake the hub refuses."""
    with pytest.raises(InvalidStatus) as info:
        await asyncio.wait_for(
            connect(url, additional_headers=headers, origin=origin,  # type: ignore[arg-type]
                    compression=None, ping_interval=None),
            TIMEOUT_S,
        )
    response = info.value.response
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.body)


async def test_every_handshake_refusal_of_the_contract(auth_hub: Hub, net: Net) -> None:
    client_url = auth_hub.url + "/v1/client"
    node_url = auth_hub.url + "/v1/node"
    unauthorized: list[tuple[str, dict[str, str] | None, str]] = [
        ("no token", None, "no token"),
        ("bad signature", bearer(token(secret=OTHER_SECRET)), "signature"),
        ("expired", bearer(token(ttl_s=-30)), "expired"),
        ("malformed", bearer("not.a.jwt"), "malformed"),
        ("alg none", bearer(jwt.encode({"sub": "x", "role": "client", "exp": 2**40}, None,
                                       algorithm="none")), "algorithm"),
        ("no exp", bearer(token(exp=None)), "exp"),
        ("no role", bearer(token(role=None)), "role"),
        ("unknown role", bearer(token(role="root")), "role"),
        ("bad tenant", bearer(token(tenant="a:b")), "tenant"),
        ("node_ids not a list", bearer(token("node", node_ids="gpu-*")), "node_ids"),
        ("not bearer", {"Authorization": f"Basic {token()}"}, "Bearer"),
    ]
    for what, headers, needle in unauthorized:
        status, body = await refused(client_url, headers=headers)
        assert status == 401, what
        assert body["error"] == "unauthorized" and needle in body["message"], (what, body)
        assert SECRET not in body["message"]
    # A valid token of the wrong role: 403.
    for url, tok in ((node_url, token("client")), (client_url, token("node", "n1")),
                     (node_url, token("admin"))):
        status, body = await refused(url, headers=bearer(tok))
        assert (status, body["error"]) == (403, "forbidden"), (url, body)
    # No session exists for any of them: the first session admitted is peer c1.
    node = await net.node(auth_hub, "n1", token=token("node", "n1"))
    client = await net.client(auth_hub, token=token("client"))
    await client.submitted("r1")
    assign = await node.assigned()
    assert assign["session_id"] == f"{auth_hub.config.hub_id}:c2"  # n1, then c2
    assert len(auth_hub.service.home.clients) == 1
    assert set(auth_hub.service.registry.registered) == {"n1"}


async def test_http_endpoints_take_their_roles(auth_hub: Hub) -> None:
    url = auth_hub.http_url
    admin, client, node = token("admin"), token("client"), token("node", "n1")
    assert (await http_get(url, "/healthz"))[0] == 200  # probes need no token
    for path in ("/metrics", "/v1/nodes", "/v1/jobs/x", "/nope"):
        status, headers, body = await http_get(url, path)
        assert status == 401 and json.loads(body)["error"] == "unauthorized", path
        assert headers["content-type"] == "application/json"
    for path in ("/metrics", "/v1/nodes", "/nope"):
        for tok in (client, node):
            status, _, body = await http_get(url, path, headers=bearer(tok))
            assert status == 403 and json.loads(body)["error"] == "forbidden", path
    assert (await http_get(url, "/v1/jobs/x", headers=bearer(node)))[0] == 403
    assert (await http_get(url, "/metrics", headers=bearer(admin)))[0] == 200
    assert (await http_get(url, "/v1/nodes", headers=bearer(admin)))[0] == 200
    assert (await http_get(url, "/v1/jobs/x", headers=bearer(client)))[0] == 404
    assert (await http_get(url, "/nope", headers=bearer(admin)))[0] == 404
    status, _, body = await http_get(url, f"/metrics?token={admin}")
    assert status == 200
    assert 'nodehub_auth_refusals_total{status="401"} 4' in body.decode()
    assert 'nodehub_auth_refusals_total{status="403"} 7' in body.decode()


async def test_metrics_public_serves_metrics_without_a_token(make_hub: MakeHub) -> None:
    hub = await make_hub(auth="jwt", jwt_secret=SECRET, metrics_public=True)
    assert (await http_get(hub.http_url, "/metrics"))[0] == 200
    assert (await http_get(hub.http_url, "/v1/nodes"))[0] == 401


async def test_token_in_the_query_string(auth_hub: Hub) -> None:
    ws = await connect(
        f"{auth_hub.url}/v1/client?token={token('client')}", compression=None,
        ping_interval=None,
    )
    try:
        await ws.send(json.dumps({"type": "cancel", "job_id": "nope"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        assert reply["code"] == "unknown_job"
    finally:
        await ws.close()
    status, body = await refused(f"{auth_hub.url}/v1/client?token=garbage")
    assert status == 401 and body["error"] == "unauthorized"


async def test_node_ids_globs_and_the_forbidden_register(auth_hub: Hub, net: Net) -> None:
    fleet_token = token("node", "fleet-7", node_ids=["gpu-*", "spare"])
    await net.node(auth_hub, "gpu-1", token=fleet_token)
    await net.node(auth_hub, "spare", token=fleet_token)
    stranger = await net.node(auth_hub, "cpu-1", token=fleet_token, register=False,
                              heartbeat_s=None)
    reply = await stranger.register(caps())
    assert reply["type"] == "error" and reply["code"] == "forbidden", reply
    assert await stranger.wait_closed() == 4003
    # Without node_ids a node token registers its own sub only.
    own = await net.node(auth_hub, "n9", register=False, heartbeat_s=None,
                         token=token("node", "n9"))
    assert (await own.register(caps()))["type"] == "registered"
    other = await net.node(auth_hub, "n10", register=False, heartbeat_s=None,
                           token=token("node", "n9"))
    assert (await other.register(caps()))["code"] == "forbidden"
    assert await other.wait_closed() == 4003
    assert set(auth_hub.service.registry.registered) == {"gpu-1", "spare", "n9"}


async def test_takeover_replaces_the_old_session_and_fails_its_attempts_over(
    auth_hub: Hub, net: Net
) -> None:
    victim = await net.node(auth_hub, "n1", token=token("node", "n1"))
    spare = await net.node(auth_hub, "n2", token=token("node", "n2"))
    client = await net.client(auth_hub, token=token("client"))
    accepted = await client.submitted("r1", preferred_node_id="n1")
    assign = await victim.assigned()
    await victim.accept(assign)
    # A second session for n1, with a token allowed n1, takes the node over.
    successor = await net.node(auth_hub, "n1", register=False, heartbeat_s=None,
                               token=token("node", "agent-b", node_ids=["n*"]))
    assert (await successor.register(caps()))["type"] == "registered"
    successor.start_heartbeats(0.05)
    assert await victim.wait_closed() == 4005
    # The job it held failed over as if it had dropped: to n2 (n1 is excluded now).
    retry = await spare.assigned()
    assert (retry["job_id"], retry["attempt"]) == (accepted["job_id"], 2)
    await spare.accept(retry)
    await spare.result(retry, "done")
    result = await client.expect("result", ok=True)
    assert result["attempts"] == 2 and result["node_id"] == "n2"
    status, _, body = await http_get(auth_hub.http_url, f"/v1/jobs/{accepted['job_id']}",
                                     headers=bearer(token("admin")))
    assert status == 200
    assert json.loads(body)["attempts"][0]["outcome"] == "node_lost"
    # The new session serves n1.
    await client.submit("r2", preferred_node_id="n1")
    await client.expect("accepted", node_id="n1")
    await successor.run_one()
    await client.expect("result", ok=True, node_id="n1")


async def test_sessions_close_with_4004_when_their_token_expires(
    auth_hub: Hub, net: Net
) -> None:
    soon = time.time() + 2.0
    node = await net.node(auth_hub, "n1", token=token("node", "n1", exp=soon))
    client = await net.client(auth_hub, token=token("client", exp=soon))
    lasting = await net.client(auth_hub, token=token("client"))
    codes = await asyncio.gather(node.wait_closed(10), client.wait_closed(10))
    assert time.time() >= soon - 0.05
    assert codes == [4004, 4004]
    await wait_until(lambda: "n1" not in auth_hub.service.registry.registered)
    await lasting.cancel("nope")  # a session with a later exp is untouched
    await lasting.expect("error", code="unknown_job")


async def test_origin_is_checked_against_allowed_origins(make_hub: MakeHub) -> None:
    hub = await make_hub(allowed_origins=("https://app.example.com",))  # auth = "none"
    status, body = await refused(hub.url + "/v1/client", origin="https://evil.example")
    assert (status, body["error"]) == (403, "forbidden")
    status, _, _ = await http_get(hub.http_url, "/v1/nodes",
                                  headers={"Origin": "https://evil.example"})
    assert status == 403
    for origin in ("https://app.example.com", "HTTPS://APP.EXAMPLE.COM", None):
        client = await connect_client(hub.url, origin=origin)
        await client.cancel("nope")
        await client.expect("error", code="unknown_job")
        await client.aclose()
    secured = await make_hub(auth="jwt", jwt_secret=SECRET,
                             allowed_origins=("https://app.example.com",))
    # A foreign page is refused even with a valid token.
    status, _ = await refused(secured.url + "/v1/client", origin="https://evil.example",
                              headers=bearer(token()))
    assert status == 403


UPGRADE = [
    ("Upgrade", "websocket"), ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
]


async def test_a_repeated_origin_or_authorization_header_is_a_bad_request(
    make_hub: MakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    """Which of two values would hold is a guess: a clear 400, no traceback (it was an
    HTTP 500 and websockets' "process_request failed")."""
    hub = await make_hub(auth="jwt", jwt_secret=SECRET,
                         allowed_origins=("https://app.example.com",))
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    good, ok_origin = bearer(token())["Authorization"], "https://app.example.com"
    repeated = {
        "Origin": [("Origin", ok_origin), ("Origin", "https://evil.example"),
                   ("Authorization", good)],
        "Authorization": [("Origin", ok_origin), ("Authorization", good),
                          ("Authorization", "Bearer x")],
    }
    try:
        for name, headers in repeated.items():
            for path, extra in (("/v1/client", UPGRADE), ("/v1/nodes", [])):
                status, _, body = await http_request(
                    hub.http_url, "GET", path, headers=[*extra, *headers]
                )
                assert status == 400, (name, path, body)
                assert json.loads(body) == {
                    "error": "bad_request", "message": f"the {name} header is sent more than once",
                }
    finally:
        logger.remove(sink)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not [r for r in records if r["exception"] is not None or r["level"].no >= 30]
    # Sent once each, the same headers pass.
    status, _, _ = await http_request(
        hub.http_url, "GET", "/v1/nodes", headers=[("Origin", ok_origin), ("Authorization", good)]
    )
    assert status == 403  # a client token on an admin path: read, and refused for its role
    _, _, metrics = await http_get(hub.http_url, "/metrics", headers=bearer(token("admin")))
    assert 'nodehub_auth_refusals_total{status="400"} 4' in metrics.decode()


async def test_tenants_are_isolated(auth_hub: Hub, net: Net) -> None:
    node = await net.node(auth_hub, "n1", token=token("node", "n1"))
    acme_token, globex_token = token(tenant="acme"), token(tenant="globex")
    acme = await net.client(auth_hub, token=acme_token)
    globex = await net.client(auth_hub, token=globex_token)
    # The same request_id in two tenants names two jobs.
    a = await acme.submitted("same-id")
    assign_a = await node.assigned()
    g = await globex.submitted("same-id")
    assign_g = await node.assigned()
    assert a["job_id"] != g["job_id"] and not a["duplicate"] and not g["duplicate"]
    # A duplicate joins its own tenant's job only.
    acme_again = await net.client(auth_hub, token=acme_token)
    dup = await acme_again.submitted("same-id")
    assert dup["duplicate"] and dup["job_id"] == a["job_id"]
    await node.quiet()
    # Cancel and GET of another tenant's job: as if it did not exist.
    await globex.cancel(a["job_id"])
    await globex.expect("error", code="unknown_job")
    status, _, _ = await http_get(auth_hub.http_url, f"/v1/jobs/{a['job_id']}",
                                  headers=bearer(globex_token))
    assert status == 404
    status, _, body = await http_get(auth_hub.http_url, f"/v1/jobs/{a['job_id']}",
                                     headers=bearer(acme_token))
    assert status == 200 and json.loads(body)["tenant"] == "acme"
    # Results reach each tenant's own watchers only.
    await node.accept(assign_a)
    await node.result(assign_a, "for acme")
    await node.accept(assign_g)
    await node.result(assign_g, "for globex")
    assert (await acme.expect("result"))["output"] == "for acme"
    assert (await acme_again.expect("result"))["output"] == "for acme"
    assert (await globex.expect("result"))["output"] == "for globex"
    await globex.quiet()
    # Finished: still invisible to the other tenant, visible to an admin.
    await globex.cancel(a["job_id"])
    await globex.expect("error", code="unknown_job")
    await acme.cancel(a["job_id"])
    await acme.expect("error", code="job_finished")
    status, _, body = await http_get(auth_hub.http_url, f"/v1/jobs/{g['job_id']}",
                                     headers=bearer(token("admin")))
    assert status == 200 and json.loads(body)["tenant"] == "globex"
    assert (await http_get(auth_hub.http_url, f"/v1/jobs/{g['job_id']}",
                           headers=bearer(acme_token)))[0] == 404


async def test_jobs_without_auth_belong_to_the_default_tenant(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    accepted = await client.submitted("r1")
    await node.run_one()
    await client.expect("result", ok=True)
    _, _, body = await http_get(hub.http_url, f"/v1/jobs/{accepted['job_id']}")
    assert json.loads(body)["tenant"] == "default"
