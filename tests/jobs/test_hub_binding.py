"""A job's binding and its first dispatch to another hub, which travel together.

Two in-process hubs in cross-instance mode on the session's redis-server. The
submitting hub's store holds the reply of the bind-and-dispatch script back
until the node's result has reached that hub: they overtook the
binding, and the job must still answer `accepted` first, then one `result`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.core.messages import JobResult
from hub.store.base import Binding
from hub.store.redis import RedisStore
from tests.conftest import FAST, Net
from tests.support.hubtest import wait_until, wait_until_async
from tests.support.redis_server import RedisServer


class HeldReplies(RedisStore):
    """A real Redis store whose bind replies reach the hub only once `release` holds."""

    hub: Hub | None = None

    async def bind_requests(self, bindings: Sequence[Binding]) -> list[str | None]:
        bound = await super().bind_requests(bindings)  # done in Redis: the dispatch is out
        assert self.hub is not None
        service = self.hub.service
        job_ids = [binding.job_id for binding in bindings]

        def early(job_id: str) -> list[Any]:
            return service.home.table.pending[job_id].early or []

        def overtaken() -> bool:
            # Held until the node's result (with or without its accept: the owner
            # merges an accept into a result sent in the same batch) is waiting.
            return all(
                any(isinstance(event.args[1], JobResult) for event in early(job_id))
                for job_id in job_ids
            )

        await wait_until(overtaken, what="the node's accept and result to overtake the binding")
        return bound


async def test_node_events_that_overtake_the_binding_are_replayed_after_it(
    redis_server: RedisServer, net: Net
) -> None:
    prefix = f"binding-{uuid.uuid4().hex[:8]}"
    shared = {**FAST, "deployment_mode": "cross_instance", "redis_url": redis_server.url,
              "redis_prefix": prefix}
    config_a = HubConfig(**{**shared, "hub_id": "bind-a"})
    held = HeldReplies(hub_id="bind-a", url=redis_server.url, prefix=prefix)
    hub_a = Hub(config_a, store=held)
    held.hub = hub_a
    hub_b = Hub(HubConfig(**{**shared, "hub_id": "bind-b"}))
    await hub_a.start()
    await hub_b.start()
    try:
        node = await net.node(hub_b, "far")
        await wait_until(
            lambda: hub_a.fleet.snapshot.get("far") is not None,
            what="hub A to see hub B's node",
        )
        client = await net.client(hub_a)
        await client.submit("overtaken")
        assign = await node.run_one(output="fine")
        accepted = await client.expect("accepted", request_id="overtaken", node_id="far")
        assert accepted["job_id"] == assign["job_id"]
        result = await client.expect("result", request_id="overtaken", ok=True, output="fine")
        assert result["job_id"] == assign["job_id"]
        await client.quiet()  # exactly one result

        async def archived() -> bool:
            record = await hub_a.service.home.job_record(assign["job_id"])
            return record is not None and record.result is not None

        await wait_until_async(archived, what="the job to be archived at its home")
    finally:
        await hub_b.aclose()
        await hub_a.aclose()
