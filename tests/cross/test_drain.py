"""Stopping a hub loses no work: SIGTERM drains (real hub processes, a real redis-server,
agent SDK nodes and clients)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest

from agent_sim.client import HubClient
from hub.core.messages import Rejected, Result
from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until
from tests.support.hub_process import HubProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def status(hub: HubProcess, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(hub.get_status, path)


async def test_sigterm_lets_running_jobs_finish_and_sends_the_rest_elsewhere(
    start_hubs: Any,
) -> None:
    draining, other = start_hubs(2)
    work = Work(service_s=1.5)
    busy = agent("busy", [draining.url, other.url], work)
    idle = agent("idle", [draining.url, other.url], work)
    async with busy, idle:
        await busy.wait_registered(WAIT_S)
        await idle.wait_registered(WAIT_S)
        async with HubClient(draining.url) as client:
            running = [
                await client.submit("en", "zh", payload={"key": f"j{i}"}, preferred_node_id="busy")
                for i in range(4)
            ]
            await until(lambda: _true(busy.running == 4), "four jobs to run on one node")
            draining.signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            # At once: not ready (load balancers move away), but alive.
            await until(
                lambda: _is(status(draining, "/readyz"), 503), "/readyz to answer 503", 1.0
            )
            assert (await status(draining, "/livez"))[0] == 200
            code, body = await status(draining, "/healthz")
            assert code == 503 and body["status"] == "draining" and body["reason"]
            refused = await client.submit("en", "zh", payload={"key": "late"})
            late = await asyncio.wait_for(refused.result, WAIT_S)
            # The idle node leaves at once for the other hub, which serves it.
            await until(lambda: sees(other, "idle", owner=other), "the idle node to move", 3.0)
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in running)), WAIT_S
            )
        await until(lambda: _true(draining.exited()), "the hub to exit once drained", 5.0)
        exited_after_s = time.monotonic() - stopped_at
        await until(lambda: sees(other, "busy", owner=other), "the busy node to move too")
    assert isinstance(late, Rejected) and late.code == "hub_shutdown", late
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert work.completed == Counter({f"j{i}": 1 for i in range(4)})
    assert exited_after_s < 5.0, exited_after_s  # not the 30 s drain_timeout_ms


async def test_drain_timeout_then_the_rest_fails_and_a_second_signal_stops_at_once(
    start_hubs: Any,
) -> None:
    patient, hasty = start_hubs(2, drain_timeout_ms=1000)
    work = Work(gated=True)
    async with agent("n1", [patient.url], work) as n1, agent("n2", [hasty.url], work) as n2:
        await n1.wait_registered(WAIT_S)
        await n2.wait_registered(WAIT_S)
        async with HubClient(patient.url) as on_patient, HubClient(hasty.url) as on_hasty:
            slow = await on_patient.submit("en", "zh", preferred_node_id="n1")
            stuck = await on_hasty.submit("en", "zh", preferred_node_id="n2")
            await until(lambda: _true(n1.running == 1 and n2.running == 1), "both to run")
            started = time.monotonic()
            patient.signal(signal.SIGTERM)
            hasty.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            hasty.signal(signal.SIGTERM)  # a second signal: stop now
            stopped = await asyncio.wait_for(stuck.result, WAIT_S)
            hasty_s = time.monotonic() - started
            timed_out = await asyncio.wait_for(slow.result, WAIT_S)
            patient_s = time.monotonic() - started
    for result in (stopped, timed_out):
        assert isinstance(result, Result) and not result.ok, result
        assert result.error is not None and result.error.code == "hub_shutdown"
    assert hasty_s < 0.9, hasty_s  # well before drain_timeout_ms
    assert 0.9 < patient_s < 4.0, patient_s  # after drain_timeout_ms


async def test_a_drain_hands_its_unfinished_jobs_on_and_resubmits_run_them(
    start_hubs: Any,
) -> None:
    """Two 1-slot nodes on the draining hub run two jobs that outlast `drain_timeout_ms`,
    three more wait. Each ends `hub_shutdown` for its client; resubmitted on the other
    hub with the same request ids (half a second later, and again later still) each
    runs to its result, every one exactly once to completion."""
    draining, other = start_hubs(2, drain_timeout_ms=500)
    work = Work(gated=True)
    n1 = agent("n1", [draining.url, other.url], work, max_concurrency=1)
    n2 = agent("n2", [draining.url, other.url], work, max_concurrency=1)
    async with n1, n2:
        await n1.wait_registered(WAIT_S)
        await n2.wait_registered(WAIT_S)
        await until(lambda: sees(other, "n1"), "the other hub to see the fleet")
        keys = [f"d{i}" for i in range(5)]
        async with HubClient(draining.url, resubmit=False) as first:
            handles = [
                await first.submit("en", "zh", request_id=key, payload={"key": key})
                for key in keys
            ]
            await until(lambda: _true(n1.running + n2.running == 2), "two to run")
            draining.signal(signal.SIGTERM)
            firsts = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), WAIT_S)
        assert all(
            isinstance(r, Result) and r.error is not None and r.error.code == "hub_shutdown"
            for r in firsts
        ), firsts
        await until(lambda: _true(draining.exited()), "the drained hub to exit", 5.0)
        await asyncio.sleep(0.5)  # as an operator's client would: a moment later
        work.gate.set()
        async with HubClient(other.url) as again:
            resubmits = [
                await again.submit("en", "zh", request_id=key, payload={"key": key})
                for key in keys
            ]
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result for h in resubmits)), 3 * WAIT_S
            )
            # Later still, the same request ids answer from what ran: no new run.
            later = [
                await again.submit("en", "zh", request_id=key, payload={"key": key})
                for key in keys
            ]
            repeats = await asyncio.wait_for(asyncio.gather(*(h.result for h in later)), WAIT_S)
    assert all(isinstance(r, Result) and r.ok for r in results), results
    assert all(isinstance(r, Result) and r.ok for r in repeats), repeats
    assert {r.job_id for r in results} == {r.job_id for r in repeats}
    assert work.completed == Counter({key: 1 for key in keys}), work.completed


async def test_readyz_says_unavailable_while_redis_is_down(start_hubs: Any) -> None:
    own = RedisServer()
    own.start()
    try:
        (hub,) = start_hubs(1, redis=own)
        assert await status(hub, "/readyz") == (200, {"status": "ok", "hub_id": hub.hub_id})
        own.stop()
        await until(lambda: _is(status(hub, "/readyz"), 503), "/readyz to answer 503", 5.0)
        code, body = await status(hub, "/healthz")
        assert code == 503 and body["status"] == "unavailable" and "Redis" in body["reason"]
        assert (await status(hub, "/livez"))[0] == 200
        own.start()
        await until(lambda: _is(status(hub, "/readyz"), 200), "/readyz to recover", 10.0)
    finally:
        own.close()


async def _is(answer: Any, code: int) -> bool:
    return (await answer)[0] == code


async def _true(value: bool) -> bool:
    return value
