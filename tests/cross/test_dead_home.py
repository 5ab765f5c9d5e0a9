"""A home hub that dies with results waiting in its inbox: every one is kept, none is run
again (real hub processes, a real redis-server, agent SDK nodes and clients)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis

from agent_sim.client import HubClient
from hub.core.messages import Result
from hub.core.principal import DEFAULT_TENANT
from hub.store.keys import Keys
from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def test_results_in_a_dead_homes_inbox_are_all_kept_past_one_claim_batch(
    start_hubs: object, redis_server: RedisServer, prefix: str
) -> None:
    # More results than one XAUTOCLAIM/XREADGROUP batch (256) wait in the dead home's
    # inbox: the reaper must page through all of them, not stop after the first batch.
    jobs = 300
    home, survivor = start_hubs(2)  # type: ignore[operator]
    work = Work(gated=True)
    async with agent("big", [survivor.url], work, max_concurrency=jobs) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(home, "big", owner=survivor), "the home to see the node")
        async with HubClient(home.url) as doomed:
            handles = [
                await doomed.submit("en", "zh", payload={"key": f"k{i}"}) for i in range(jobs)
            ]
            await asyncio.wait_for(asyncio.gather(*(h.accepted for h in handles)), WAIT_S)
            await until(lambda: _true(node.running == jobs), "every job to run on the node")
            home.kill()
            work.gate.set()  # the results go to the dead home's inbox, unread
            await until(lambda: _true(node.completed == jobs), "the node to finish them all")
        async with HubClient(survivor.url) as back:
            again = [
                await back.submit("en", "zh", request_id=h.request_id, payload={"key": f"k{i}"})
                for i, h in enumerate(handles)
            ]
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in again)), WAIT_S * 2
            )
            assert all(n == 1 for n in back.result_counts.values())
    assert all(isinstance(r, Result) and r.ok for r in results), Counter(
        type(r).__name__ for r in results
    )
    # Every resubmit was answered from the result the node already produced.
    assert all(n == 1 for n in work.completed.values()), Counter(work.completed.values())
    assert [r.output["key"] for r in results] == [f"k{i}" for i in range(jobs)]  # type: ignore[union-attr]
    store = aioredis.Redis.from_url(redis_server.url)
    try:  # the dead hub was forgotten once its inbox was drained
        assert not await store.exists("{" + prefix + "}:inbox:" + home.hub_id)
    finally:
        await store.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_running_jobs_of_a_dead_home_run_once_more_and_stay_bound_for_their_budget(
    start_hubs: object, redis_server: RedisServer, prefix: str
) -> None:
    # The home dies while its jobs run on another hub's node: the node's hub revokes
    # them (nobody awaits their results), and each resubmit runs its job once more,
    # under a binding that lasts the job's whole budget plus the idempotency window.
    home, survivor = start_hubs(2)  # type: ignore[operator]
    work = Work(gated=True)
    async with agent("n1", [survivor.url], work, max_concurrency=20) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(home, "n1", owner=survivor), "the home to see the node")
        async with HubClient(home.url) as doomed:
            handles = [await doomed.submit("en", "zh", payload={"key": f"r{i}"}) for i in range(10)]
            await until(lambda: _true(node.running == 10), "the jobs to run")
            home.kill()
            await until(lambda: _true(node.cancelled == 10), "the survivor to revoke them")
        work.gate.set()
        async with HubClient(survivor.url) as back:
            again = [
                await back.submit("en", "zh", request_id=h.request_id, payload={"key": f"r{i}"})
                for i, h in enumerate(handles)
            ]
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in again)), WAIT_S)
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert work.completed == Counter({f"r{i}": 1 for i in range(10)})
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        ttl_ms = await store.pttl(Keys(prefix).request(DEFAULT_TENANT, handles[0].request_id))
    finally:
        await store.aclose()
    # idempotency_ttl_ms (600 s) plus the job's budget (3 x (1 s + 3 s) with these timers)
    assert ttl_ms > 600_000 + 5_000, ttl_ms


async def test_resends_while_the_home_is_dying_are_each_answered(start_hubs: object) -> None:
    # A client on the survivor resends a request twice while its home is dead but not
    # yet declared so: both watches land in the dead hub's inbox. Once the home is
    # declared dead, each resend still gets exactly one accepted and one result.
    home, survivor = start_hubs(2)  # type: ignore[operator]
    work = Work(gated=True)
    async with agent("n1", [survivor.url], work) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(home, "n1", owner=survivor), "the home to see the node")
        async with HubClient(home.url) as doomed:
            handle = await doomed.submit("en", "zh", payload={"key": "dying"})
            await until(lambda: _true(node.running == 1), "the job to run")
            home.kill()
        async with HubClient(survivor.url) as one, HubClient(survivor.url) as two:
            resends = [
                await client.submit("en", "zh", request_id=handle.request_id,
                                    payload={"key": "dying"})
                for client in (one, two)
            ]
            await until(lambda: _true(node.cancelled == 1), "the dead home's job to be revoked")
            work.gate.set()
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in resends)), WAIT_S
            )
            await asyncio.sleep(0.3)  # nothing more may arrive
            assert one.result_counts[handle.request_id] == 1
            assert two.result_counts[handle.request_id] == 1
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert work.completed == Counter({"dying": 1})
