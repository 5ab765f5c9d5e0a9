"""Redis that survives its own failover: two hub processes on a Sentinel deployment (a
master, a replica, three sentinels; real processes), a client submitting jobs on hub A
that run on nodes of hub B, and the master SIGKILLed under that load. The hubs follow
the promoted replica; every submit is answered exactly once (a ledger of submits,
answers and duplicates); the time without service is printed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from hub.store.connector import RedisConnector
from tests.support.hub_process import HubProcess
from tests.support.hubtest import (
    AutoNode,
    TestClient,
    connect_client,
    connect_node,
    wait_until,
)
from tests.support.sentinel import SentinelSetup, command

pytestmark = pytest.mark.slow

TIMERS = {
    "heartbeat_interval_ms": 200,
    "node_timeout_ms": 5000,
    "accept_timeout_ms": 1500,
    "job_timeout_ms": 3000,
    "resync_interval_ms": 2000,
}


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    setup = SentinelSetup()
    try:
        setup.start()
        yield setup
    finally:
        setup.close()


class Ledger:
    """Every submit and every answer, by request id, with the wall time of each."""

    def __init__(self) -> None:
        self.submitted: dict[str, float] = {}
        self.answers: dict[str, list[tuple[str, float, dict[str, Any]]]] = {}

    def add(self, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        if request_id is None:
            return
        kind = message["type"]
        self.answers.setdefault(request_id, []).append((kind, time.monotonic(), message))

    def counts(self) -> Counter[str]:
        out: Counter[str] = Counter(submitted=len(self.submitted))
        for request_id in self.submitted:
            kinds = [k for k, _, _ in self.answers.get(request_id, [])]
            first = [k for k in kinds if k in ("accepted", "rejected")]
            out["answered"] += len(first) >= 1
            out["duplicate_answers"] += max(0, len(first) - 1)
            out["accepted"] += kinds.count("accepted")
            out["rejected"] += kinds.count("rejected")
            out["results"] += kinds.count("result")
            out["duplicate_results"] += max(0, kinds.count("result") - 1)
            for k, _, m in self.answers.get(request_id, []):
                if k == "result" and m.get("ok"):
                    out["ok"] += 1
                elif k == "result":
                    out[f"failed:{m.get('error', {}).get('code')}"] += 1
                elif k == "rejected":
                    out[f"rejected:{m.get('code')}"] += 1
        return out

    def done(self) -> bool:
        for request_id in self.submitted:
            kinds = [k for k, _, _ in self.answers.get(request_id, [])]
            if "rejected" in kinds:
                continue
            if "accepted" not in kinds or "result" not in kinds:
                return False
        return True


async def _serve(client: TestClient, ledger: Ledger) -> None:
    while True:
        ledger.add(await client.inbox.get())


async def test_hubs_follow_a_sentinel_failover_and_answer_every_submit(
    sentinel: SentinelSetup,
) -> None:
    prefix = f"s-{uuid.uuid4().hex[:8]}"
    hubs = [HubProcess(f"{name}-{prefix[-4:]}", sentinel.url, prefix, **TIMERS)
            for name in ("a", "b")]
    nodes: list[AutoNode] = []
    client: TestClient | None = None
    reader: asyncio.Task[None] | None = None
    passed = False
    try:
        for hub in hubs:
            hub.start()
        for i in range(3):
            nodes.append(AutoNode(await connect_node(hubs[1].url, f"gpu-{i}")))
        client = await connect_client(hubs[0].url)
        ledger = Ledger()
        reader = asyncio.create_task(_serve(client, ledger))

        async def submit(n: int) -> None:
            request_id = f"r{n}"
            ledger.submitted[request_id] = time.monotonic()
            assert client is not None
            await client.submit(request_id, payload=n)

        # The directory reached hub A: a first job runs across the hubs.
        deadline = time.monotonic() + 20
        n = 0
        while time.monotonic() < deadline:
            await submit(n)
            n += 1
            await asyncio.sleep(0.1)
            if ledger.counts()["ok"]:
                break
        assert ledger.counts()["ok"], "no job ran before the failover"
        # Steady load, then the master dies under it.
        for _ in range(20):
            await submit(n)
            n += 1
            await asyncio.sleep(0.02)
        old_master = sentinel.master.port
        killed_at = time.monotonic()
        sentinel.kill_master()
        first_after: float | None = None
        deadline = killed_at + 60
        while time.monotonic() < deadline:
            await submit(n)
            n += 1
            await asyncio.sleep(0.02)
            if first_after is None:
                for request_id, answers in list(ledger.answers.items()):
                    if ledger.submitted[request_id] > killed_at and any(
                        k == "result" and m.get("ok") for k, _, m in answers
                    ):
                        first_after = min(t for k, t, _ in answers if k == "result")
                        break
            elif time.monotonic() - first_after > 1.0:
                break  # a second of service after the failover
        assert first_after is not None, f"no job ran after the failover\n{sentinel.logs()}"
        outage_s = first_after - killed_at
        # Every submit is answered: wait for the stragglers (attempts that failed over).
        with contextlib.suppress(AssertionError):
            await wait_until(ledger.done, 30, "every submit's answers")
        counts = ledger.counts()
        print(f"\nsentinel failover: {dict(counts)}; no service for {outage_s:.2f} s "
              f"(SIGKILL of the master to the first job done after it)")
        assert sentinel.master_port() == sentinel.replica.port != old_master
        assert b"role:master" in command(sentinel.replica.port, "INFO", "replication")
        assert counts["answered"] == counts["submitted"], counts
        assert counts["duplicate_answers"] == 0 and counts["duplicate_results"] == 0, counts
        assert counts["results"] == counts["accepted"], counts
        assert counts["ok"] > 0
        # The hubs' connections moved to the promoted replica.
        clients = command(sentinel.replica.port, "CLIENT", "LIST", timeout=2.0)
        assert clients.count(b"cmd=") >= 4, clients  # pools and pipes of both hubs
        passed = True
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for auto in nodes:
            await auto.aclose()
            await auto.node.aclose()
        if client is not None:
            await client.aclose()
        for hub in hubs:
            hub.stop()
            if not passed:
                print(f"--- hub {hub.hub_id}\n{hub.output()}")
            hub.close()
        if not passed:
            print(sentinel.logs())


async def test_the_sentinel_pool_waits_for_a_connection_and_follows_the_master(
    sentinel: SentinelSetup,
) -> None:
    """redis-py's pool for a Sentinel URL (presence, pub/sub, resyncs): a blocking
    checkout (a second command waits for the one connection instead of failing with
    "too many connections"), on connections that find the master through the
    sentinels, again after a failover."""
    connector = RedisConnector(sentinel.url)
    pool = connector.pool(max_connections=1, timeout=10, socket_timeout=2)
    redis = aioredis.Redis(connection_pool=pool)
    try:
        # One connection, held by a BLPOP for 0.3 s: the SET waits for it.
        popped, stored = await asyncio.gather(
            redis.blpop(["nothing-here"], timeout=0.3), redis.set("k", "before"),
        )
        assert popped is None and stored is True
        assert await redis.get("k") == b"before"
        assert int((await redis.info("server"))["tcp_port"]) == sentinel.master.port

        sentinel.kill_master()
        await asyncio.to_thread(sentinel.wait_promoted)
        deadline = time.monotonic() + 20
        while True:  # the connection to the dead master fails once, then reconnects
            try:
                await redis.set("k", "after")
                break
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                assert time.monotonic() < deadline, "the pool never reached the new master"
                await asyncio.sleep(0.1)
        assert int((await redis.info("server"))["tcp_port"]) == sentinel.replica.port
        assert await redis.get("k") == b"after"
    finally:
        await redis.aclose()
        await pool.aclose()
        await connector.aclose()
