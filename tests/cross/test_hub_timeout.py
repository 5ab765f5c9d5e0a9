"""A hub that stopped answering is excluded from selection within `hub_timeout_ms`
(real hub processes, a real redis-server, agent SDK nodes)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest

from agent_sim.client import HubClient
from hub.core.messages import Result
from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until

pytestmark = pytest.mark.slow


async def test_a_killed_owner_hub_stops_being_selected_within_hub_timeout(
    start_hubs: Any,
) -> None:
    # Long presence and node timeouts (the hub is declared dead only after ~12 s), a
    # short hub_timeout_ms: the survivor must stop choosing the dead hub's nodes well
    # before that, and those nodes reconnect to it at once (no lease held by a dead
    # hub). A steady load on the survivor loses nothing.
    slow = {"node_timeout_ms": 10_000, "hub_timeout_ms": 1500, "accept_timeout_ms": 1000}
    survivor, victim = start_hubs(2, **slow)
    work = Work(service_s=0.01)
    agents = [
        agent(f"n{i}", [victim.url, survivor.url] if i < 2 else [survivor.url], work,
              max_concurrency=20)
        for i in range(4)
    ]
    for node in agents:
        await node.start()
    try:
        for node in agents:
            await node.wait_registered(WAIT_S)
        for node in agents:
            await until(lambda n=node: sees(survivor, n.node_id), "the survivor to see all")
        async with HubClient(survivor.url) as client:
            sent: list[tuple[float, Any]] = []

            async def load(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    handle = await client.submit("en", "zh", payload={"key": f"k{len(sent)}"})
                    sent.append((time.monotonic(), handle))
                    await asyncio.sleep(0.02)  # pacing the load, not waiting for anything

            steady = asyncio.create_task(load(4.0))
            await asyncio.sleep(0.5)
            victim.kill()
            killed = time.monotonic()

            async def excluded() -> bool:
                nodes = await asyncio.to_thread(survivor.get_json, "/v1/nodes")
                return not any(n["hub_id"] == victim.hub_id for n in nodes)

            await until(excluded, "the survivor to stop listing the dead hub's nodes", 5)
            excluded_after_s = time.monotonic() - killed
            await steady
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(h.result for _, h in sent)), WAIT_S
            )
        # The nodes reconnected to the survivor (no lease held by a dead hub).
        assert all(n.hub_id == survivor.hub_id and n.registered.is_set() for n in agents)
    finally:
        for node in agents:
            await node.aclose()
    assert excluded_after_s < 1.5, excluded_after_s
    failed = Counter(type(o).__name__ for o in outcomes if not (isinstance(o, Result) and o.ok))
    assert not failed, failed
    # Once the dead hub was excluded, no job went its way (one attempt each).
    late = [o for (at, _), o in zip(sent, outcomes, strict=True) if at > killed + 1.5]
    assert late and all(o.attempts == 1 for o in late), [o.attempts for o in late]


async def _true(value: bool) -> bool:
    return value


async def test_a_result_sent_to_an_owner_that_then_died_is_not_lost(start_hubs: Any) -> None:
    # The node hands its result to its hub, which dies before passing it on. The node
    # reconnects to the job's home and sends the result again (`replayed`): the home
    # takes it (that attempt is still the job's), nothing runs twice.
    home, owner = start_hubs(2, hub_timeout_ms=1000)
    work = Work(gated=True)
    async with agent("n1", [owner.url, home.url], work) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(home, "n1", owner=owner), "the home to see n1")
        async with HubClient(home.url) as client:
            handle = await client.submit("en", "zh", payload={"key": "once"})
            await until(lambda: _true(node.running == 1), "the job to run")
            owner.signal(signal.SIGSTOP)  # frozen: it will never pass the result on
            work.gate.set()
            await until(lambda: _true(node.completed == 1), "the node to finish")
            owner.kill()
            result = await asyncio.wait_for(handle.result, WAIT_S)
    assert isinstance(result, Result) and result.ok and result.attempts == 1, result
    assert work.started == Counter({"once": 1})
