"""`Reaper` over a real redis-server: a dead hub's whole inbox is drained once, by one
live hub, and never dropped under the hub draining it."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from hub.cluster.inbox import Inbox
from hub.cluster.reaper import Reaper
from hub.core.envelopes import Envelope, NodeEvent, Watch, decode_envelope, encode
from hub.core.messages import JobResult, Submit
from hub.store.archive import JobArchive
from hub.store.redis import RedisStore
from tests.support.hubtest import wait_until_async
from tests.support.redis_server import RedisServer


class Handler:
    """Records what it handles; the first call waits on `gate` when one is set."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.handled: list[Envelope] = []
        self.started = asyncio.Event()

    async def handle_envelope(self, envelope: Envelope, *, reaped_from: str | None) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        assert reaped_from == "gone"
        self.handled.append(envelope)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[dict[str, RedisStore]]:
    prefix = f"reap-{uuid.uuid4().hex[:10]}"
    made = {
        h: RedisStore(hub_id=h, url=redis_server.url, prefix=prefix) for h in ("gone", "b", "c")
    }
    for store in made.values():
        await store.start()
    yield made
    for store in made.values():
        await store.aclose()


def reaper(store: RedisStore, handler: Handler) -> Reaper:
    inbox = Inbox(
        hub_id=store.hub_id, store=store, archive=JobArchive(store=store, ttl_ms=60_000),
        handler=handler,
    )
    return Reaper(store=store, inbox=inbox)


async def test_two_reapers_one_drains_everything_the_other_waits(
    stores: dict[str, RedisStore],
) -> None:
    gone, b, c = stores["gone"], stores["b"], stores["c"]
    await gone.announce(100)  # known, and dead once this lapses
    submit = Submit("r", "en", "de")

    def envelope(i: int) -> bytes:
        if i % 2:
            return encode(Watch("b", job_id=f"j{i}", client_id="c1", submit=submit))
        result = JobResult(f"j{i}", 1, ok=True)
        return encode(NodeEvent("c", node_id="n", request_id=f"r{i}", message=result))

    envelopes = [envelope(i) for i in range(600)]
    await b.send_many([("gone", e) for e in envelopes])
    await gone.read_inbox(block_ms=100, count=200)  # read before it died, never acknowledged

    async def dead() -> bool:
        return "gone" not in await b.live_hubs()

    await wait_until_async(dead, what="the dead hub's presence to lapse")
    gate = asyncio.Event()
    winner_handler, loser_handler = Handler(gate), Handler()
    winner = asyncio.create_task(reaper(b, winner_handler).reap("gone"))
    await asyncio.wait_for(winner_handler.started.wait(), 5)
    loser = asyncio.create_task(reaper(c, loser_handler).reap("gone"))
    await asyncio.sleep(0.3)  # the loser polls the lock meanwhile; it must neither finish...
    assert not loser.done()
    assert await c.known_hubs() >= {"gone"}  # ...nor drop the hub under the winner
    gate.set()
    await asyncio.wait_for(asyncio.gather(winner, loser), 10)
    assert loser_handler.handled == []
    kinds = Counter(type(e).__name__ for e in winner_handler.handled)
    assert kinds == Counter({"NodeEvent": 300, "Watch": 300})
    # Results first: a resubmit queued behind a result never runs the job again.
    assert all(isinstance(e, NodeEvent) for e in winner_handler.handled[:300])
    assert len({encode(e) for e in winner_handler.handled}) == 600
    assert "gone" not in await c.known_hubs()
    assert [decode_envelope(e) for e in envelopes[:1]] == winner_handler.handled[:1]
