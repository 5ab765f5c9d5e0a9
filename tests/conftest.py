"""Fixtures for the hub tests over real sockets (see tests/hubtest.py).

`make_hub(**overrides)` starts a `Hub` on port 0 with short timers (closed at
teardown); `hub` is one with the defaults below. `net` opens node agents and
clients against a hub and closes whatever is left at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from hub.app.hub import Hub
from hub.core.config import HubConfig
from tests.support.hubtest import (
    AutoNode,
    Msg,
    TestClient,
    TestNode,
    caps,
    connect_client,
    connect_node,
)
from tests.support.redis_server import RedisServer

FAST: dict[str, Any] = {
    "port": 0,
    "heartbeat_interval_ms": 50,
    # Generous by default so that a slow CI box never trips a timer by accident;
    # the timer tests set their own short values.
    "node_timeout_ms": 3_000,
    "accept_timeout_ms": 3_000,
    "job_timeout_ms": 10_000,
    "selection_seed": 1,
    # One test process runs hundreds of hubs: no freezing of its heap (the pacer has
    # its own tests, and hub processes started by the tests use it).
    "gc_pacing": False,
}

MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session: a free port, no persistence."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def make_hub() -> AsyncIterator[MakeHub]:
    hubs: list[Hub] = []

    async def factory(**overrides: Any) -> Hub:
        values = {**FAST, "hub_id": f"t{len(hubs) + 1}", **overrides}
        hub = Hub(HubConfig(**values))
        await hub.start()
        hubs.append(hub)
        return hub

    yield factory
    for hub in reversed(hubs):
        await hub.aclose()


@pytest.fixture
async def hub(make_hub: MakeHub) -> Hub:
    return await make_hub()


class Net:
    """Opens raw node agents and clients; closes them all at teardown."""

    def __init__(self) -> None:
        self.nodes: list[TestNode] = []
        self.clients: list[TestClient] = []
        self.autos: list[AutoNode] = []

    async def node(
        self, hub: Hub, node_id: str, capabilities: Msg | None = None, **kwargs: Any
    ) -> TestNode:
        node = await connect_node(hub.url, node_id, capabilities, **kwargs)
        self.nodes.append(node)
        return node

    async def auto_node(self, hub: Hub, node_id: str, capabilities: Msg | None = None) -> AutoNode:
        auto = AutoNode(await self.node(hub, node_id, capabilities))
        self.autos.append(auto)
        return auto

    async def client(self, hub: Hub, **kwargs: Any) -> TestClient:
        client = await connect_client(hub.url, **kwargs)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for auto in self.autos:
            await auto.aclose()
        for peer in [*self.clients, *self.nodes]:
            await peer.aclose()


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = Net()
    yield n
    await n.aclose()


__all__ = ["FAST", "MakeHub", "Net", "caps"]
