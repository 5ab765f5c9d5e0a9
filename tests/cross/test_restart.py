"""A hub restarted under the same `hub_id` answers for the jobs its previous run was home
to (real hub processes, a real redis-server, agent SDK nodes and clients)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_sim.client import HubClient
from hub.core.envelopes import NodeEvent, encode
from hub.core.messages import Accepted, JobResult, Result
from hub.core.principal import DEFAULT_TENANT
from hub.store.keys import Keys
from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def test_a_hub_restarted_under_its_id_keeps_its_running_jobs(start_hubs: Any) -> None:
    # 40 jobs homed at hub a run on hub b's node; hub a is SIGKILLed and restarted at
    # once. Resubmits on either hub watch the jobs still running (nothing runs twice);
    # their results reach the resubmitters and are kept for later resubmits.
    a, b = start_hubs(2)
    work = Work(gated=True)
    async with agent("n1", [b.url], work, max_concurrency=50) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "n1", owner=b), "hub a to see n1")
        async with HubClient(a.url) as first:
            handles = [await first.submit("en", "zh", payload={"key": f"k{i}"}) for i in range(40)]
            await asyncio.wait_for(asyncio.gather(*(h.accepted for h in handles)), WAIT_S)
            await until(lambda: _true(node.running == 40), "the 40 jobs to run on n1")
            a.kill()
        a.start()  # same hub id, same port, a new run
        async with HubClient(a.url) as on_a, HubClient(b.url) as on_b:
            again = [
                await (on_a if i < 20 else on_b).submit(
                    "en", "zh", request_id=h.request_id, payload={"key": f"k{i}"}
                )
                for i, h in enumerate(handles)
            ]
            accepted = await asyncio.wait_for(
                asyncio.gather(*(h.accepted for h in again)), WAIT_S
            )
            work.gate.set()
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in again)), WAIT_S)
            # Later resubmits are answered from the archived results.
            later = [
                await on_b.submit("en", "zh", request_id=h.request_id, payload={"key": "x"})
                for h in handles
            ]
            stored = await asyncio.wait_for(asyncio.gather(*(h.result for h in later)), WAIT_S)
            assert all(n == 1 for n in on_a.result_counts.values())
    assert all(isinstance(x, Accepted) and x.duplicate for x in accepted), accepted
    assert [x.job_id for x in accepted] == [h.job_id for h in handles]  # type: ignore[union-attr]
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert [r.output for r in results] == [  # type: ignore[union-attr]
        {"key": f"k{i}", "node": "n1"} for i in range(40)
    ]
    assert [r.output for r in stored] == [r.output for r in results]  # type: ignore[union-attr]
    assert work.started == Counter({f"k{i}": 1 for i in range(40)})  # nothing ran twice


async def test_a_restarted_hub_runs_again_what_died_with_its_previous_run(
    start_hubs: Any,
) -> None:
    # Jobs homed at hub a ran on hub a's own node: they died with it (the node dropped
    # them). A resubmit after the restart runs each once more, and at once: not
    # `duplicate_in_flight`, not waiting out a binding.
    a, b = start_hubs(2)
    work = Work(gated=True)
    async with agent("n1", [a.url, b.url], work, max_concurrency=20) as node:
        await node.wait_registered(WAIT_S)
        async with HubClient(a.url) as first:
            handles = [await first.submit("en", "zh", payload={"key": f"d{i}"}) for i in range(10)]
            await until(lambda: _true(node.running == 10), "the jobs to run on n1")
            a.kill()
            await until(lambda: _true(node.lost == 10), "n1 to drop them with the connection")
        a.start()
        work.gate.set()
        async with HubClient(a.url) as on_a:
            again = [
                await on_a.submit("en", "zh", request_id=h.request_id, payload={"key": f"d{i}"})
                for i, h in enumerate(handles)
            ]
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in again)), WAIT_S)
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert work.completed == Counter({f"d{i}": 1 for i in range(10)})


async def _true(value: bool) -> bool:
    return value


async def test_results_a_previous_run_read_but_never_acknowledged_are_recovered(
    start_hubs: Any, redis_server: RedisServer, prefix: str
) -> None:
    # The previous run read a node's result from its inbox and died before acknowledging
    # it (and before archiving the job). The new run handles it again at start.
    (a,) = start_hubs(1)
    async with agent("n1", [a.url], Work()) as node:
        await node.wait_registered(WAIT_S)
        async with HubClient(a.url) as client:
            done = await asyncio.wait_for((await client.submit("en", "zh")).result, WAIT_S)
    assert isinstance(done, Result)
    a.kill()
    old_job = done.job_id.rsplit(".", 1)[0] + ".777"
    inbox = "{" + prefix + "}:inbox:" + a.hub_id
    result = JobResult(old_job, 1, ok=True, output={"from": "the previous run"})
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.set(Keys(prefix).request(DEFAULT_TENANT, "unacked"), old_job, px=600_000)
        envelope = NodeEvent("h-other", node_id="n9", request_id="unacked", message=result)
        await store.xadd(inbox, {"e": encode(envelope)})
        # Read as the dead run's consumer: pending, never acknowledged.
        read = await store.xreadgroup("hubs", a.hub_id, {inbox: ">"}, count=10)
        assert read and len(read[0][1]) == 1
        a.start()
        async with HubClient(a.url) as client:
            again = await client.submit("en", "zh", request_id="unacked")
            recovered = await asyncio.wait_for(again.result, WAIT_S)
        pending = await store.xpending(inbox, "hubs")
    finally:
        await store.aclose()
    assert isinstance(recovered, Result) and recovered.output == {"from": "the previous run"}
    assert recovered.job_id == old_job
    assert pending["pending"] == 0  # and acknowledged this time
