"""Node leases across a Redis restart (real hub processes, a real redis-server)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.cross.test_cross_hub import WAIT_S, Work, agent, sees, until
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def test_after_a_redis_restart_a_node_moves_hubs_without_waiting_out_its_lease(
    start_hubs: Any, prefix: str
) -> None:
    # Redis restarts empty; hub a claims its node again with a new epoch. When the
    # node then moves to hub b, hub a must release that lease (its new epoch), so hub b
    # takes the node at once instead of refusing it until the lease lapses.
    own = RedisServer()
    own.start()
    try:
        a, b = start_hubs(2, redis=own, node_timeout_ms=5000)
        store = aioredis.Redis.from_url(own.url)
        owner_key = "{" + prefix + "}:owner:n1"
        try:
            async with agent("n1", [a.url], Work()) as node:
                await node.wait_registered(WAIT_S)
                before = int((await store.hgetall(owner_key))[b"epoch"])
                own.restart()
                await store.aclose()
                store = aioredis.Redis.from_url(own.url)

                async def reclaimed() -> bool:
                    owner = await store.hgetall(owner_key)
                    return owner.get(b"hub") == a.hub_id.encode()

                await until(reclaimed, "hub a to renew its claim on n1 after the restart")
                assert int((await store.hgetall(owner_key))[b"epoch"]) != before
            async with agent("n1", [b.url], Work()) as moved:
                # Well within the 5 s lease (a refusal or two may come first: hub a
                # releases the node a moment after the agent left it).
                await moved.wait_registered(3.0)
                await until(lambda: sees(a, "n1", owner=b), "hub a to see n1 on hub b")
        finally:
            await store.aclose()
    finally:
        own.close()
