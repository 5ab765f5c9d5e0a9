"""The node SDK against a hub with `auth = "jwt"`: a token callable is asked for
a fresh token on every connect (so an expired session, closed with 4004, comes back); a
session replaced by another agent (4005) stops reconnecting; a refused handshake is
retried with the next token."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.exceptions import InvalidStatus

from agent_sim.agent import JobContext, NodeAgent
from agent_sim.client import HubClient
from hub.app.hub import Hub
from hub.core.messages import Capabilities, LanguagePair
from tests.conftest import MakeHub, Net
from tests.support.auth import OTHER_SECRET, SECRET, token
from tests.support.hubtest import TIMEOUT_S, caps, wait_until


def capabilities() -> Capabilities:
    return Capabilities(max_concurrency=1, language_pairs=[LanguagePair("en", "de")],
                        asr_languages=["en"], tts_languages=["de"])


async def noop(ctx: JobContext) -> str:
    return "ok"


@pytest.fixture
async def auth_hub(make_hub: MakeHub) -> Hub:
    return await make_hub(auth="jwt", jwt_secret=SECRET)


async def test_a_token_callable_gives_each_connect_a_fresh_token(auth_hub: Hub) -> None:
    issued: list[float] = []

    async def fresh_token() -> str:
        exp = time.time() + (2.0 if not issued else 600)  # the first one expires soon
        issued.append(exp)
        return token("node", "n1", exp=exp)

    agent = NodeAgent(node_id="n1", capabilities=capabilities(), hub_urls=[auth_hub.url],
                      handler=noop, token=fresh_token, reconnect_min_s=0.05,
                      reconnect_max_s=0.2)
    async with agent:
        await agent.wait_registered(TIMEOUT_S)
        # The hub closes the session at the first token's exp (4004); the agent
        # reconnects with the next token and registers again.
        await wait_until(lambda: agent.connects >= 2 and agent.registered.is_set(), 10,
                         "the agent to come back after its token expired")
        assert len(issued) == 2 and agent.disconnects == 1 and not agent.replaced
        assert "n1" in auth_hub.service.registry.registered


async def test_a_refused_handshake_is_retried_with_the_next_token(auth_hub: Hub) -> None:
    tokens = iter([token("node", "n1", secret=OTHER_SECRET), token("node", "n1")])
    agent = NodeAgent(node_id="n1", capabilities=capabilities(), hub_urls=[auth_hub.url],
                      handler=noop, token=lambda: next(tokens), reconnect_min_s=0.05,
                      reconnect_max_s=0.2)
    async with agent:
        await agent.wait_registered(TIMEOUT_S)
        assert agent.connects == 1  # the 401 made no session


async def test_a_replaced_agent_stops_reconnecting(auth_hub: Hub, net: Net) -> None:
    agent = NodeAgent(node_id="n1", capabilities=capabilities(), hub_urls=[auth_hub.url],
                      handler=noop, token=token("node", "n1"), reconnect_min_s=0.05,
                      reconnect_max_s=0.1)
    async with agent:
        await agent.wait_registered(TIMEOUT_S)
        successor = await net.node(auth_hub, "n1", token=token("node", "n1"),
                                   register=False, heartbeat_s=None)
        assert (await successor.register(caps()))["type"] == "registered"
        successor.start_heartbeats(0.05)
        await wait_until(lambda: agent.replaced, TIMEOUT_S, "the agent to see 4005")
        await asyncio.sleep(0.5)  # several backoffs: it must not take n1 back
        assert agent.connects == 1 and not agent.registered.is_set()
        assert "n1" in auth_hub.service.registry.registered
        assert not successor.closed.is_set()  # nobody replaced the successor


async def test_the_client_sends_its_token(auth_hub: Hub) -> None:
    async with HubClient(auth_hub.url, token=token()) as client:
        await client.cancel("nope")
        error = await asyncio.wait_for(client.errors.get(), TIMEOUT_S)
        assert error.code == "unknown_job"
    with pytest.raises(InvalidStatus) as info:
        async with HubClient(auth_hub.url, token=token("node", "n1")):
            pass
    assert info.value.response.status_code == 403
