"""NodeAgent over real sockets, against a small scripted hub defined here.

`ScriptedHub` is a real websockets server on port 0 that speaks just enough of
/v1/node (docs/protocol.md): it answers `register` with `registered` (or with
`error node_id_conflict` while told to), records everything the agent sends in
a per-connection queue, and lets the test send `job_assign` / `job_cancel`.
Tests wait on those queues and on events, never on bare sleeps.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import msgspec
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from agent_sim.agent import JobContext, JobFailed, NodeAgent, node_url
from agent_sim.behaviour import FaultDecision
from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Capabilities,
    Codec,
    Drain,
    Error,
    Heartbeat,
    JobAccept,
    JobAssign,
    JobCancel,
    JobProgress,
    JobReject,
    JobResult,
    LanguagePair,
    NodeInbound,
    Pipeline,
    Register,
    Registered,
)

TIMEOUT_S = 5.0
M = TypeVar("M")


class HubConn:
    """One agent connection as the scripted hub sees it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        # The wire model without the hub's ingress rules: this checks what the agent
        # encodes (bytes included), not what a hub would accept.
        self.codec: Codec[NodeInbound] = Codec(
            NodeInbound, binary=ws.subprotocol == MSGPACK_SUBPROTOCOL
        )
        self.register: Register | None = None
        self.refused = False
        self.inbox: asyncio.Queue[NodeInbound] = asyncio.Queue()
        self.frame_types: set[type] = set()
        self.closed = asyncio.Event()
        self.close_exc: ConnectionClosed | None = None

    async def send(self, message: msgspec.Struct) -> None:
        await self.ws.send(self.codec.encode_frame(message))

    async def expect(self, cls: type[M], *, skip_heartbeats: bool = True) -> M:
        """The next message from the agent, which must be a `cls`."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), TIMEOUT_S)
            if skip_heartbeats and isinstance(message, Heartbeat) and cls is not Heartbeat:
                continue
            assert isinstance(message, cls), f"expected {cls.__name__}, got {message!r}"
            return message

    async def wait_closed(self) -> ConnectionClosed | None:
        await asyncio.wait_for(self.closed.wait(), TIMEOUT_S)
        return self.close_exc


class ScriptedHub:
    def __init__(
        self, *, hub_id: str = "hub-test", heartbeat_interval_ms: int = 1000, conflicts: int = 0
    ) -> None:
        self.hub_id = hub_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.conflicts = conflicts
        self.conns: asyncio.Queue[HubConn] = asyncio.Queue()
        self.authorizations: list[str | None] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def __aenter__(self) -> ScriptedHub:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self._process_request,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> None:
        headers: Headers = request.headers
        self.authorizations.append(headers.get("Authorization"))

    async def next_conn(self) -> HubConn:
        """The next connection that sent `register` (registered or refused)."""
        return await asyncio.wait_for(self.conns.get(), TIMEOUT_S)

    async def _handle(self, ws: ServerConnection) -> None:
        conn = HubConn(ws)
        try:
            first = conn.codec.decode(await ws.recv())
            assert isinstance(first, Register), first
            conn.register = first
            if self.conflicts > 0:
                self.conflicts -= 1
                conn.refused = True
                await conn.send(Error(code="node_id_conflict", message="node id in use"))
                await self.conns.put(conn)
                await ws.wait_closed()  # the agent hangs up and retries
                return
            pool = first.capabilities.pool if first.capabilities.pool is not None else 0
            await conn.send(
                Registered(first.node_id, self.hub_id, pool, self.heartbeat_interval_ms)
            )
            await self.conns.put(conn)
            async for frame in ws:
                conn.frame_types.add(type(frame))
                await conn.inbox.put(conn.codec.decode(frame))
        except ConnectionClosed as exc:
            conn.close_exc = exc
        finally:
            conn.closed.set()


CAPS = Capabilities(
    max_concurrency=2,
    language_pairs=[LanguagePair("en", "zh")],
    asr_languages=["en"],
    tts_languages=["zh"],
    features=["punctuation"],
    pool=3,
)


def assign(job_id: str = "j1", attempt: int = 1, payload: Any = None) -> JobAssign:
    return JobAssign(
        job_id=job_id,
        attempt=attempt,
        session_id="s1",
        src_lang="en",
        tgt_lang="zh",
        features=["punctuation"],
        pipeline=Pipeline(),
        deadline_ms=30_000,
        payload=payload,
    )


async def echo(ctx: JobContext) -> Any:
    return {"echo": ctx.payload, "job": ctx.job_id}


def make_agent(
    urls: list[str],
    handler: Callable[[JobContext], Any] = echo,
    *,
    caps: Capabilities = CAPS,
    **kwargs: Any,
) -> NodeAgent:
    kwargs.setdefault("reconnect_min_s", 0.01)
    kwargs.setdefault("reconnect_max_s", 0.1)
    return NodeAgent(
        node_id="node-1",
        capabilities=caps,
        hub_urls=urls,
        handler=handler,
        rng=random.Random(0),
        **kwargs,
    )


class Gate:
    """A handler that blocks until released, recording start and cancellation."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.release = asyncio.Event()
        self.cancelled: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, ctx: JobContext) -> Any:
        await self.started.put(ctx.job_id)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            await self.cancelled.put(ctx.job_id)
            raise
        return {"done": ctx.job_id}

    async def wait_started(self) -> str:
        return await asyncio.wait_for(self.started.get(), TIMEOUT_S)

    async def wait_cancelled(self) -> str:
        return await asyncio.wait_for(self.cancelled.get(), TIMEOUT_S)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedHub]:
    """A scripted hub (named so as not to shadow conftest's real `hub` fixture)."""
    async with ScriptedHub() as hub:
        yield hub


def dead_url() -> str:
    """A URL nobody listens on: bind port 0, then let it go."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


# --- pure --------------------------------------------------------------------------


def test_node_url_appends_the_endpoint_path_only_when_empty() -> None:
    assert node_url("ws://h:1") == "ws://h:1/v1/node"
    assert node_url("ws://h:1/") == "ws://h:1/v1/node"
    assert node_url("wss://h:1/v1/node") == "wss://h:1/v1/node"
    assert node_url("ws://h:1/custom/path") == "ws://h:1/custom/path"
    with pytest.raises(ValueError):
        node_url("http://h:1")


# --- sessions ------------------------------------------------------------------------


async def test_registers_then_heartbeats_with_running() -> None:
    async with (
        ScriptedHub(hub_id="hub-a", heartbeat_interval_ms=30) as hub,
        make_agent([hub.url], version="test/1") as agent,
    ):
        conn = await hub.next_conn()
        assert conn.register is not None
        assert conn.register.node_id == "node-1"
        assert conn.register.capabilities == CAPS
        assert conn.register.version == "test/1"
        assert conn.ws.subprotocol == JSON_SUBPROTOCOL
        await agent.wait_registered(TIMEOUT_S)
        assert agent.hub_id == "hub-a"
        assert agent.pool == 3
        assert agent.heartbeat_interval_ms == 30
        assert agent.connected_url == hub.url + "/v1/node"
        beat = await conn.expect(Heartbeat, skip_heartbeats=False)
        assert beat.running == 0
        assert conn.frame_types == {str}
        assert agent.connects == 1
    # A clean close: the hub saw a close frame with code 1000.
    exc = await conn.wait_closed()
    assert conn.ws.close_code == 1000, exc


async def test_job_accept_progress_result(scripted: ScriptedHub) -> None:
    seen: list[JobContext] = []

    async def handler(ctx: JobContext) -> Any:
        seen.append(ctx)
        await ctx.progress({"partial": "hal"})
        return {"text": "hallo", "job": ctx.job_id}

    async with make_agent([scripted.url], handler) as agent:
        conn = await scripted.next_conn()
        await conn.send(assign("j1", 2, payload={"audio": "x"}))
        accept = await conn.expect(JobAccept)
        assert (accept.job_id, accept.attempt) == ("j1", 2)
        progress = await conn.expect(JobProgress)
        assert (progress.job_id, progress.attempt, progress.data) == ("j1", 2, {"partial": "hal"})
        result = await conn.expect(JobResult)
        assert result.ok and result.error is None
        assert result.output == {"text": "hallo", "job": "j1"}
        ctx = seen[0]
        assert (ctx.session_id, ctx.src_lang, ctx.tgt_lang) == ("s1", "en", "zh")
        assert ctx.features == ["punctuation"] and ctx.deadline_ms == 30_000
        assert ctx.payload == {"audio": "x"} and ctx.pipeline == Pipeline()
        assert (agent.accepted, agent.completed, agent.running) == (1, 1, 0)


async def test_handler_failures_report_ok_false(scripted: ScriptedHub) -> None:
    async def handler(ctx: JobContext) -> Any:
        if ctx.job_id == "typed":
            raise JobFailed("bad_audio", "cannot decode")
        if ctx.job_id == "crash":
            raise RuntimeError("boom")
        return object()  # not encodable

    async with make_agent([scripted.url], handler, caps=CAPS) as agent:
        conn = await scripted.next_conn()
        outcomes: dict[str, JobResult] = {}
        for job_id in ("typed", "crash", "opaque"):
            await conn.send(assign(job_id))
            await conn.expect(JobAccept)
            result = await conn.expect(JobResult)
            outcomes[result.job_id] = result
        assert not any(r.ok for r in outcomes.values())
        assert outcomes["typed"].error is not None
        assert (outcomes["typed"].error.code, outcomes["typed"].error.message) == (
            "bad_audio",
            "cannot decode",
        )
        assert outcomes["crash"].error is not None
        assert outcomes["crash"].error.code == "handler_error"
        assert "boom" in outcomes["crash"].error.message
        assert outcomes["opaque"].error is not None
        assert outcomes["opaque"].error.code == "handler_error"
        assert agent.failed == 3


async def test_a_handler_exception_is_logged_at_warning(scripted: ScriptedHub) -> None:
    """A bug in a node's handler is the node operator's to see, with the job."""
    from loguru import logger

    async def handler(ctx: JobContext) -> Any:
        raise RuntimeError("model exploded")

    seen: list[Any] = []
    sink = logger.add(lambda message: seen.append(message.record), level="WARNING")
    try:
        async with make_agent([scripted.url], handler, caps=CAPS):
            conn = await scripted.next_conn()
            await conn.send(assign("crash"))
            await conn.expect(JobAccept)
            await conn.expect(JobResult)
    finally:
        logger.remove(sink)
    (record,) = [r for r in seen if r["extra"].get("event") == "handler_error"]
    assert record["level"].name == "WARNING"
    assert record["extra"]["job_id"] == "crash" and "model exploded" in record["message"]
    assert record["exception"] is not None  # the traceback goes with it


async def test_rejects_when_busy(scripted: ScriptedHub) -> None:
    gate = Gate()
    caps = msgspec.structs.replace(CAPS, max_concurrency=1)
    async with make_agent([scripted.url], gate, caps=caps) as agent:
        conn = await scripted.next_conn()
        await conn.send(assign("j1"))
        await conn.expect(JobAccept)
        assert await gate.wait_started() == "j1"
        await conn.send(assign("j2"))
        reject = await conn.expect(JobReject)
        assert (reject.job_id, reject.reason) == ("j2", "busy")
        gate.release.set()
        result = await conn.expect(JobResult)
        assert result.job_id == "j1" and result.ok
        assert (agent.accepted, agent.rejected, agent.completed) == (1, 1, 1)


async def test_job_cancel_cancels_the_handler_and_sends_nothing(scripted: ScriptedHub) -> None:
    gate = Gate()
    async with make_agent([scripted.url], gate) as agent:
        conn = await scripted.next_conn()
        await conn.send(assign("j1"))
        await conn.expect(JobAccept)
        await gate.wait_started()
        await conn.send(JobCancel("j1", 1, "client_cancel"))
        assert await gate.wait_cancelled() == "j1"
        # A later job's messages arrive with nothing about j1 in between.
        gate.release.set()
        await conn.send(assign("j2"))
        accept = await conn.expect(JobAccept)
        result = await conn.expect(JobResult)
        assert (accept.job_id, result.job_id) == ("j2", "j2")
        assert (agent.cancelled, agent.completed, agent.running) == (1, 1, 0)
        # job_cancel for an attempt the agent does not hold changes nothing.
        await conn.send(JobCancel("j2", 1, "late"))
        await conn.send(assign("j3"))
        assert (await conn.expect(JobAccept)).job_id == "j3"
        assert (await conn.expect(JobResult)).job_id == "j3"
        assert agent.cancelled == 1


async def test_hub_error_is_logged_and_the_connection_kept(scripted: ScriptedHub) -> None:
    async with make_agent([scripted.url]) as agent:
        conn = await scripted.next_conn()
        await conn.send(Error(code="not_assigned", message="stale attempt", job_id="zz"))
        await conn.send(assign("j1"))
        assert (await conn.expect(JobAccept)).job_id == "j1"
        assert (await conn.expect(JobResult)).ok
        assert agent.connects == 1 and agent.registered.is_set()


async def test_reconnects_and_reregisters_after_the_hub_closes(scripted: ScriptedHub) -> None:
    gate = Gate()
    async with make_agent([scripted.url], gate) as agent:
        first = await scripted.next_conn()
        await first.send(assign("j1"))
        await first.expect(JobAccept)
        await gate.wait_started()
        await first.ws.close(1001, "hub restarting")
        # The running job is cancelled locally (the hub fails it over) ...
        assert await gate.wait_cancelled() == "j1"
        # ... and the agent comes back with a fresh register.
        second = await scripted.next_conn()
        assert second.register is not None and second.register.node_id == "node-1"
        await agent.wait_registered(TIMEOUT_S)
        assert agent.connects == 2 and agent.disconnects == 1 and agent.lost == 1
        # Nothing about j1 reached the hub after the accept.
        while not first.inbox.empty():
            assert isinstance(first.inbox.get_nowait(), Heartbeat)
        gate.release.set()
        await second.send(assign("j2"))
        await second.expect(JobAccept)
        assert (await second.expect(JobResult)).ok


async def test_fails_over_to_the_next_url(scripted: ScriptedHub) -> None:
    down = dead_url()
    async with make_agent([down, scripted.url]) as agent:
        conn = await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
        assert agent.connected_url == scripted.url + "/v1/node"
        assert agent.connects == 1
        await conn.send(assign("j1"))
        await conn.expect(JobAccept)
        assert (await conn.expect(JobResult)).ok


async def test_fails_over_when_the_connected_hub_dies() -> None:
    async with ScriptedHub(hub_id="hub-b") as second:
        first = ScriptedHub(hub_id="hub-a")
        await first.__aenter__()
        try:
            async with make_agent([first.url, second.url]) as agent:
                await first.next_conn()
                await agent.wait_registered(TIMEOUT_S)
                assert agent.hub_id == "hub-a"
                first_url = first.url
                await first.__aexit__(None, None, None)
                await second.next_conn()
                await agent.wait_registered(TIMEOUT_S)
                assert agent.hub_id == "hub-b"
                assert agent.connected_url == second.url + "/v1/node" != first_url
        finally:
            if first._server is not None and first._server.is_serving():
                await first.__aexit__(None, None, None)


async def test_node_id_conflict_backs_off_and_retries() -> None:
    async with ScriptedHub(conflicts=2) as hub, make_agent([hub.url]) as agent:
        for _ in range(2):
            refused = await hub.next_conn()
            assert refused.refused
            # The agent hangs up by itself, cleanly.
            await refused.wait_closed()
            assert refused.ws.close_code == 1000
        accepted = await hub.next_conn()
        assert not accepted.refused
        await agent.wait_registered(TIMEOUT_S)
        assert agent.conflicts == 2 and agent.connects == 3


async def test_drain_waits_for_running_jobs(scripted: ScriptedHub) -> None:
    gate = Gate()
    agent = make_agent([scripted.url], gate)
    async with agent:
        conn = await scripted.next_conn()
        await conn.send(assign("j1"))
        await conn.expect(JobAccept)
        await gate.wait_started()
        drain = asyncio.create_task(agent.drain(timeout_s=TIMEOUT_S))
        await conn.expect(Drain)
        # New work is refused while draining.
        await conn.send(assign("j2"))
        reject = await conn.expect(JobReject)
        assert (reject.job_id, reject.reason) == ("j2", "draining")
        assert not drain.done()
        gate.release.set()
        result = await conn.expect(JobResult)
        assert result.job_id == "j1" and result.ok
        assert await asyncio.wait_for(drain, TIMEOUT_S) is True
        await conn.wait_closed()
        assert conn.ws.close_code == 1000
        assert not agent.registered.is_set()


async def test_msgpack_mode(scripted: ScriptedHub) -> None:
    async def handler(ctx: JobContext) -> Any:
        await ctx.progress(b"\x00\x01")
        return {"bytes": b"\xff", "n": 3}

    async with make_agent([scripted.url], handler, binary=True) as agent:
        conn = await scripted.next_conn()
        assert conn.ws.subprotocol == MSGPACK_SUBPROTOCOL
        await agent.wait_registered(TIMEOUT_S)
        await conn.send(assign("j1"))
        await conn.expect(JobAccept)
        assert (await conn.expect(JobProgress)).data == b"\x00\x01"
        result = await conn.expect(JobResult)
        assert result.ok and result.output == {"bytes": b"\xff", "n": 3}
        assert conn.frame_types == {bytes}


async def test_bearer_token_is_sent(scripted: ScriptedHub) -> None:
    async with make_agent([scripted.url], token="s3cret") as agent:
        await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
    assert scripted.authorizations == ["Bearer s3cret"]


class ScriptedFaults:
    def __init__(self, decisions: dict[str, FaultDecision]) -> None:
        self.decisions = decisions
        self.seen: list[str] = []

    def on_assign(self, assign: JobAssign) -> FaultDecision:
        self.seen.append(assign.job_id)
        return self.decisions.get(assign.job_id, FaultDecision())


async def test_fault_policy_reject_delay_and_crash(scripted: ScriptedHub) -> None:
    gate = Gate()
    faults = ScriptedFaults(
        {
            "rej": FaultDecision(reject_reason="simulated_reject"),
            "crash": FaultDecision(crash_after_s=0.02, accept_delay_s=0.01),
        }
    )
    async with make_agent([scripted.url], gate, faults=faults) as agent:
        conn = await scripted.next_conn()
        await conn.send(assign("rej"))
        reject = await conn.expect(JobReject)
        assert (reject.job_id, reject.reason) == ("rej", "simulated_reject")
        await conn.send(assign("crash"))
        assert (await conn.expect(JobAccept)).job_id == "crash"
        await gate.wait_started()
        # The agent drops TCP without a close frame, as a crashed node would.
        exc = await conn.wait_closed()
        assert exc is not None and exc.rcvd is None
        assert await gate.wait_cancelled() == "crash"
        again = await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
        assert again.register is not None
        assert faults.seen == ["rej", "crash"]
        assert agent.lost == 1 and agent.rejected == 1


async def test_abort_connection_reconnects(scripted: ScriptedHub) -> None:
    async with make_agent([scripted.url]) as agent:
        conn = await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
        assert agent.abort_connection()
        exc = await conn.wait_closed()
        assert exc is not None and exc.rcvd is None
        await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
        assert agent.connects == 2
    assert not agent.abort_connection()


async def test_a_job_assigned_as_the_connection_drops_is_not_left_behind(
    scripted: ScriptedHub,
) -> None:
    # The job_assign and the close arrive together: the job's task is cancelled before it
    # ever ran. It must still leave the agent's table (running back to 0, counted lost),
    # or `drain` would wait for it forever.
    gate = Gate()
    async with make_agent([scripted.url], gate) as agent:
        conn = await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
        protocol = conn.ws.protocol
        frame = conn.codec.encode_frame(assign("j-doomed"))
        if isinstance(frame, str):
            protocol.send_text(frame.encode())
        else:
            protocol.send_binary(frame)
        protocol.send_close(1001, "going away")
        conn.ws.transport.writelines(protocol.data_to_send())  # one write: both frames
        await scripted.next_conn()  # the agent reconnected
        await agent.wait_registered(TIMEOUT_S)
        assert agent.running == 0 and agent.lost + agent.accepted >= 1
        assert agent.stats()["running"] == 0
        drained = await agent.drain(timeout_s=1.0)
    assert drained


async def test_on_result_is_told_of_each_result_sent(scripted: ScriptedHub) -> None:
    sent: list[JobResult] = []
    async with make_agent([scripted.url], on_result=sent.append) as agent:
        conn = await scripted.next_conn()
        await agent.wait_registered(TIMEOUT_S)
        await conn.send(assign("j1", payload="x"))
        await conn.expect(JobAccept)
        received = await conn.expect(JobResult)
    assert [r.job_id for r in sent] == ["j1"] and sent[0] == received
