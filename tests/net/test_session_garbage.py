"""A session that ends leaves no reference cycle behind: its connection, link, session and
registration (with capabilities of up to `max_capability_entries`) are freed by
reference counting at once. A cycle would wait for a full collection, and with the GC
pacer (hub/runtime/gc_pacer.py) one that was frozen waits for the next thaw, minutes
later: register churn grew a hub by ~6 MB/s that way.

Run on uvloop, as `hub serve` does, with the collector off: whatever is left of the
sessions is what only a collection would free. Per scenario, once its sessions ended:
no object of the session types is left (connection, websockets' protocol, link,
session, registration), nor any other object of a hub-side type (the hub's modules and
websockets' server side; the test's own peers are websockets clients in this process,
whose cycles are not the hub's). Counted by type, not found by a collection: a cycle
through a suspended generator (websockets' parser) is freed by the generator's
finalizer, which `gc.collect()` neither counts nor shows in `gc.garbage`."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import uvloop
from websockets.asyncio.server import ServerConnection
from websockets.server import ServerProtocol

from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.jobs.owner.registry import RegisteredNode
from hub.net.sessions import ClientSession, NodeSession
from hub.net.wslink import CLOSE_GRACE_S, WsLink
from tests.conftest import FAST
from tests.support.hubtest import (
    TestNode,
    caps,
    connect_client,
    connect_node,
    http_get,
    wait_until,
)

CYCLES = 12
SESSION_TYPES = (
    ServerConnection, ServerProtocol, WsLink, NodeSession, ClientSession, RegisteredNode
)
HUB_SIDE = ("hub.", "websockets.server", "websockets.asyncio.server")
"""Modules whose objects in a cycle would be the hub's (the clients' are
websockets.client and websockets.asyncio.client)."""
TIME_BOUND = frozenset({"hub.core.recent_jobs._Bucket"})
"""Objects that come with time, not with sessions: the console's 2 s buckets of recent
jobs (at most 5 minutes of them); a scenario that spans a bucket's edge makes one."""
BIG_CAPS = caps(
    [(f"s{i}", f"t{i}") for i in range(64)], features=[f"f{i}" for i in range(64)]
)


def _alive() -> Counter[str]:
    """Objects of the session types the collector tracks (frozen ones are not listed:
    the pacer is off here)."""
    return Counter(
        kind.__name__ for kind in map(type, gc.get_objects()) if issubclass(kind, SESSION_TYPES)
    )


def _hub_side() -> Counter[str]:
    """Every object of a hub-side type the collector tracks."""
    return Counter(
        f"{kind.__module__}.{kind.__qualname__}"
        for kind in map(type, gc.get_objects())
        if str(getattr(kind, "__module__", "")).startswith(HUB_SIDE)
        and f"{kind.__module__}.{kind.__qualname__}" not in TIME_BOUND
    )


async def _settled(hub: Hub, nodes: int) -> None:
    await wait_until(
        lambda: hub.server.open_sessions == nodes
        and len(hub.service.owner.registry.registered) == nodes
        and not hub.service.home.clients,
        what=f"the sessions to end ({hub.server.open_sessions} open, "
        f"{len(hub.service.owner.registry.registered)} nodes, "
        f"{len(hub.service.home.clients)} clients)",
    )
    for _ in range(10):  # callbacks the last closes scheduled
        await asyncio.sleep(0.01)


async def _closed(hub: Hub, k: int) -> None:
    node = await connect_node(hub.url, f"closed-{k}", BIG_CAPS, heartbeat_s=None)
    await node.aclose()


async def _dropped(hub: Hub, k: int) -> None:
    """The peer goes without a closing handshake (the hub's parser ends on EOF)."""
    node = await connect_node(hub.url, f"dropped-{k}", BIG_CAPS, heartbeat_s=None)
    node.abort()
    await node.aclose()


async def _refused(hub: Hub, k: int) -> None:
    """The hub closes it: `node_id_conflict` with the node that holds the id."""
    node = await connect_node(hub.url, "holder", BIG_CAPS, heartbeat_s=None, register=False)
    await node.send({"type": "register", "node_id": "holder", "capabilities": BIG_CAPS})
    assert await node.wait_closed() == 4001
    await node.aclose()


async def _client(hub: Hub, k: int) -> None:
    client = await connect_client(hub.url)
    await client.submit(f"r{k}", "xx", "yy")  # no node serves it: rejected
    await client.expect("rejected")
    await client.aclose()


async def _cut_handshake(hub: Hub, k: int) -> None:
    """A WebSocket handshake cut short: websockets keeps the parser's exception."""
    _, writer = await asyncio.open_connection(hub.config.host, hub.port)
    writer.write(b"GET /v1/node HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    writer.transport.abort()
    await asyncio.sleep(0.01)


async def _http(hub: Hub, k: int) -> None:
    status, _, _ = await http_get(hub.http_url, "/v1/stats")
    assert status == 200


SCENARIOS: dict[str, Callable[[Hub, int], Awaitable[None]]] = {
    "closed by the node": _closed,
    "dropped by the node": _dropped,
    "closed by the hub": _refused,
    "client": _client,
    "cut handshake": _cut_handshake,
    "http request": _http,
}


async def _left_behind() -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    left: dict[str, Counter[str]] = {}
    garbage: dict[str, Counter[str]] = {}
    hub = Hub(HubConfig(**{**FAST, "hub_id": "garbage"}))
    await hub.start()
    holder: TestNode | None = None
    try:
        holder = await connect_node(hub.url, "holder", BIG_CAPS)  # heartbeats: it stays
        for name, scenario in SCENARIOS.items():
            await scenario(hub, -1)  # anything made once (caches, codecs) is made now
            await _settled(hub, nodes=1)
            gc.collect()
            gc.disable()
            try:
                before = _alive()
                hub_before = _hub_side()
                for k in range(CYCLES):
                    await scenario(hub, k)
                await _settled(hub, nodes=1)
                # A connection the hub closed is held until the peer completes the
                # closing handshake or the grace is over (`WsLink.start_close`).
                deadline = time.monotonic() + CLOSE_GRACE_S + 2
                for _ in range(10_000):
                    left[name], garbage[name] = _alive() - before, _hub_side() - hub_before
                    if not (left[name] or garbage[name]) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
            finally:
                gc.enable()
    finally:
        if holder is not None:
            await holder.aclose()
        await hub.aclose()
    return left, garbage


def test_ended_sessions_are_freed_without_a_collection() -> None:
    left, garbage = uvloop.run(_left_behind())
    assert left == {name: Counter() for name in SCENARIOS}
    assert garbage == {name: Counter() for name in SCENARIOS}
