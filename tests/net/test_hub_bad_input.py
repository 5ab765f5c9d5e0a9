"""Bad input on both endpoints: each gets its `error` or close code, and nothing else
changes. Every test keeps a job of another client in flight on another node (the
`Bystander`) across the abuse and checks that it still completes, progress included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from loguru import logger
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent_sim.client import HubClient
from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.store.base import Binding
from hub.store.memory import MemoryStore
from tests.conftest import FAST, MakeHub, Net
from tests.support.hubtest import (
    TIMEOUT_S,
    Msg,
    TestClient,
    TestNode,
    caps,
    connect_node,
    wait_until,
)

STEADY = caps([("xx", "yy")], max_concurrency=8)


class Bystander:
    """A job on its own node and client, accepted before the abuse, finished after."""

    node: TestNode
    client: TestClient
    assign: Msg

    @classmethod
    async def start(cls, hub: Hub, net: Net) -> Bystander:
        self = cls()
        self.node = await net.node(hub, "steady", STEADY)
        self.client = await net.client(hub)
        await self.client.submitted("steady-job", "xx", "yy")
        self.assign = await self.node.assigned()
        await self.node.accept(self.assign)
        return self

    async def finish(self) -> None:
        await self.node.progress(self.assign, "still here")
        await self.client.expect("progress", data="still here")
        await self.node.result(self.assign, "unharmed")
        result = await self.client.expect("result", request_id="steady-job", ok=True)
        assert result["output"] == "unharmed" and result["attempts"] == 1
        # And a fresh job goes through too.
        await self.client.submitted("steady-2", "xx", "yy")
        await self.node.run_one("fresh")
        await self.client.expect("result", request_id="steady-2", ok=True, output="fresh")


CLIENT_CASES = [
    ("{not json", "bad_message", None),
    ("[1, 2, 3]", "bad_message", None),
    ('"just a string"', "bad_message", None),
    ('{"type": "frobnicate"}', "unknown_type", None),
    ('{"request_id": "r"}', "unknown_type", None),
    ('{"type": "register", "node_id": "n", "capabilities": {"max_concurrency": 1}}',
     "unknown_type", None),
    ('{"type": "submit", "request_id": "r", "tgt_lang": "de"}', "missing_field", "$.src_lang"),
    ('{"type": "submit", "request_id": "r", "src_lang": 5, "tgt_lang": "de"}',
     "invalid_field", "$.src_lang"),
    ('{"type": "submit", "request_id": "", "src_lang": "en", "tgt_lang": "de"}',
     "invalid_field", "$.request_id"),
    ('{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", '
     '"timeout_ms": 0}', "invalid_field", "$.timeout_ms"),
    ('{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", '
     '"pipeline": {"asr": "yes"}}', "invalid_field", "$.pipeline.asr"),
    ('{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", '
     '"preferred_pool": -1}', "invalid_field", "$.preferred_pool"),
    ('{"type": "cancel"}', "missing_field", "$.job_id"),
]


async def test_client_bad_input(hub: Hub, net: Net) -> None:
    bystander = await Bystander.start(hub, net)
    client = await net.client(hub)
    for frame, code, path in CLIENT_CASES:
        await client.send_raw(frame)
        error = await client.expect("error", code=code)
        assert error["message"], frame
        if path is not None:
            assert error["path"] == path, (frame, error)
    # A binary frame of garbage on a JSON session.
    await client.send_raw(b"\xff\x00\x01")
    await client.expect("error", code="bad_message")
    # The abusive session itself still works for well-formed messages.
    await client.submit("late", "xx", "yy")
    accepted = await client.expect("accepted", request_id="late")
    await bystander.node.run_one("late-out")
    await client.expect("result", job_id=accepted["job_id"], ok=True)
    await bystander.finish()


NODE_CASES = [
    ("{not json", "bad_message", None),
    ('{"type": "frobnicate"}', "unknown_type", None),
    ('{"type": "job_accept", "job_id": "j"}', "missing_field", "$.attempt"),
    ('{"type": "job_accept", "job_id": "j", "attempt": "1"}', "invalid_field", "$.attempt"),
    ('{"type": "job_accept", "job_id": "j", "attempt": 0}', "invalid_field", "$.attempt"),
    ('{"type": "job_result", "job_id": "j", "attempt": 1}', "missing_field", "$.ok"),
    ('{"type": "heartbeat", "cpu": 150}', "invalid_field", "$.cpu"),
    ('{"type": "capabilities", "capabilities": {"max_concurrency": 0}}',
     "invalid_field", "$.capabilities.max_concurrency"),
    ('{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de"}',
     "unknown_type", None),
    ('{"type": "job_accept", "job_id": "nobody", "attempt": 1}', "not_your_job", None),
]


async def test_node_bad_input(hub: Hub, net: Net) -> None:
    bystander = await Bystander.start(hub, net)
    node = await net.node(hub, "rude", caps())
    for frame, code, path in NODE_CASES:
        await node.send_raw(frame)
        error = await node.expect("error", code=code)
        if path is not None:
            assert error["path"] == path, (frame, error)
    # Its registration and capabilities are untouched, and it still gets jobs.
    state = hub.fleet.snapshot.get("rude")
    assert state is not None and state.caps.max_concurrency == 4
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="rude")
    await node.run_one()
    await client.expect("result", request_id="r1", ok=True, node_id="rude")
    await bystander.finish()


HUGE = "1" + "0" * 400
"""10**400: a valid JSON integer (msgspec decodes it to a Python int unless bounded)."""


async def test_an_integer_too_large_is_an_invalid_field_not_an_internal_error(
    hub: Hub, net: Net
) -> None:
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        node = await net.node(hub, "big", caps())
        client = await net.client(hub)
        for peer, frame, path in [
            (node, f'{{"type": "heartbeat", "running": {HUGE}}}', "$.running"),
            (node, f'{{"type": "job_accept", "job_id": "j", "attempt": {HUGE}}}', "$.attempt"),
            (node, f'{{"type": "job_result", "job_id": "j", "attempt": -{HUGE}, "ok": true}}',
             "$.attempt"),
            (client, f'{{"type": "audio", "session_id": "s", "seq": {HUGE}, "data": ""}}',
             "$.seq"),
            (client, '{"type": "session_open", "session_id": "s", "src_lang": "en", '
                     f'"tgt_lang": "de", "resume_after": {HUGE}}}', "$.resume_after"),
        ]:
            await peer.send_raw(frame)
            error = await peer.expect("error")
            assert (error["code"], error["path"]) == ("invalid_field", path), error
        # Both sessions go on.
        await client.submitted("after")
        await node.run_one()
        await client.expect("result", request_id="after", ok=True)
    finally:
        logger.remove(sink)
    assert not [r for r in records if r["exception"] is not None or r["level"].no >= 40]


async def test_messages_about_another_nodes_job_or_a_stale_attempt(hub: Hub, net: Net) -> None:
    bystander = await Bystander.start(hub, net)
    a = await net.node(hub, "a")
    b = await net.node(hub, "b")
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="a")
    first = await a.assigned()
    # b claims a's job: refused, nothing changes.
    for message in (
        {"type": "job_accept", "job_id": first["job_id"], "attempt": 1},
        {"type": "job_progress", "job_id": first["job_id"], "attempt": 1, "data": "fake"},
        {"type": "job_result", "job_id": first["job_id"], "attempt": 1, "ok": True},
        {"type": "job_reject", "job_id": first["job_id"], "attempt": 1},
    ):
        await b.send(message)
        error = await b.expect("error", code="not_your_job")
        assert error["job_id"] == first["job_id"]
    # a names the wrong attempt: refused as stale.
    await a.send({"type": "job_result", "job_id": first["job_id"], "attempt": 2, "ok": True})
    await a.expect("error", code="stale_attempt")
    await a.reject(first)  # now attempt 2 goes to b
    second = await b.assigned()
    assert second["attempt"] == 2
    # a, no longer holding the job, and b naming attempt 1 are both refused.
    await a.result(first, "stale")
    await a.expect("error", code="not_your_job")
    await b.result(first, "stale")
    await b.expect("error", code="stale_attempt")
    await client.quiet(0.1)  # bounded: no progress or result leaked to the client
    await b.accept(second)
    await b.result(second, "real")
    result = await client.expect("result", request_id="r1", ok=True, output="real")
    assert result["node_id"] == "b" and result["attempts"] == 2
    await bystander.finish()


@pytest.mark.parametrize("endpoint", ["/v1/node", "/v1/client"])
async def test_oversized_frame_closes_1009(make_hub: MakeHub, net: Net, endpoint: str) -> None:
    hub = await make_hub(max_frame_bytes=4096)
    bystander = await Bystander.start(hub, net)
    if endpoint == "/v1/node":
        peer: TestNode | TestClient = await net.node(hub, "big")
        big = {"type": "job_progress", "job_id": "j", "attempt": 1, "data": "x" * 10_000}
    else:
        peer = await net.client(hub)
        big = {"type": "submit", "request_id": "r", "src_lang": "xx", "tgt_lang": "yy",
               "payload": "x" * 10_000}
    await peer.send(big)
    assert await peer.wait_closed() == 1009
    if endpoint == "/v1/node":
        await _wait_gone(hub, "big")
    await bystander.finish()


async def _wait_gone(hub: Hub, node_id: str) -> None:
    await wait_until(lambda: node_id not in hub.fleet.snapshot, what=f"{node_id} to leave")


async def test_too_many_protocol_errors_close_1008(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_protocol_errors=3)
    bystander = await Bystander.start(hub, net)
    client = await net.client(hub)
    for _ in range(3):
        await client.send_raw("garbage")
    for _ in range(3):
        await client.expect("error", code="bad_message")
    assert await client.wait_closed() == 1008
    # A node that keeps misbehaving is closed too, and leaves the fleet view.
    node = await net.node(hub, "noisy")
    for _ in range(3):
        await node.send({"type": "job_accept", "job_id": "nope", "attempt": 1})
    assert await node.wait_closed() == 1008
    await _wait_gone(hub, "noisy")
    await bystander.finish()


async def test_errors_below_the_limit_keep_the_session(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_protocol_errors=3)
    client = await net.client(hub)
    for _ in range(2):
        await client.send_raw("garbage")
        await client.expect("error", code="bad_message")
    await client.quiet(0.1)  # bounded: the session stays open
    assert not client.closed.is_set()


async def test_msgpack_end_to_end(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "packed", caps(), binary=True)
    assert node.ws.subprotocol == "hub.v1.msgpack"
    assert node.registered is not None and node.registered["node_id"] == "packed"
    async with HubClient(hub.url, binary=True) as client:
        handle = await client.submit("en", "de", payload={"bytes": [1, 2, 3]})
        accepted = await asyncio.wait_for(handle.accepted, TIMEOUT_S)
        assert accepted.node_id == "packed"
        assign = await node.assigned()
        assert assign["payload"] == {"bytes": [1, 2, 3]}
        await node.accept(assign)
        await node.progress(assign, {"partial": True})
        await node.result(assign, {"text": "packed out"})
        result = await asyncio.wait_for(handle.result, TIMEOUT_S)
        assert result.ok and result.output == {"text": "packed out"}  # type: ignore[union-attr]
        assert handle.progress == [{"partial": True}]
    # Frames on the msgpack session really are binary MessagePack.
    await node.send({"type": "frobnicate"})
    error = await node.expect("error", code="unknown_type")
    assert error["message"]


async def test_text_frame_on_a_msgpack_session_is_bad_message(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "packed", caps(), binary=True)
    await node.send_raw(json.dumps({"type": "heartbeat"}))
    await node.expect("error", code="bad_message")
    await node.send_raw(b"\xc1")  # never valid MessagePack
    await node.expect("error", code="bad_message")


async def test_peer_offering_no_subprotocol_gets_json(hub: Hub, net: Net) -> None:
    node = await connect_node(hub.url, "plain", caps(), offer_subprotocol=False)
    net.nodes.append(node)
    assert node.ws.subprotocol is None
    client = await net.client(hub, offer_subprotocol=False)
    assert client.ws.subprotocol is None
    accepted = await client.submitted("r1")
    assign = await node.assigned()
    assert assign["job_id"] == accepted["job_id"]
    await node.accept(assign)
    await node.result(assign, "json")
    await client.expect("result", ok=True, output="json")
    assert all(isinstance(m, dict) for m in client.received)


async def test_unknown_websocket_path_is_refused(hub: Hub) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(hub.url + "/v1/other"):
            pass
    assert info.value.response.status_code == 404



class BrokenBindings(MemoryStore):
    """A store with a bug in binding (not an outage): every bind raises."""

    async def bind_requests(self, bindings: Sequence[Binding]) -> list[str | None]:
        raise RuntimeError("a bug in the store")


async def test_a_submit_the_hub_fails_on_is_still_answered_with_its_request_id(
    net: Net,
) -> None:
    config = HubConfig(**{**FAST, "hub_id": "broken"})
    hub = Hub(config, store=BrokenBindings(hub_id="broken"))
    await hub.start()
    try:
        await net.node(hub, "n1")
        client = await net.client(hub)
        await client.submit("r1")
        rejected = await client.expect("rejected", request_id="r1")
        assert rejected["code"] == "internal_error"
        await client.quiet()
        assert [m for m in client.received if m["type"] == "error"] == []
    finally:
        await hub.aclose()
