"""Authentication in cross-instance mode with real parts: hub processes with `auth = "jwt"`, a real
redis-server, SDK agents and clients. Tenancy holds across hubs (bindings in Redis are
per tenant, duplicates watched through another hub stay in their tenant, records
archived in Redis carry their tenant), and a takeover on another hub closes the old
session at once (a `NodeReplaced` envelope) and fails its attempts over."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from agent_sim.agent import NodeAgent
from agent_sim.client import HubClient
from hub.core.messages import Accepted, Result
from tests.cross.test_cross_hub import WAIT_S, Work, caps, until
from tests.support.auth import SECRET, token
from tests.support.hub_process import HubProcess
from tests.support.hubtest import connect_node

pytestmark = pytest.mark.slow

AUTH = {"auth": "jwt", "jwt_secret": SECRET}
ADMIN = token("admin", "ops")


def get(hub: HubProcess, path: str, tok: str) -> tuple[int, Any]:
    request = urllib.request.Request(hub.http_url + path,
                                     headers={"Authorization": f"Bearer {tok}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def owner_of(hub: HubProcess, node_id: str) -> str | None:
    status, nodes = await asyncio.to_thread(get, hub, "/v1/nodes", ADMIN)
    assert status == 200
    return next((n["hub_id"] for n in nodes if n["node_id"] == node_id), None)


def agent(node_id: str, hub: HubProcess, work: Work) -> NodeAgent:
    return NodeAgent(
        node_id=node_id, capabilities=caps(4), hub_urls=[hub.url], handler=work,
        token=token("node", node_id), reconnect_min_s=0.05, reconnect_max_s=0.3,
    )


async def test_tenants_stay_apart_across_hubs(start_hubs: Any) -> None:
    a, b = start_hubs(2, **AUTH)
    acme, globex = token(tenant="acme"), token(tenant="globex")
    work = Work(gated=True)
    async with agent("n1", b, work) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: _is(owner_of(a, "n1"), b.hub_id), "hub a to see n1 on hub b")
        async with (
            HubClient(a.url, token=acme) as acme_a, HubClient(b.url, token=globex) as globex_b,
            HubClient(b.url, token=acme) as acme_b,
        ):
            h_acme = await acme_a.submit("en", "zh", request_id="same", payload={"key": "a"})
            h_globex = await globex_b.submit("en", "zh", request_id="same",
                                             payload={"key": "g"})
            first = await asyncio.wait_for(h_acme.accepted, WAIT_S)
            second = await asyncio.wait_for(h_globex.accepted, WAIT_S)
            assert isinstance(first, Accepted) and isinstance(second, Accepted)
            assert first.job_id != second.job_id
            assert not first.duplicate and not second.duplicate
            # acme's duplicate on the other hub watches acme's job (home: hub a).
            h_dup = await acme_b.submit("en", "zh", request_id="same", payload={"key": "a"})
            dup = await asyncio.wait_for(h_dup.accepted, WAIT_S)
            assert isinstance(dup, Accepted) and dup.duplicate and dup.job_id == first.job_id
            await until(lambda: _true(sum(work.started.values()) == 2), "both jobs to start")
            # Another tenant neither reads nor cancels it.
            assert (await asyncio.to_thread(get, a, f"/v1/jobs/{first.job_id}", globex))[0] == 404
            status, record = await asyncio.to_thread(get, a, f"/v1/jobs/{first.job_id}", acme)
            assert status == 200 and record["tenant"] == "acme"
            await globex_b.cancel(first.job_id)
            error = await asyncio.wait_for(globex_b.errors.get(), WAIT_S)
            assert error.code == "unknown_job"
            work.gate.set()
            results = await asyncio.wait_for(
                asyncio.gather(h_acme.result, h_globex.result, h_dup.result), WAIT_S
            )
    assert [r.output["key"] for r in results if isinstance(r, Result)] == ["a", "g", "a"]
    assert work.started == {"a": 1, "g": 1}
    # The archived records (in Redis) carry their tenant, on any hub.
    async def archived() -> bool:
        status, _ = await asyncio.to_thread(get, b, f"/v1/jobs/{first.job_id}", acme)
        return status == 200

    await until(archived, "acme's record to reach Redis")
    status, record = await asyncio.to_thread(get, b, f"/v1/jobs/{first.job_id}", acme)
    assert record["tenant"] == "acme" and record["status"] == "done"
    assert (await asyncio.to_thread(get, b, f"/v1/jobs/{first.job_id}", globex))[0] == 404
    assert (await asyncio.to_thread(get, b, f"/v1/jobs/{second.job_id}", ADMIN))[0] == 200


async def test_a_takeover_on_another_hub_replaces_the_old_session(start_hubs: Any) -> None:
    a, b = start_hubs(2, **AUTH)
    held = Work(gated=True)
    spare_work = Work()
    async with agent("n1", b, held) as old, agent("n2", b, spare_work) as spare:
        await old.wait_registered(WAIT_S)
        await spare.wait_registered(WAIT_S)
        await until(lambda: _is(owner_of(a, "n1"), b.hub_id), "hub a to see n1 on hub b")
        await until(lambda: _is(owner_of(a, "n2"), b.hub_id), "hub a to see n2 on hub b")
        async with HubClient(a.url, token=token()) as client:
            handle = await client.submit("en", "zh", preferred_node_id="n1",
                                         payload={"key": "k"})
            await until(lambda: _true(held.started["k"] == 1), "n1 to start the job")
            # Another agent for n1, allowed by its token, registers on hub a.
            successor = await connect_node(
                a.url, "n1", {"language_pairs": [{"src": "en", "tgt": "zh"}],
                              "asr_languages": ["en"], "tts_languages": ["zh"],
                              "max_concurrency": 1},
                token=token("node", "fleet", node_ids=["n*"]),
            )
            try:
                # The old session on hub b is closed with 4005 well before a lease
                # renewal could tell (the envelope), and the agent stays down.
                await until(lambda: _true(old.replaced), "the old session to get 4005", 5)
                result = await asyncio.wait_for(handle.result, WAIT_S)
                assert isinstance(result, Result) and result.ok, result
                assert result.node_id == "n2" and result.attempts == 2
                await until(lambda: _is(owner_of(b, "n1"), a.hub_id), "hub b to see n1 on a")
                assert old.connects == 1
            finally:
                await successor.aclose()
    assert spare_work.completed == {"k": 1}


async def _true(value: bool) -> bool:
    return value


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
