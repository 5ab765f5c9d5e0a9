"""Every decodable submit gets exactly one `accepted` or `rejected` with its request_id,
whatever happens between the hubs and the store (real hub processes, a real
redis-server, raw clients that record every frame)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_sim.client import HubClient
from hub.core.messages import Rejected, Result
from hub.core.principal import DEFAULT_TENANT
from hub.store.keys import Keys
from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until
from tests.support.hub_process import HubProcess
from tests.support.hubtest import (
    AutoNode,
    Msg,
    TestClient,
    TestNode,
    connect_client,
    connect_node,
    wait_until,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

ANSWERS = ("accepted", "rejected")


def answers(client: TestClient) -> dict[str, list[Msg]]:
    """Per request id, the `accepted`/`rejected` frames it got."""
    out: dict[str, list[Msg]] = {}
    for message in client.received:
        if message["type"] in ANSWERS:
            out.setdefault(message["request_id"], []).append(message)
    return out


async def test_the_same_request_id_on_two_hubs_for_a_pair_nobody_serves(start_hubs: Any) -> None:
    # Both hubs bind, one wins, the winner finds no node and releases the binding; the
    # loser asked the winner to be watched meanwhile. Every submit on both sides still
    # gets its own `rejected` with its request id, never a bare `error`.
    a, b = start_hubs(2)
    async with agent("en-zh", [b.url], Work()) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "en-zh"), "hub a to see the node")
        on_a, on_b = await connect_client(a.url), await connect_client(b.url)
        try:
            count = 200
            for i in range(count):
                for client in (on_a, on_b):
                    await client.submit(f"unservable-{i}", "en", "fr")
            await wait_until(
                lambda: len(answers(on_a)) == count and len(answers(on_b)) == count,
                WAIT_S * 2, "an answer to every submit on both hubs",
            )
            await asyncio.sleep(0.3)  # nothing more may follow (a second answer, an error)
        finally:
            await on_a.aclose()
            await on_b.aclose()
    for client in (on_a, on_b):
        assert [m for m in client.received if m["type"] == "error"] == []
        per_request = answers(client)
        assert all(len(frames) == 1 for frames in per_request.values())
        assert {f[0]["type"] for f in per_request.values()} == {"rejected"}
        assert {f[0]["code"] for f in per_request.values()} == {"no_node"}


async def test_a_lost_binding_reply_never_locks_the_request_id(start_hubs: Any) -> None:
    # Redis stops answering (SIGSTOP) while submits wait on their bindings: they are
    # refused `store_unavailable`, but Redis makes those bindings when it resumes.
    # Resubmitting them later gets real answers, not `duplicate_in_flight`.
    own = RedisServer()
    own.start()
    try:
        (a,) = start_hubs(1, redis=own, hub_timeout_ms=1000)
        work = Work()
        async with agent("n1", [a.url], work, max_concurrency=8) as node:
            await node.wait_registered(WAIT_S)
            async with HubClient(a.url) as client:
                assert own.proc is not None
                os.kill(own.proc.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    paused = [
                        await client.submit("en", "zh", payload={"key": f"p{i}"}) for i in range(5)
                    ]
                    refused = await asyncio.wait_for(
                        asyncio.gather(*(h.result for h in paused)), WAIT_S
                    )
                    refused_after_s = time.monotonic() - started
                finally:
                    os.kill(own.proc.pid, signal.SIGCONT)
                assert all(
                    isinstance(r, Rejected) and r.code == "store_unavailable" for r in refused
                ), refused
                again = [
                    await client.submit("en", "zh", request_id=h.request_id,
                                        payload={"key": f"p{i}"})
                    for i, h in enumerate(paused)
                ]
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result for h in again)), WAIT_S
                )
    finally:
        own.close()
    assert refused_after_s < 5, refused_after_s
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert work.completed == Counter({f"p{i}": 1 for i in range(5)})


@pytest.mark.parametrize("pipe", ["warm", "cold"])
async def test_a_job_dispatched_with_a_lost_binding_reply_runs_once(
    start_hubs: Any, pipe: str
) -> None:
    # The node is on hub b, so hub a's binding script also appends the Dispatch to b's
    # inbox. Redis stops answering (SIGSTOP): a refuses the submits `store_unavailable`.
    # Warm: the scripts were written on the open connection, and Redis runs them when
    # it resumes, so the jobs reach the node and run; a resubmit must get that run's
    # result, not run the job again. Cold: no submit before the pause, so the bindings
    # may wait for a connection that is never ready (a fresh one waits for Redis
    # before writing anything) and are never made: a resubmit runs the job, once, and
    # the attempts hub a tracked in case they had gone out end. (Whether the
    # connection is open already depends on what the hub did before; either way
    # every job runs exactly once.) The pause outlasts the hubs' presence, so both
    # also take the store for restarted (`store_restarted`).
    own = RedisServer()
    own.start()
    try:
        a, b = start_hubs(2, redis=own, hub_timeout_ms=1000)
        work = Work()
        async with agent("n1", [b.url], work, max_concurrency=8) as node:
            await node.wait_registered(WAIT_S)
            await until(lambda: sees(a, "n1", owner=b), "hub a to see n1 owned by hub b")
            async with HubClient(a.url) as client:
                if pipe == "warm":
                    warm = await client.submit("en", "zh", payload={"key": "warm"})
                    assert isinstance(await asyncio.wait_for(warm.result, WAIT_S), Result)
                assert own.proc is not None
                os.kill(own.proc.pid, signal.SIGSTOP)
                try:
                    paused = [
                        await client.submit("en", "zh", payload={"key": f"g{i}"})
                        for i in range(5)
                    ]
                    refused = await asyncio.wait_for(
                        asyncio.gather(*(h.result for h in paused)), WAIT_S
                    )
                finally:
                    os.kill(own.proc.pid, signal.SIGCONT)
                assert all(
                    isinstance(r, Rejected) and r.code == "store_unavailable" for r in refused
                ), refused
                keys = {f"g{i}" for i in range(5)} | ({"warm"} if pipe == "warm" else set())
                if pipe == "warm":
                    await until(
                        lambda: _true(set(work.completed) == keys), "the bound jobs to run"
                    )
                again = [
                    await client.submit("en", "zh", request_id=h.request_id,
                                        payload={"key": f"g{i}"})
                    for i, h in enumerate(paused)
                ]
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result for h in again)), WAIT_S
                )
                await until(  # no job is left behind on hub a
                    lambda: _true(a.get_json("/v1/jobs?state=active") == []),  # (loopback)
                    "hub a to hold no job",
                )
        for hub in (a, b):
            log = await asyncio.to_thread(Path(hub.log_path).read_text, errors="replace")
            assert "Traceback" not in log, hub.output()
    finally:
        own.close()
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert work.started == Counter({key: 1 for key in keys}), work.started
    assert work.completed == Counter({key: 1 for key in keys}), work.completed


async def _true(value: bool) -> bool:
    return value


async def test_a_binding_to_a_job_this_hub_never_recorded_is_taken_over(
    start_hubs: Any, redis_server: RedisServer, prefix: str
) -> None:
    # What a lost binding reply leaves behind: Redis bound the request to a job id of
    # this hub's current run, but the hub answered `store_unavailable` and never
    # recorded the job. A resubmit must run it, not get `duplicate_in_flight` for the
    # binding's lifetime.
    (a,) = start_hubs(1)
    work = Work()
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        async with agent("n1", [a.url], work) as node:
            await node.wait_registered(WAIT_S)
            async with HubClient(a.url) as client:
                first = await client.submit("en", "zh", payload={"key": "first"})
                done = await asyncio.wait_for(first.result, WAIT_S)
                assert isinstance(done, Result)
                boot = done.job_id.rsplit(".", 1)[0]  # <hub id>.<boot token>
                await store.set(
                    Keys(prefix).request(DEFAULT_TENANT, "lost-reply"), f"{boot}.999999",
                    px=600_000,
                )
                again = await client.submit("en", "zh", request_id="lost-reply",
                                            payload={"key": "lost"})
                result = await asyncio.wait_for(again.result, WAIT_S)
    finally:
        await store.aclose()
    assert isinstance(result, Result) and result.ok, result
    assert work.completed["lost"] == 1


async def test_after_a_redis_restart_every_submit_is_answered_with_its_request_id(
    start_hubs: Any,
) -> None:
    # Right after Redis restarts the hub's pooled connections are stale: releasing the
    # binding of a submit nobody can serve fails. The submit is still answered with
    # its request id (and a resubmit later gets a fresh answer).
    own = RedisServer()
    own.start()
    try:
        (a,) = start_hubs(1, redis=own)
        async with agent("n1", [a.url], Work()) as node:
            await node.wait_registered(WAIT_S)
            client = await connect_client(a.url)
            try:
                await client.submit("warm-up", "en", "fr")
                await client.expect("rejected", request_id="warm-up")
                own.restart()
                for i in range(10):
                    await client.submit(f"after-{i}", "en", "fr")
                await wait_until(
                    lambda: sum(r.startswith("after-") for r in answers(client)) == 10,
                    WAIT_S, "an answer to every submit",
                )
                for i in range(10):  # and again, once the hub reconnected
                    await client.submit(f"after-{i}", "en", "fr")
                await wait_until(
                    lambda: sum(len(f) for r, f in answers(client).items()
                                if r.startswith("after-")) == 20,
                    WAIT_S, "an answer to every resubmit",
                )
            finally:
                await client.aclose()
    finally:
        own.close()
    assert [m for m in client.received if m["type"] == "error"] == []
    for request_id, frames in answers(client).items():
        assert all(f["type"] == "rejected" for f in frames), (request_id, frames)
        assert frames[-1]["code"] == "no_node", (request_id, frames)


@contextlib.asynccontextmanager
async def remote_node_and_spare(
    a: HubProcess, b: HubProcess
) -> AsyncIterator[tuple[TestNode, AutoNode, TestClient, Msg]]:
    """n1 on hub b (driven by the test), a spare n2 on hub a that runs whatever it gets,
    a client of hub a, and the assignment to n1 of a job submitted on a for n1."""
    n1 = await connect_node(b.url, "n1")
    spare = AutoNode(await connect_node(a.url, "n2"))
    client = await connect_client(a.url)
    try:
        for node_id, owner in (("n1", b), ("n2", a)):
            await until(lambda n=node_id, o=owner: sees(a, n, owner=o), f"hub a to see {node_id}")
        await client.submitted("r1", preferred_node_id="n1", payload="p")
        yield n1, spare, client, await n1.assigned()
    finally:
        await client.aclose()
        await spare.aclose()
        await spare.node.aclose()
        await n1.aclose()


async def test_a_job_is_not_run_again_while_its_owner_hub_only_stalls(start_hubs: Any) -> None:
    # The node accepts its job and finishes it while its hub (b) is stalled (SIGSTOP for
    # 1 s: far past accept_timeout_ms, well short of hub_timeout_ms's exclusion). The
    # job's home (a) hears nothing meanwhile, but that is the hub between them being
    # late, not the node: the home must not give the job to another node, and the
    # node's own result is the answer once b catches up. (Before the owner hub timed
    # its nodes' accepts, the home failed the attempt over at 300 ms and the spare
    # node ran the job a second time.)
    a, b = start_hubs(2, accept_timeout_ms=300, hub_timeout_ms=3000, node_timeout_ms=5000)
    async with remote_node_and_spare(a, b) as (n1, spare, client, assign):
        b.signal(signal.SIGSTOP)
        try:
            await n1.accept(assign)
            await n1.result(assign, "from n1")
            await asyncio.sleep(1.0)  # the stall itself: b reads nothing for 1 s
        finally:
            b.signal(signal.SIGCONT)
        result = await client.expect("result")
    assert result["ok"] and result["output"] == "from n1", result
    assert result["attempts"] == 1, result
    assert spare.done == [], spare.done


async def test_the_owner_hub_times_its_nodes_accept_of_another_hubs_job(
    start_hubs: Any,
) -> None:
    # n1 (on hub b) never accepts the job homed at hub a. Hub b, which reads n1 itself,
    # takes the job back after accept_timeout_ms and tells a, which fails over to n2. The
    # home's own backstop (accept_timeout_ms + hub_timeout_ms, here over a minute) is
    # far beyond the wait: only b's deadline can end the attempt in time.
    a, b = start_hubs(2, accept_timeout_ms=300, hub_timeout_ms=60_000)
    async with remote_node_and_spare(a, b) as (n1, spare, client, assign):
        cancel = await n1.expect("job_cancel")
        result = await client.expect("result")
    assert (cancel["job_id"], cancel["attempt"], cancel["reason"]) == (
        assign["job_id"], 1, "accept_timeout"
    ), cancel
    assert result["ok"] and result["node_id"] == "n2" and result["attempts"] == 2, result
    assert spare.done == [assign["job_id"]], spare.done
