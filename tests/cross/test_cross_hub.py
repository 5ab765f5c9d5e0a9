"""Cross-instance mode with real parts: hub processes, a real redis-server, real node agents.

Every wait is bounded: conditions are polled with a deadline (`until`), results
are awaited with `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from agent_sim.agent import JobContext, NodeAgent
from agent_sim.client import HubClient
from hub.core.messages import Capabilities, LanguagePair, Rejected, Result
from hub.store.redis import RedisStore
from tests.support.hub_process import HubProcess
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

WAIT_S = 15.0


def caps(max_concurrency: int = 4) -> Capabilities:
    return Capabilities(
        max_concurrency=max_concurrency,
        language_pairs=[LanguagePair(src="en", tgt="zh")],
        asr_languages=["en"],
        tts_languages=["zh"],
    )


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def node_view(hub: HubProcess, node_id: str) -> dict[str, Any] | None:
    nodes = await asyncio.to_thread(hub.get_json, "/v1/nodes")
    return next((n for n in nodes if n["node_id"] == node_id), None)


async def sees(hub: HubProcess, node_id: str, owner: HubProcess | None = None) -> bool:
    view = await node_view(hub, node_id)
    return view is not None and (owner is None or view["hub_id"] == owner.hub_id)


class Work:
    """A node handler that records what ran: concurrency, executions, and a gate."""

    def __init__(self, *, service_s: float = 0.0, gated: bool = False) -> None:
        self.service_s = service_s
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.running = 0
        self.max_running = 0
        self.started: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        key = str(ctx.payload["key"]) if isinstance(ctx.payload, dict) else ctx.job_id
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started[key] += 1
        try:
            await self.gate.wait()
            if self.service_s:
                await asyncio.sleep(self.service_s)
            self.completed[key] += 1
            return {"key": key, "node": ctx.node_id}
        finally:
            self.running -= 1


def agent(node_id: str, urls: list[str], work: Work, max_concurrency: int = 4) -> NodeAgent:
    return NodeAgent(
        node_id=node_id, capabilities=caps(max_concurrency), hub_urls=urls, handler=work,
        reconnect_min_s=0.05, reconnect_max_s=0.3,
    )


async def test_job_submitted_on_one_hub_runs_on_a_node_of_the_other(start_hubs: Any) -> None:
    a, b = start_hubs(2)
    work = Work()
    async with agent("n1", [b.url], work) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "n1", owner=b), "hub a to see n1 owned by hub b")
        async with HubClient(a.url) as client:
            handle = await client.submit("en", "zh", payload={"key": "k1"})
            accepted = await asyncio.wait_for(handle.accepted, WAIT_S)
            result = await asyncio.wait_for(handle.result, WAIT_S)
    assert node.hub_id == b.hub_id
    assert accepted.node_id == "n1"
    assert isinstance(result, Result) and result.ok and result.output == {"key": "k1", "node": "n1"}
    assert work.completed == Counter({"k1": 1})
    record = await asyncio.to_thread(a.get_json, f"/v1/jobs/{result.job_id}")
    assert record["status"] == "done" and record["node_id"] == "n1"


async def test_one_request_on_two_hubs_at_the_same_instant_makes_one_job(start_hubs: Any) -> None:
    a, b = start_hubs(2)
    work = Work(gated=True)
    async with agent("n1", [b.url], work) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "n1"), "hub a to see n1")
        async with HubClient(a.url) as on_a, HubClient(b.url) as on_b:
            request_id = f"r-{uuid.uuid4().hex}"
            h_a, h_b = await asyncio.gather(
                on_a.submit("en", "zh", request_id=request_id, payload={"key": "same"}),
                on_b.submit("en", "zh", request_id=request_id, payload={"key": "same"}),
            )
            acc = await asyncio.wait_for(asyncio.gather(h_a.accepted, h_b.accepted), WAIT_S)
            await until(lambda: _true(work.started["same"] == 1), "the node to start the job")
            work.gate.set()
            results = await asyncio.wait_for(asyncio.gather(h_a.result, h_b.result), WAIT_S)
    assert sorted(a.duplicate for a in acc) == [False, True]  # type: ignore[union-attr]
    assert acc[0].job_id == acc[1].job_id  # type: ignore[union-attr]
    assert all(isinstance(r, Result) and r.ok for r in results)
    assert results[0].output == results[1].output  # type: ignore[union-attr]
    assert work.started == Counter({"same": 1}) and node.accepted == 1


async def _true(value: bool) -> bool:
    return value


async def test_a_node_that_moves_hubs_moves_its_ownership(
    start_hubs: Any, redis_server: RedisServer, prefix: str
) -> None:
    a, b = start_hubs(2)
    store = aioredis.Redis.from_url(redis_server.url)
    owner_key = "{" + prefix + "}:owner:n1"
    try:
        work = Work()
        async with agent("n1", [a.url], work) as node:
            await node.wait_registered(WAIT_S)
            first = await store.hgetall(owner_key)
        assert first[b"hub"].decode() == a.hub_id
        async with agent("n1", [b.url], work) as node:
            await node.wait_registered(WAIT_S)
            await until(lambda: sees(a, "n1", owner=b), "hub a to see n1 move to hub b")
            second = await store.hgetall(owner_key)
            async with HubClient(a.url) as client:
                handle = await client.submit("en", "zh", payload={"key": "after-move"})
                result = await asyncio.wait_for(handle.result, WAIT_S)
    finally:
        await store.aclose()
    assert second[b"hub"].decode() == b.hub_id
    assert int(second[b"epoch"]) > int(first[b"epoch"])  # the fencing token grew
    assert isinstance(result, Result) and result.ok and result.node_id == "n1"


async def test_a_node_never_exceeds_its_slots_whichever_hubs_submit(start_hubs: Any) -> None:
    a, b = start_hubs(2)
    work = Work(service_s=0.05)
    async with agent("n1", [b.url], work, max_concurrency=2) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "n1"), "hub a to see n1")
        async with HubClient(a.url) as on_a, HubClient(b.url) as on_b:
            handles = await asyncio.gather(*(
                client.submit("en", "zh", payload={"key": f"{i}"})
                for i in range(12) for client in (on_a, on_b)
            ))
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in handles)), WAIT_S * 2
            )
    assert work.max_running <= 2, work.max_running
    done = [o for o in outcomes if isinstance(o, Result) and o.ok]
    refused = [o for o in outcomes if not (isinstance(o, Result) and o.ok)]
    # Submits beyond the node's two slots are refused (no_node) or fail over to no node;
    # never run beyond capacity, and some do run.
    assert done and all(
        (isinstance(o, Rejected) and o.code == "no_node")
        or (isinstance(o, Result) and o.error is not None and o.error.code == "no_node")
        for o in refused
    )


async def test_sigkill_of_a_hub_with_running_jobs_loses_none(start_hubs: Any) -> None:
    survivor, victim = start_hubs(2)
    work = Work(gated=True)
    agents = [
        agent(f"n{i}", [victim.url, survivor.url] if i < 3 else [survivor.url, victim.url],
              work, max_concurrency=2)
        for i in range(6)
    ]
    for node in agents:
        await node.start()
    try:
        for node in agents:
            await node.wait_registered(WAIT_S)
        await until(
            lambda: _all_seen(survivor, [n.node_id for n in agents]), "the survivor to see all"
        )
        async with HubClient(survivor.url) as client, HubClient(victim.url) as doomed:
            mine = [await client.submit("en", "zh", payload={"key": f"s{i}"}) for i in range(6)]
            theirs = [await doomed.submit("en", "zh", payload={"key": f"v{i}"}) for i in range(4)]
            await asyncio.wait_for(asyncio.gather(*(h.accepted for h in mine + theirs)), WAIT_S)
            await until(lambda: _true(sum(work.started.values()) == 10), "all 10 jobs to start")
            victim.kill()
            # The victim's nodes reconnect to the survivor; their jobs fail over there.
            await until(
                lambda: _true(all(n.hub_id == survivor.hub_id and n.registered.is_set()
                                  for n in agents)),
                "every node to reconnect to the survivor",
            )
            work.gate.set()
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in mine)), WAIT_S)
            # The victim's clients come back to the survivor and resubmit.
            async with HubClient(survivor.url) as back:
                again = [
                    await back.submit("en", "zh", request_id=h.request_id,
                                      payload={"key": f"v{i}"})
                    for i, h in enumerate(theirs)
                ]
                rerun = await asyncio.wait_for(asyncio.gather(*(h.result for h in again)), WAIT_S)
                assert all(count == 1 for count in back.result_counts.values())
            assert all(count == 1 for count in client.result_counts.values())
    finally:
        for node in agents:
            await node.aclose()
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert all(isinstance(r, Result) and r.ok for r in rerun), rerun
    # Nothing completed twice: jobs cut off by the crash were cancelled at their
    # node before they finished, then ran once elsewhere.
    assert set(work.completed) == {f"s{i}" for i in range(6)} | {f"v{i}" for i in range(4)}
    assert max(work.completed.values()) == 1, work.completed


async def _all_seen(hub: HubProcess, node_ids: list[str]) -> bool:
    nodes = await asyncio.to_thread(hub.get_json, "/v1/nodes")
    return {n["node_id"] for n in nodes} >= set(node_ids)


async def test_sigkill_under_continuous_load_gives_every_submit_one_answer(
    start_hubs: Any,
) -> None:
    survivor, victim = start_hubs(2)
    work = Work(service_s=0.01)
    agents = [
        agent(f"n{i}", [victim.url, survivor.url] if i % 2 else [survivor.url, victim.url], work)
        for i in range(6)
    ]
    for node in agents:
        await node.start()
    try:
        for node in agents:
            await node.wait_registered(WAIT_S)
        await until(
            lambda: _all_seen(survivor, [n.node_id for n in agents]), "the survivor to see all"
        )
        async with HubClient(survivor.url) as client:
            handles = []

            async def submit_many(count: int) -> None:
                for i in range(count):
                    handles.append(await client.submit("en", "zh", payload={"key": f"L{i}"}))
                    if i == count // 3:
                        victim.kill()
                    await asyncio.sleep(0.005)  # pacing the load, not waiting for anything

            await submit_many(150)
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in handles)), WAIT_S * 2
            )
            assert all(count == 1 for count in client.result_counts.values())
    finally:
        for node in agents:
            await node.aclose()
    assert len(outcomes) == 150
    failures = Counter(
        (o.code if isinstance(o, Rejected) else (o.error.code if o.error else "?"))
        for o in outcomes if not (isinstance(o, Result) and o.ok)
    )
    # Every submit has one terminal answer; failures, if any, carry a clear code.
    assert set(failures) <= {"no_node", "attempts_exhausted"}, failures
    assert sum(1 for o in outcomes if isinstance(o, Result) and o.ok) >= 100


async def test_redis_restart_fails_submits_fast_then_hubs_resume(start_hubs: Any) -> None:
    own_redis = RedisServer()
    own_redis.start()
    try:
        a, b = start_hubs(2, redis=own_redis)
        work = Work()
        async with agent("n1", [b.url], work) as node:
            await node.wait_registered(WAIT_S)
            await until(lambda: sees(a, "n1"), "hub a to see n1")
            async with HubClient(a.url) as client:
                ok = await client.submit("en", "zh", payload={"key": "before"})
                assert isinstance(await asyncio.wait_for(ok.result, WAIT_S), Result)
                own_redis.stop()
                started = time.monotonic()
                down = await client.submit("en", "zh", payload={"key": "down"})
                refused = await asyncio.wait_for(down.result, WAIT_S)
                fail_fast_s = time.monotonic() - started
                assert isinstance(refused, Rejected) and refused.code == "store_unavailable"
                own_redis.start()  # empty: no persistence, as after a real restart

                async def served() -> bool:
                    handle = await client.submit("en", "zh", payload={"key": "after"})
                    outcome = await asyncio.wait_for(handle.result, WAIT_S)
                    return isinstance(outcome, Result) and outcome.ok

                await until(served, "a submit on hub a to succeed after the restart", 30)
    finally:
        own_redis.close()
    assert fail_fast_s < 5.0, fail_fast_s
    assert work.completed["after"] >= 1


def test_redis_unreachable_at_start_is_one_clear_line_and_exit_2() -> None:
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "hub.app.cli", "serve", "--port", "0", "--deployment-mode",
         "cross_instance", "--redis-url", f"redis://127.0.0.1:{port}/0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cannot reach Redis" in proc.stderr, proc.stderr


async def test_a_killed_fleet_subscription_is_rebuilt(
    start_hubs: Any, redis_server: RedisServer
) -> None:
    a, b = start_hubs(2)
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        killed = await store.client_kill_filter(_type="pubsub")
    finally:
        await store.aclose()
    assert killed >= 2  # both hubs' subscriptions were cut
    work = Work()
    async with agent("late", [b.url], work) as node:
        await node.wait_registered(WAIT_S)
        # Seen again only through a rebuilt subscription or the periodic resync.
        await until(lambda: sees(a, "late", owner=b), "hub a to see a node joining hub b")
        async with HubClient(a.url) as client:
            handle = await client.submit("en", "zh", payload={"key": "k"})
            result = await asyncio.wait_for(handle.result, WAIT_S)
    assert isinstance(result, Result) and result.ok and result.node_id == "late"


async def test_a_hub_started_later_learns_the_fleet_from_the_store(start_hubs: Any) -> None:
    (b,) = start_hubs(1)
    work = Work()
    async with agent("n1", [b.url], work) as node:
        await node.wait_registered(WAIT_S)
        # Outlive the node hash's TTL (node_timeout_ms = 1500 ms) with no change
        # to the node: the owner must keep renewing its node entry.
        await asyncio.sleep(2.0)
        (c,) = start_hubs(1)
        await until(lambda: sees(c, "n1", owner=b), "a new hub to see n1 from the store")
        async with HubClient(c.url) as client:
            handle = await client.submit("en", "zh", payload={"key": "late"})
            result = await asyncio.wait_for(handle.result, WAIT_S)
    assert isinstance(result, Result) and result.ok and result.node_id == "n1", result


async def test_a_hub_that_lost_a_nodes_lease_stops_serving_it(
    start_hubs: Any, redis_server: RedisServer, prefix: str
) -> None:
    a, b = start_hubs(2)
    work = Work()
    async with agent("n1", [a.url], work) as node:
        await node.wait_registered(WAIT_S)
        first_connects = node.connects
        # Hub b takes the node over in the store, as after a partition that cut hub a off
        # (a claim of hub b's current run: its boot token, as hub b itself would claim).
        admin = aioredis.Redis.from_url(redis_server.url)
        try:
            boot = (await admin.hget("{" + prefix + "}:boots", b.hub_id) or b"").decode()
        finally:
            await admin.aclose()
        thief = RedisStore(hub_id=b.hub_id, url=redis_server.url, prefix=prefix, boot=boot)
        await thief.start()
        try:
            await thief.claim_node("n1", 60_000, take_over=True)
        finally:
            await thief.aclose()
        # Hub a notices at its next lease renewal and closes the session (4002); the
        # agent reconnects and gets the node back once hub b's claim is released.
        await until(lambda: _true(node.connects > first_connects), "the agent to be cut off")

        async def not_served_by_a() -> bool:
            return not await sees(a, "n1", owner=a)

        await until(not_served_by_a, "hub a to withdraw n1")
    assert node.disconnects >= 1


async def test_an_inbox_entry_that_cannot_be_handled_goes_to_the_dead_letter_stream(
    start_hubs: Any, redis_server: RedisServer, prefix: str
) -> None:
    (a,) = start_hubs(1)
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.xadd("{" + prefix + "}:inbox:" + a.hub_id, {"e": b"\xc1 not msgpack"})

        async def dead_lettered() -> bool:
            return int(await store.xlen("{" + prefix + "}:deadletter")) == 1

        await until(dead_lettered, "the poison entry to reach the dead-letter stream")
        entry = (await store.xrange("{" + prefix + "}:deadletter"))[0][1]
        pending = await store.xpending("{" + prefix + "}:inbox:" + a.hub_id, "hubs")
    finally:
        await store.aclose()
    assert entry[b"hub"].decode() == a.hub_id and entry[b"e"] == b"\xc1 not msgpack"
    assert pending["pending"] == 0  # acknowledged: it will not come back
    async with agent("n1", [a.url], Work()) as node:  # and the hub keeps serving
        await node.wait_registered(WAIT_S)
        async with HubClient(a.url) as client:
            handle = await client.submit("en", "zh", payload={"key": "after-poison"})
            result = await asyncio.wait_for(handle.result, WAIT_S)
    assert isinstance(result, Result) and result.ok
