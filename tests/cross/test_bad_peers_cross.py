"""One peer never hurts the others, in cross-instance mode: real hub processes, a real
redis-server, real node agents, and a raw client that stops reading its socket.

Without per-peer limits, such a client froze its hub's inbox loop (the deliveries from
the other hub waited on its socket): the hub answered none of a bystander's
jobs, and jobs ran twice. Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from agent_sim.agent import JobContext, NodeAgent
from agent_sim.client import HubClient
from hub.core.messages import Capabilities, LanguagePair, Result
from tests.cross.test_cross_hub import WAIT_S, sees, until
from tests.support.hubtest import connect_client

pytestmark = pytest.mark.slow

BIG = "x" * 200_000
LIMITS = {"max_outbound_bytes": 262_144, "slow_peer_timeout_ms": 300}


def _caps(src: str, tgt: str, slots: int) -> Capabilities:
    return Capabilities(
        max_concurrency=slots, language_pairs=[LanguagePair(src=src, tgt=tgt)],
        asr_languages=[src], tts_languages=[tgt],
    )


class Runs:
    """A handler answering with a 200 KB output; counts runs per payload key."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        key = str(ctx.payload["key"])
        self.runs[key] += 1
        return {"key": key, "blob": BIG}


async def _metric(hub: Any, line_start: str) -> float:
    text = await asyncio.to_thread(hub.get_text, "/metrics")
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_client_that_stops_reading_hurts_nobody_across_hubs(start_hubs: Any) -> None:
    a, b = start_hubs(2, **LIMITS)
    runs = Runs()
    gate = asyncio.Event()

    async def hold(ctx: JobContext) -> str:
        await gate.wait()  # never released while it matters: its deadline must fire
        return "late"

    big = NodeAgent(node_id="big", capabilities=_caps("en", "zh", 256), hub_urls=[b.url],
                    handler=runs, reconnect_min_s=0.05, reconnect_max_s=0.3)
    holder = NodeAgent(node_id="holder", capabilities=_caps("mm", "nn", 4), hub_urls=[b.url],
                       handler=hold, reconnect_min_s=0.05, reconnect_max_s=0.3)
    async with big, holder:
        await big.wait_registered(WAIT_S)
        await holder.wait_registered(WAIT_S)
        await until(lambda: sees(a, "big"), "hub a to see big")
        await until(lambda: sees(a, "holder"), "hub a to see holder")
        slow = await connect_client(a.url)
        try:
            ids = [f"slow-{i}" for i in range(48)]
            for i, request_id in enumerate(ids):
                await slow.submit(request_id, "en", "zh", payload={"key": f"s{i}"})
            slow.ws.transport.pause_reading()  # 48 x 200 KB of results will pile up
            async with HubClient(a.url) as bystander:
                deadline = await bystander.submit("mm", "nn", timeout_ms=800,
                                                  payload={"key": "held"})
                handles = [
                    await bystander.submit("en", "zh", payload={"key": f"b{i}"})
                    for i in range(60)
                ]
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result for h in handles)), WAIT_S
                )
                timed_out = await asyncio.wait_for(deadline.result, WAIT_S)
            assert all(isinstance(r, Result) and r.ok for r in results)
            assert isinstance(timed_out, Result) and not timed_out.ok
            assert timed_out.error is not None and timed_out.error.code == "timeout"
            await until(
                lambda: _done(runs, [f"s{i}" for i in range(48)]), "the slow client's jobs"
            )
            started = time.monotonic()
            while await _metric(a, 'nodehub_slow_consumers_total{endpoint="client"}') < 1:
                assert time.monotonic() - started < WAIT_S, "hub a never closed the slow client"
                await asyncio.sleep(0.05)
            slow.ws.transport.resume_reading()
            assert await slow.wait_closed(WAIT_S) == 4006
        finally:
            await slow.aclose()
        # Its results were kept: a resubmit on the other hub gets each, and nothing ran
        # twice (the bystander's jobs included).
        async with HubClient(b.url) as again:
            handles = [await again.submit("en", "zh", request_id=r) for r in ids]
            kept = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), WAIT_S)
        assert all(isinstance(r, Result) and r.ok and r.output["blob"] == BIG  # type: ignore[index]
                   for r in kept)
        assert set(runs.runs.values()) == {1} and len(runs.runs) == 48 + 60
        gate.set()


async def _done(runs: Runs, keys: list[str]) -> bool:
    return all(runs.runs[key] == 1 for key in keys)
