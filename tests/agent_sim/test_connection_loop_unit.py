"""`ConnectionLoop` without sockets: a scripted connector hands it recording links.

The test plays the hub on each link (feeds `registered`, jobs, cancels, ends
the connection with a close code) and decides when a reconnect gets its next
link. Backoffs are a millisecond; no test waits for time to pass except the
heartbeat one, which awaits the heartbeat itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from loguru import logger

from agent_sim.connection import CONFLICT_RETRY_MAX_S, ConnectionLoop, Token
from agent_sim.frames import Frames
from agent_sim.job import JobContext, JobHandler
from agent_sim.jobs import JobRunner
from agent_sim.link import LinkRefused
from agent_sim.state import AgentState
from hub.core.messages import (
    Error,
    Heartbeat,
    JobAccept,
    JobCancel,
    JobResult,
    Register,
    Registered,
)
from tests.agent_sim.fakes import (
    ABNORMAL,
    CAPS,
    TIMEOUT_S,
    Gate,
    RecordingLink,
    ScriptedConnector,
    job_assign,
)

URL_A = "ws://hub-a:8765/v1/node"
URL_B = "ws://hub-b:8765/v1/node"


async def echo(ctx: JobContext) -> Any:
    return {"echo": ctx.payload, "job": ctx.job_id}


class Node:
    """A `ConnectionLoop` with the parts `NodeAgent` gives it, over a scripted connector."""

    def __init__(self, handler: JobHandler = echo, *, token: Token | None = None) -> None:
        log = logger.bind(node_id="n1")
        self.state = AgentState(node_id="n1", capabilities=CAPS, log=log)
        self.frames = Frames(node_id="n1", log=log)
        self.jobs = JobRunner(self.state, self.frames, handler=handler, faults=None)
        self.connector = ScriptedConnector()
        self.loop = ConnectionLoop(
            self.state, self.frames, self.jobs, self.connector,
            hub_urls=["ws://hub-a:8765", "ws://hub-b:8765"], version="test/1", token=token,
            reconnect_min_s=0.001, reconnect_max_s=0.002, rng=random.Random(0),
            register_timeout_s=TIMEOUT_S,
        )
        self.task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the loop; stop it as `NodeAgent.aclose` does."""
        self.task = asyncio.create_task(self.loop.run())
        try:
            yield
        finally:
            self.state.stopping = True
            self.task.cancel()
            await asyncio.wait([self.task])

    async def connect(
        self, link: RecordingLink, *, url: str = URL_A, heartbeat_interval_ms: int = 0
    ) -> Register:
        """The next connect (to `url`) gets `link`, and the hub registers the node on it."""
        assert await self.connector.next_attempt() == url
        self.connector.queue(link)
        register = await link.next_sent(Register)
        link.feed(Registered("n1", "hub-a", 3, heartbeat_interval_ms))
        await asyncio.wait_for(self.loop.registered.wait(), TIMEOUT_S)
        assert self.frames.current is link
        return register


async def test_it_registers_on_the_link_its_connector_opened_with_a_fresh_token() -> None:
    tokens = iter(["t1", "t2"])
    node = Node(token=lambda: next(tokens))
    async with node.running():
        register = await node.connect(RecordingLink())
    assert register == Register("n1", CAPS, "test/1")
    assert node.connector.opened == [(URL_A, "t1")]
    loop = node.loop
    assert (loop.hub_id, loop.pool, loop.heartbeat_interval_ms) == ("hub-a", 3, 0)
    assert (loop.connected_url, loop.connects, loop.disconnects) == (URL_A, 1, 0)


async def test_the_hubs_jobs_reach_the_runner_and_the_answers_go_back_on_the_link() -> None:
    gate = Gate()
    node = Node(gate)
    link = RecordingLink()
    async with node.running():
        await node.connect(link)
        link.feed(job_assign("j1", payload={"text": "hi"}))
        assert await gate.wait_started() == "j1"
        link.feed("{not json")  # skipped: the session goes on
        link.feed(Error(code="stale_attempt", message="no longer yours", job_id="j0"))
        link.feed(job_assign("j2"))
        assert await gate.wait_started() == "j2"
        link.feed(JobCancel("j2", 1, "client_cancel"))
        gate.release("j1")
        result = await link.next_sent(JobResult)
    assert result == JobResult("j1", 1, ok=True, output={"done": "j1"})
    assert link.sent == [Register("n1", CAPS, "test/1"), JobAccept("j1", 1), JobAccept("j2", 1),
                         result]
    assert gate.cancelled == ["j2"] and node.jobs.cancelled == 1


async def test_after_a_drop_the_next_link_gets_the_recent_results_replayed_first() -> None:
    node = Node()
    first, second = RecordingLink("first"), RecordingLink("second")
    async with node.running():
        await node.connect(first)
        first.feed(job_assign("j1"))
        result = await first.next_sent(JobResult)
        first.ended(ABNORMAL)  # the hub died: it may not have passed the result on
        await node.connect(second)
        await second.next_sent(JobResult)
        assert node.loop.disconnects == 1
    assert second.sent == [Register("n1", CAPS, "test/1"),
                           msgspec.structs.replace(result, replayed=True)]


async def test_after_a_clean_close_nothing_is_replayed() -> None:
    node = Node()
    first, second = RecordingLink("first"), RecordingLink("second")
    async with node.running():
        await node.connect(first)
        first.feed(job_assign("j1"))
        await first.next_sent(JobResult)
        first.ended(1000)
        await node.connect(second)
        second.feed(job_assign("j2"))  # its accept comes right after the register
        await second.next_sent(JobResult)
    assert [type(m) for m in second.sent] == [Register, JobAccept, JobResult]


async def test_a_drop_cancels_the_running_jobs_and_the_next_link_hears_nothing_of_them() -> None:
    gate = Gate()
    node = Node(gate)
    first, second = RecordingLink("first"), RecordingLink("second")
    async with node.running():
        await node.connect(first)
        first.feed(job_assign("j1"))
        await gate.wait_started()
        first.ended(ABNORMAL)
        await node.connect(second)
        # The first link's session ended only once its jobs were cancelled and done.
        assert gate.cancelled == ["j1"] and node.jobs.lost == 1
        assert node.jobs.running == 0
        second.feed(job_assign("j2"))
        assert await gate.wait_started() == "j2"
        await second.next_sent(JobAccept)
    assert first.sent == [Register("n1", CAPS, "test/1"), JobAccept("j1", 1)]
    assert second.sent == [Register("n1", CAPS, "test/1"), JobAccept("j2", 1)]


async def test_a_refused_registration_hangs_up_with_1000_and_tries_again() -> None:
    node = Node()
    refused, accepted = RecordingLink("refused"), RecordingLink("accepted")
    async with node.running():
        assert await node.connector.next_attempt() == URL_A
        node.connector.queue(refused)
        await refused.next_sent(Register)
        refused.feed(Error(code="node_id_conflict", message="node id in use"))
        await asyncio.wait_for(refused.closed.wait(), TIMEOUT_S)
        assert (refused.close_code, refused.close_reason) == (1000, "registration failed")
        await node.connect(accepted)  # the same hub again: the old session may be gone
    assert node.loop.conflicts == 1 and node.loop.connects == 2


async def test_a_hub_going_away_sends_the_node_to_the_next_hub_at_once() -> None:
    node = Node()
    async with node.running():
        first = RecordingLink("first")
        await node.connect(first)
        first.ended(1001)
        await node.connect(RecordingLink("second"), url=URL_B)
    assert node.loop.connected_url == URL_B


async def test_an_unreachable_or_refusing_hub_is_passed_over_for_the_next() -> None:
    node = Node()
    async with node.running():
        assert await node.connector.next_attempt() == URL_A
        node.connector.queue(OSError("connection refused"))
        assert await node.connector.next_attempt() == URL_B
        node.connector.queue(LinkRefused("HTTP 403"))
        await node.connect(RecordingLink(), url=URL_A)
    assert node.connector.opened == [(URL_A, None)]


async def test_a_node_replaced_by_another_session_stops_reconnecting() -> None:
    node = Node()
    link = RecordingLink()
    async with node.running():
        await node.connect(link)
        link.ended(4005)
        assert node.task is not None
        await asyncio.wait_for(node.task, TIMEOUT_S)  # the loop ends by itself
        assert node.loop.replaced
        assert node.connector.attempts.empty()
        assert node.frames.current is None  # nothing left to send on, close or abort
        assert not node.loop.registered.is_set()


async def test_heartbeats_carry_the_running_jobs() -> None:
    gate = Gate()
    node = Node(gate)
    link = RecordingLink()
    async with node.running():
        await node.connect(link, heartbeat_interval_ms=5)
        link.feed(job_assign("j1"))
        await gate.wait_started()
        async with asyncio.timeout(TIMEOUT_S):
            while (await link.next_sent(Heartbeat)).running != 1:
                pass
            gate.release("j1")
            await link.next_sent(JobResult)
            while (await link.next_sent(Heartbeat)).running != 0:
                pass


async def test_a_hub_that_answers_no_ping_is_left_and_the_results_replayed_elsewhere() -> None:
    """The node's own liveness check: a frozen hub keeps its connection up and answers
    nothing; the node drops it, registers with the next hub and replays its result there
    (it would have sat unread in the frozen hub's socket)."""
    node = Node()
    first, second = RecordingLink("frozen"), RecordingLink("next")
    async with node.running():
        await node.connect(first, heartbeat_interval_ms=5)
        first.feed(job_assign("j1"))
        result = await first.next_sent(JobResult)
        first.frozen = True
        async with asyncio.timeout(TIMEOUT_S):
            await first.closed.wait()
        assert first.aborted  # no closing handshake with a hub that answers nothing
        # The next hub, not the frozen one again: its kernel would accept the connection
        # and the handshake would hang until it wakes.
        await node.connect(second, url=URL_B)
        await second.next_sent(JobResult)
    assert second.sent[-1] == msgspec.structs.replace(result, replayed=True)


async def test_a_hub_that_answers_its_pings_is_kept() -> None:
    node = Node()
    link = RecordingLink()
    async with node.running():
        await node.connect(link, heartbeat_interval_ms=5)
        async with asyncio.timeout(TIMEOUT_S):
            for _ in range(5):
                await link.next_sent(Heartbeat)
        assert link.close_code is None and not link.aborted


def test_a_node_id_conflict_is_retried_soon_however_often_it_repeats() -> None:
    """A conflict ends when the hub holding the node's lease is excluded: the node retries
    within `CONFLICT_RETRY_MAX_S`, while other refusals back off up to the maximum."""
    node = Node()
    loop = node.loop
    loop._reconnect_max_s = 30.0
    conflicts = [loop._retry_delay_s(n, conflicted=True) for n in range(1, 30)]
    others = [loop._retry_delay_s(n, conflicted=False) for n in range(20, 30)]
    assert max(conflicts) <= CONFLICT_RETRY_MAX_S
    assert max(others) > CONFLICT_RETRY_MAX_S
