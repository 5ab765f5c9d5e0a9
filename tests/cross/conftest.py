"""Fixtures of the cross-instance tests: one real redis-server for the session,
a unique key prefix per test, and real hub processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.hub_process import HubProcess
from tests.support.redis_server import RedisServer


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def start_hubs(
    redis_server: RedisServer, prefix: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., list[HubProcess]]]:
    """`start_hubs(2)` -> two running hub processes sharing the session's Redis."""
    started: list[HubProcess] = []

    def start(count: int, *, redis: RedisServer | None = None, **flags: Any) -> list[HubProcess]:
        server = redis or redis_server
        hubs = [
            HubProcess(f"h{len(started) + i + 1}-{prefix[-4:]}", server.url, prefix, **flags)
            for i in range(count)
        ]
        for hub in hubs:
            hub.start()
            started.append(hub)
        return hubs

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for hub in started:
        hub.stop()
        if failed:
            print(f"--- log of hub {hub.hub_id} ---\n{hub.output()}")
        hub.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
