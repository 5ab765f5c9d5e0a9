"""`HubClient` under faults: its futures never hang, it fails over to the next hub
(real hub processes, a real redis-server, agent SDK nodes)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest

from agent_sim.client import ConnectionLost, HubClient
from hub.core.messages import Result
from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until

pytestmark = pytest.mark.slow


async def test_futures_fail_with_connection_lost_when_the_hub_dies(start_hubs: Any) -> None:
    (a,) = start_hubs(1)
    work = Work(gated=True)
    async with agent("n1", [a.url], work) as node:
        await node.wait_registered(WAIT_S)
        async with HubClient(a.url, reconnect_timeout_s=1.0) as client:
            running = await client.submit("en", "zh")
            await asyncio.wait_for(running.accepted, WAIT_S)
            a.kill()
            started = time.monotonic()
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(running.result, WAIT_S)
            assert time.monotonic() - started < 2.0
            # A new submit finds no hub within reconnect_timeout_s: a clear error too.
            later = await client.submit("en", "zh")
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(later.result, WAIT_S)
        work.gate.set()


async def test_resubmit_on_reconnect_gets_every_answer_from_the_next_hub(
    start_hubs: Any,
) -> None:
    a, b = start_hubs(2)
    work = Work(gated=True)
    async with agent("n1", [b.url], work, max_concurrency=10) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "n1", owner=b), "hub a to see n1")
        async with HubClient([a.url, b.url], resubmit=True, reconnect_timeout_s=10) as client:
            handles = [await client.submit("en", "zh", payload={"key": f"k{i}"}) for i in range(5)]
            await asyncio.wait_for(asyncio.gather(*(h.accepted for h in handles)), WAIT_S)
            await until(lambda: _true(node.running == 5), "the jobs to run")
            a.kill()  # the jobs' home: its results are lost with it, the jobs are not
            await until(lambda: _true(client.url.startswith(b.url)), "the client to move")
            work.gate.set()
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in handles)), WAIT_S * 2
            )
            assert all(n == 1 for n in client.result_counts.values())
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert all(h.sends == 2 for h in handles)
    assert max(work.completed.values()) == 1


async def test_a_draining_hub_sends_new_submits_to_the_next_hub(start_hubs: Any) -> None:
    a, b = start_hubs(2)
    work = Work(service_s=1.0)
    async with agent("na", [a.url], work) as na, agent("nb", [b.url], work) as nb:
        await na.wait_registered(WAIT_S)
        await nb.wait_registered(WAIT_S)
        async with HubClient([a.url, b.url]) as client:
            running = await client.submit("en", "zh", payload={"key": "on-a"},
                                          preferred_node_id="na")
            await until(lambda: _true(na.running == 1), "a job to run on hub a")
            a.signal(signal.SIGTERM)
            await until(lambda: _status_is(a, 503), "hub a to drain")
            moved = [await client.submit("en", "zh", payload={"key": f"m{i}"}) for i in range(3)]
            results = await asyncio.wait_for(
                asyncio.gather(running.result, *(h.result for h in moved)), WAIT_S
            )
            assert client.url.startswith(b.url) and client.failovers == 1
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert results[0].node_id == "na"  # type: ignore[union-attr]  # finished on hub a
    assert work.completed == Counter({"on-a": 1, "m0": 1, "m1": 1, "m2": 1})


async def _status_is(hub: Any, code: int) -> bool:
    return (await asyncio.to_thread(hub.get_status, "/readyz"))[0] == code


async def _true(value: bool) -> bool:
    return value
