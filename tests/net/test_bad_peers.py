"""One peer never hurts the others (protocol v1.1, "Limits").

Real hubs on real sockets. Each test has a bad peer (a client or node that
stops reading, floods, nests, sends what a JSON peer cannot receive, holds
too much, or opens too many sessions) and checks both the clear answer the
bad peer gets and that others lose nothing: their jobs complete, deadlines
keep firing, `/healthz` answers.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.core.messages import MAX_DEPTH
from hub.store.memory import MemoryStore
from tests.conftest import FAST, MakeHub, Net
from tests.support.hubtest import (
    TIMEOUT_S,
    Msg,
    Peer,
    TestClient,
    caps,
    connect_node,
    http_get,
    wait_until,
)

BIG = "x" * 200_000
"""A 200 KB payload: echoed back by `AutoNode`, so every result is as big."""
SLOW = {"max_outbound_bytes": 256 * 1024, "slow_peer_timeout_ms": 300}
STEADY = caps([("xx", "yy")], max_concurrency=8)
MUTE = caps([("mm", "nn")], max_concurrency=8)


def stop_reading(peer: Peer) -> None:
    """The peer's process stops reading its socket (its kernel buffers fill up)."""
    peer.ws.transport.pause_reading()


def resume_reading(peer: Peer) -> None:
    peer.ws.transport.resume_reading()


async def results(client: TestClient, request_ids: set[str]) -> dict[str, Msg]:
    """The `result` of each of `request_ids` (skipping everything else)."""
    got: dict[str, Msg] = {}
    while len(got) < len(request_ids):
        message = await client.recv()
        if message["type"] == "result" and message["request_id"] in request_ids:
            got[message["request_id"]] = message
        assert message["type"] in ("accepted", "result", "progress"), message
    return got


async def bystander_jobs(client: TestClient, count: int, prefix: str) -> None:
    """`count` jobs on the steady node, 8 at a time; every one must succeed."""
    sem = asyncio.Semaphore(8)
    pending: dict[str, asyncio.Future[Msg]] = {}
    loop = asyncio.get_running_loop()

    async def reader() -> None:
        while True:
            message = await client.recv(TIMEOUT_S * 2)
            if message["type"] in ("result", "rejected", "error"):
                future = pending.get(message.get("request_id", ""))
                assert future is not None, message
                future.set_result(message)

    async def one(i: int) -> None:
        async with sem:
            request_id = f"{prefix}-{i}"
            pending[request_id] = loop.create_future()
            await client.submit(request_id, "xx", "yy", payload=i)
            result = await asyncio.wait_for(pending[request_id], TIMEOUT_S * 2)
            assert result["type"] == "result" and result["ok"], result
            assert result["output"] == {"echo": i}

    read = asyncio.create_task(reader())
    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        read.cancel()


# --- a peer that stops reading ---------------------------------------------------------


async def test_a_client_that_stops_reading_hurts_nobody(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(**SLOW)
    big = await net.auto_node(hub, "big", caps(max_concurrency=64))
    await net.auto_node(hub, "steady", STEADY)
    mute = await net.node(hub, "mute", MUTE)  # holds its job: the deadline must fire
    bystander = await net.client(hub)
    watcher = await net.client(hub)
    slow = await net.client(hub)

    ids = [f"slow-{i}" for i in range(48)]
    for request_id in ids:  # 48 x 200 KB of results, far more than the kernel buffers
        await slow.submit(request_id, payload=BIG)
    stop_reading(slow)
    await watcher.submitted("deadline", "mm", "nn", timeout_ms=400)
    assert (await mute.assigned())["payload"] is None

    # The bystander's 100 jobs all complete while the slow client's results pile up,
    # and the overall deadline of the job its mute node holds fires on time.
    await bystander_jobs(bystander, 100, "by")
    await wait_until(lambda: len(big.done) == len(ids), what="the slow client's jobs to run")
    timed_out = await watcher.expect("result", request_id="deadline", ok=False)
    assert timed_out["error"]["code"] == "timeout"
    await wait_until(
        lambda: hub.metrics.slow_consumers.get("client") == 1, what="the 4006 close"
    )
    # Its queue is dropped and its session is over: it sees 4006 once it reads again.
    resume_reading(slow)
    assert await slow.wait_closed() == 4006

    # Its jobs ran once each, and a resubmit of any of them gets the real result.
    assert len(set(big.done)) == len(ids) == len(big.done)
    again = await net.client(hub)
    for request_id in ids:
        await again.submit(request_id)
    got = await results(again, set(ids))
    assert all(r["ok"] and r["output"] == {"echo": BIG} for r in got.values())
    await again.quiet(0.1)
    assert len(big.done) == len(ids)  # nothing ran a second time


async def test_a_node_that_never_reads_is_closed_and_its_jobs_fail_over(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(**SLOW, accept_timeout_ms=10_000)
    good = await net.auto_node(hub, "good", caps(max_concurrency=64))
    deaf = await net.node(hub, "deaf", caps(max_concurrency=64))
    stop_reading(deaf)  # it keeps sending heartbeats: it is not silent, only deaf
    client = await net.client(hub)
    ids = [f"r{i}" for i in range(40)]
    for request_id in ids:
        await client.submit(request_id, payload=BIG, preferred_node_id="deaf")
    await wait_until(lambda: hub.metrics.slow_consumers.get("node") == 1, what="4006")
    await wait_until(lambda: "deaf" not in hub.fleet.snapshot, what="deaf to be unregistered")
    resume_reading(deaf)
    assert await deaf.wait_closed() == 4006
    # Its attempts fail over (long before the 10 s accept timeout) to a node that reads.
    got = await results(client, set(ids))
    assert all(r["ok"] and r["node_id"] == "good" and r["attempts"] == 2 for r in got.values())
    assert len(good.done) == len(ids)
    record = await hub.service.home.job_record(got["r0"]["job_id"])
    assert record is not None and record.attempts[0].outcome == "node_lost"
    # No ghost session: the same node id registers again at once.
    again = await net.node(hub, "deaf", caps())
    assert again.registered is not None and again.registered["node_id"] == "deaf"


class GatedStore(MemoryStore):
    """A real memory store whose node claims wait for a gate (a slow store)."""

    def __init__(self, hub_id: str) -> None:
        super().__init__(hub_id=hub_id)
        self.gate = asyncio.Event()
        self.claiming = asyncio.Event()
        self.released: list[str] = []

    async def claim_node(self, node_id: str, ttl_ms: int, *, take_over: bool = False) -> int:
        self.claiming.set()
        await self.gate.wait()
        return await super().claim_node(node_id, ttl_ms, take_over=take_over)

    async def release_node(self, node_id: str, epoch: int) -> None:
        self.released.append(node_id)
        await super().release_node(node_id, epoch)


async def test_a_node_gone_while_its_register_is_handled_leaves_no_ghost(net: Net) -> None:
    store = GatedStore("ghost")
    async with Hub(HubConfig(**{**FAST, "hub_id": "ghost"}), store=store) as hub:
        node = await connect_node(hub.url, "n1", register=False, heartbeat_s=None)
        net.nodes.append(node)
        await node.send({"type": "register", "node_id": "n1", "capabilities": caps()})
        await asyncio.wait_for(store.claiming.wait(), TIMEOUT_S)
        node.abort()  # the connection ends while the hub waits on the store
        await wait_until(lambda: hub.server.open_sessions == 0, what="the connection to end")
        store.gate.set()
        # The registration completes, finds its session over, and undoes itself.
        await wait_until(lambda: store.released == ["n1"], what="n1's ownership released")
        assert "n1" not in hub.service.registry.registered
        assert "n1" not in hub.fleet.snapshot
        fresh = await connect_node(hub.url, "n1", caps())
        net.nodes.append(fresh)
        assert fresh.registered is not None


# --- limits -------------------------------------------------------------------------------


async def test_max_jobs_per_session(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_jobs_per_session=3)
    node = await net.node(hub, "holder", caps(max_concurrency=16))
    client = await net.client(hub)
    assigns = []
    for i in range(3):
        await client.submitted(f"r{i}")
        assigns.append(await node.assigned())
    await client.submit("r3")
    rejected = await client.expect("rejected", request_id="r3", code="overloaded")
    assert "max_jobs_per_session" in rejected["message"]
    # Another session is not affected.
    other = await net.client(hub)
    await other.submitted("o1")
    await node.run_one()
    await other.expect("result", request_id="o1", ok=True)
    # A finished job frees its place; r3 was never bound, so it is a new job now.
    await node.accept(assigns[0])
    await node.result(assigns[0], "done")
    await client.expect("result", request_id="r0", ok=True)
    accepted = await client.submitted("r3")
    assert accepted["duplicate"] is False
    assert hub.metrics.submits.get("overloaded") == 1


async def test_max_connections_answers_503_and_healthz_keeps_answering(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(max_connections=3)
    await net.node(hub, "n1")
    first = await net.client(hub)
    await net.client(hub)
    await wait_until(lambda: hub.server.open_sessions == 3, what="3 sessions")
    for path in ("/v1/client", "/v1/node"):
        with pytest.raises(InvalidStatus) as info:
            async with connect(hub.url + path):
                pass
        response = info.value.response
        assert response.status_code == 503
        assert json.loads(response.body)["error"] == "overloaded"
    status, _, body = await http_get(hub.http_url, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert hub.metrics.refused_connections.get() == 2
    # A session that ends frees its place.
    await first.aclose()
    await wait_until(lambda: hub.server.open_sessions == 2, what="the session to end")
    client = await net.client(hub)
    await client.submitted("r1")


def _capabilities(entries: int) -> Msg:
    """A capabilities object with `entries` entries over its four lists."""
    quarter, rest = divmod(entries, 4)
    return {
        "max_concurrency": 1,
        "language_pairs": [{"src": f"s{i}", "tgt": f"t{i}"} for i in range(quarter + rest)],
        "asr_languages": [f"a{i}" for i in range(quarter)],
        "tts_languages": [f"b{i}" for i in range(quarter)],
        "features": [f"f{i}" for i in range(quarter)],
    }


async def test_max_capability_entries(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_capability_entries=40)
    node = await net.node(hub, "n1", register=False, heartbeat_s=None)
    reply = await node.register(_capabilities(41))
    assert reply["type"] == "error" and reply["code"] == "invalid_field"
    assert reply["path"] == "$.capabilities" and "max_capability_entries" in reply["message"]
    assert (await node.register(_capabilities(40)))["type"] == "registered"
    await node.send({"type": "capabilities", "capabilities": _capabilities(41)})
    error = await node.expect("error", code="invalid_field")
    assert error["path"] == "$.capabilities"
    state = hub.fleet.snapshot.get("n1")
    assert state is not None and len(state.caps.features) == 10  # unchanged


async def test_an_oversized_register_is_refused_while_healthz_answers(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub()
    client = await net.client(hub)
    await net.auto_node(hub, "steady", STEADY)
    huge = _capabilities(4 * 4096)  # ~255 KiB: every list at msgspec's own maximum
    frame = json.dumps({"type": "register", "node_id": "huge", "capabilities": huge})
    node = await net.node(hub, "huge", register=False, heartbeat_s=None)
    slowest = 0.0
    done = asyncio.Event()

    async def probe() -> int:
        nonlocal slowest
        answers = 0
        while not done.is_set():  # not cancelled mid-request: it ends between two
            started = time.monotonic()
            status, _, _ = await http_get(hub.http_url, "/healthz")
            assert status == 200
            slowest = max(slowest, time.monotonic() - started)
            answers += 1
            await asyncio.sleep(0.005)
        return answers

    probing = asyncio.create_task(probe())
    try:
        for _ in range(10):
            await node.send_raw(frame)
            error = await node.expect("error", code="invalid_field")
            assert error["path"] == "$.capabilities"
        await client.submitted("r1", "xx", "yy")
        await client.expect("result", request_id="r1", ok=True)
    finally:
        done.set()
        answers = await probing
    assert answers > 0
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s"
    assert "huge" not in hub.fleet.snapshot


async def test_evicted_results_answer_result_expired_and_never_run_twice(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(max_archive_bytes=200_000)
    node = await net.auto_node(hub, "n1", caps(max_concurrency=16))
    client = await net.client(hub)
    payload = "p" * 20_000  # ~20 KB records (the payload is echoed as the output)
    for i in range(12):
        await client.submitted(f"r{i}", payload=payload)
        await client.expect("result", request_id=f"r{i}", ok=True)
    first_job = (await hub.service.home.job_record(node.done[0]))
    assert first_job is not None and first_job.result is not None
    assert first_job.result.error is not None
    assert first_job.result.error.code == "result_expired"

    await client.submit("r0")  # evicted long ago
    accepted = await client.expect("accepted", request_id="r0", duplicate=True)
    expired = await client.expect("result", request_id="r0", ok=False)
    assert expired["job_id"] == accepted["job_id"] == node.done[0]
    assert expired["error"]["code"] == "result_expired"
    await client.submit("r11")  # the newest is still kept whole
    await client.expect("accepted", request_id="r11", duplicate=True)
    kept = await client.expect("result", request_id="r11", ok=True)
    assert kept["output"] == {"echo": payload}
    await client.quiet(0.1)
    assert len(node.done) == 12  # neither ran again
    status, _, body = await http_get(hub.http_url, f"/v1/jobs/{node.done[0]}")
    assert status == 200 and json.loads(body)["result"]["error"]["code"] == "result_expired"


# --- ingress: what a JSON peer could not receive, nesting, refusals in a window --------


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


async def test_nesting_past_the_limit_is_invalid_field_and_counted(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(max_protocol_errors=3)
    client = await net.client(hub)
    node = await net.node(hub, "n1")
    # The message is level 1, the payload level 2: 63 nested lists fit, 64 do not.
    await client.submitted("fits", payload=_nested(MAX_DEPTH - 1))
    assign = await node.assigned()
    assert assign["payload"] == _nested(MAX_DEPTH - 1)
    await node.accept(assign)
    await node.result(assign, "fine")
    await client.expect("result", request_id="fits", ok=True)
    await client.submit("deep", payload=_nested(MAX_DEPTH))
    error = await client.expect("error", code="invalid_field")
    assert error["path"].startswith("$.payload") and "64" in error["message"]
    # Far past it (past msgspec's own recursion limit too): the same error, counted.
    for _ in range(2):
        await client.send_raw(
            '{"type":"submit","request_id":"r","src_lang":"en","tgt_lang":"de","payload":'
            + "[" * 5000 + "]" * 5000 + "}"
        )
        await client.expect("error", code="invalid_field")
    assert await client.wait_closed() == 1008
    assert hub.metrics.protocol_errors.get("client", "internal_error") == 0


UNFIT = [
    (msgspec.msgpack.Ext(7, b"\x01"), "$.payload", "extension type"),
    ({1: "one"}, "$.payload", "not a string"),
    ({"t": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}, "$.payload.t", "extension"),
    ([1.0, float("nan")], "$.payload[1]", "non-finite"),
]


async def test_bytes_cross_encodings_as_base64_for_json_peers(hub: Hub, net: Net) -> None:
    """Binary data: a MessagePack client's bytes reach a JSON node as base64 text and a
    MessagePack node as bytes; a MessagePack node's bytes output reaches a JSON client
    as base64 text."""
    json_node = await net.node(hub, "json-node", caps([("en", "de")]))
    packed_node = await net.node(hub, "packed-node", caps([("en", "fr")]), binary=True)
    packed = await net.client(hub, binary=True)
    await packed.submitted("to-json", payload={"audio": b"\x00\x01\xff"})
    assign = await json_node.assigned()
    assert assign["payload"] == {"audio": "AAH/"}
    await packed.submitted("to-packed", "en", "fr", payload={"audio": b"\x00\x01\xff"})
    assign = await packed_node.assigned()
    assert assign["payload"] == {"audio": b"\x00\x01\xff"}
    plain = await net.client(hub)
    await plain.submitted("from-packed", "en", "fr")
    assign = await packed_node.assigned()
    await packed_node.accept(assign)
    await packed_node.result(assign, {"wav": b"RIFF"})
    result = await plain.expect("result", request_id="from-packed", ok=True)
    assert result["output"] == {"wav": "UklGRg=="}


async def test_what_a_json_peer_could_not_receive_is_refused_at_ingress(
    hub: Hub, net: Net
) -> None:
    json_node = await net.node(hub, "json-node")
    packed = await net.client(hub, binary=True)
    for value, path, words in UNFIT:
        await packed.submit("r", payload=value)
        error = await packed.expect("error", code="invalid_field")
        assert error["path"] == path and words in error["message"], (value, error)
    await json_node.quiet(0.1)  # nothing reached the JSON node
    # The other way: a JSON integer that MessagePack cannot carry.
    plain = await net.client(hub)
    await plain.send_raw(
        '{"type":"submit","request_id":"r","src_lang":"en","tgt_lang":"de",'
        '"payload":{"n":100000000000000000000000}}'
    )
    error = await plain.expect("error", code="invalid_field")
    assert error["path"] == "$.payload.n"
    # A MessagePack node's Ext output is refused too, and its job is not lost: the
    # node can still send a result the JSON client can read.
    packed_node = await net.node(hub, "packed-node", caps([("en", "fr")]), binary=True)
    await plain.submitted("r2", "en", "fr")
    assign = await packed_node.assigned()
    await packed_node.accept(assign)
    await packed_node.result(assign, {"x": msgspec.msgpack.Ext(1, b"z")})
    await packed_node.expect("error", code="invalid_field", job_id=assign["job_id"])
    await packed_node.result(assign, {"x": "fine"})
    result = await plain.expect("result", request_id="r2", ok=True)
    assert result["output"] == {"x": "fine"}


async def test_refusals_count_within_a_window_not_only_in_a_row(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(max_protocol_errors=4)
    node = await net.node(hub, "mixed", heartbeat_s=None)
    for _ in range(3):  # bad, good, bad, good...: a consecutive count never gets there
        await node.send_raw("{not json")
        await node.expect("error", code="bad_message")
        await node.send({"type": "heartbeat"})
    await node.send_raw("{not json")
    await node.expect("error", code="bad_message")
    assert await node.wait_closed() == 1008
    await wait_until(lambda: "mixed" not in hub.fleet.snapshot, what="mixed to leave")
