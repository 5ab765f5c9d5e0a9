"""The job path on its own: `JobService` over the memory store, fake links, a fake clock.

No sockets and no event-loop timing: peers are `RecordingLink`s that keep
every message the hub sends them, time moves only when a test advances the
`ManualClock`, and deadlines fire when the test asks (`fire_deadlines`).
Each test asserts the exact messages the links received.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import msgspec
import pytest

from hub.cluster.peers import Peers
from hub.core.config import HubConfig
from hub.core.envelopes import Held
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.messages import (
    Accepted,
    Cancel,
    Capabilities,
    Drain,
    JobAccept,
    JobAssign,
    JobCancel,
    JobProgress,
    JobReject,
    JobResult,
    LanguagePair,
    Progress,
    Register,
    Rejected,
    Result,
    Submit,
)
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, DEFAULT_TENANT
from hub.jobs.owner.registry import RegisteredNode
from hub.jobs.service import JobService
from hub.runtime.deadline_loop import Clock
from hub.store.archive import JobArchive
from hub.store.memory import MemoryStore

CONFIG = HubConfig(
    hub_id="home", accept_timeout_ms=1_000, job_timeout_ms=5_000, max_attempts=3,
    selection_seed=7,
)


class ManualClock(Clock):
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000
        self.wall = 1_700_000_000_000

    def now_ms(self) -> int:
        return self.now

    def wall_ms(self) -> int:
        return self.wall

    def advance(self, ms: int) -> None:
        self.now += ms
        self.wall += ms


class RecordingLink:
    """A `Link` that keeps what the hub sends, in order."""

    def __init__(
        self, peer_id: str, journal: list[tuple[str, msgspec.Struct]] | None = None
    ) -> None:
        self.peer_id = peer_id
        self.sent: list[msgspec.Struct] = []
        self.journal = journal
        """Shared by several links: what each was sent, in the order across them."""
        self.closed: tuple[int, str] | None = None
        self.aborted = False

    def queue(self, message: msgspec.Struct, *, flush: bool = False) -> None:
        self._record(message)

    async def send(self, message: msgspec.Struct) -> None:
        self._record(message)

    def _record(self, message: msgspec.Struct) -> None:
        self.sent.append(message)
        if self.journal is not None:
            self.journal.append((self.peer_id, message))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True

    def take(self) -> list[msgspec.Struct]:
        """What arrived since the last `take`."""
        sent, self.sent = self.sent, []
        return sent


class JobPath:
    """A `JobService` wired as `Hub` wires it, minus the server and the loops."""

    def __init__(self, config: HubConfig = CONFIG, store: MemoryStore | None = None) -> None:
        self.clock = ManualClock()
        self.store = store = store if store is not None else MemoryStore(hub_id=config.hub_id)
        self.fleet = fleet = FleetView()
        self.archive = JobArchive(store=store, ttl_ms=config.idempotency_ttl_ms)
        self.peers = peers = Peers(config=config, store=store, fleet=fleet)
        self.metrics = Metrics()
        self.service = JobService(
            config=config, store=store, fleet=fleet, metrics=self.metrics, peers=peers,
            archive=self.archive, rng=random.Random(1), clock=self.clock,
        )
        self.nodes: dict[str, tuple[RecordingLink, RegisteredNode]] = {}
        self.journal: list[tuple[str, msgspec.Struct]] = []
        """Every link's messages, in the order across links."""

    async def node(self, node_id: str, *, slots: int = 2) -> RecordingLink:
        link = RecordingLink(f"n-{node_id}", self.journal)
        caps = Capabilities(
            max_concurrency=slots, language_pairs=[LanguagePair("en", "de")],
            asr_languages=["en"], tts_languages=["de"],
        )
        owner = self.service.owner
        node = await owner.register(link, Register(node_id, caps), self.clock.wall)
        self.nodes[node_id] = (link, node)
        return link

    async def from_node(self, node_id: str, message: Any) -> None:
        _, node = self.nodes[node_id]
        await self.service.owner.handle(node, message)

    async def drop(self, node_id: str) -> None:
        _, node = self.nodes.pop(node_id)
        await self.service.owner.unregister(node)

    async def leave(self, node_id: str) -> None:
        """As a node of a draining hub leaves: its hub says it drains, the node drains,
        then it is gone (on its way to another hub)."""
        self.peers.set_draining()
        await self.from_node(node_id, Drain())
        await self.drop(node_id)

    def client(self, name: str = "c1") -> RecordingLink:
        link = RecordingLink(name, self.journal)
        self.service.home.client_connected(link)
        return link

    async def submit(self, client: RecordingLink, request_id: str, **fields: Any) -> None:
        fields.setdefault("payload", {"text": "hello"})
        await self.service.home.submit(client, Submit(request_id, "en", "de", **fields))

    async def fire_deadlines(self, after_ms: int) -> None:
        self.clock.advance(after_ms)
        await self.service.home.attempts.deadlines.fire_due()


def by_first_assignment(nodes: dict[str, RecordingLink]) -> tuple[str, str]:
    """(the node that got a message, the other one) of two nodes."""
    first = next(n for n, link in nodes.items() if link.sent)
    return first, next(n for n in nodes if n != first)


def only(messages: list[msgspec.Struct], kind: type[Any]) -> Any:
    assert len(messages) == 1 and isinstance(messages[0], kind), messages
    return messages[0]


@pytest.fixture
def path() -> JobPath:
    return JobPath()


async def test_a_submit_is_assigned_accepted_and_answered_once(path: JobPath) -> None:
    node = await path.node("n1")
    client = path.client()
    await path.submit(client, "r1")
    assign = only(node.take(), JobAssign)
    accepted = only(client.take(), Accepted)
    assert (accepted.request_id, accepted.node_id, accepted.duplicate) == ("r1", "n1", False)
    assert assign.job_id == accepted.job_id and assign.attempt == 1
    assert assign.payload == {"text": "hello"} and assign.session_id == "home:c1"
    # The wire deadline is on the wall clock: the attempt's accept + job budget.
    assert assign.deadline_ms == path.clock.wall + 1_000 + 5_000

    await path.from_node("n1", JobAccept(assign.job_id, 1))
    await path.from_node("n1", JobProgress(assign.job_id, 1, {"partial": "hal"}))
    assert client.take() == [Progress(job_id=assign.job_id, data={"partial": "hal"})]
    await path.from_node("n1", JobResult(assign.job_id, 1, ok=True, output={"text": "hallo"}))
    result = only(client.take(), Result)
    assert (result.request_id, result.ok, result.output, result.attempts) == (
        "r1", True, {"text": "hallo"}, 1
    )
    assert node.take() == [] and path.service.home.jobs == {}
    record = await path.service.home.job_record(assign.job_id)
    assert record is not None and record.status == "done" and record.result == result
    # The slot is free again, and a late message from the node is refused.
    assert path.service.registry.registered["n1"].assignments == {}
    with pytest.raises(ProtocolError) as refused:
        await path.from_node("n1", JobResult(assign.job_id, 1, ok=True))
    assert refused.value.code == "not_your_job"


async def test_a_reject_fails_over_to_another_node(path: JobPath) -> None:
    nodes = {"n1": await path.node("n1"), "n2": await path.node("n2")}
    client = path.client()
    await path.submit(client, "r1")
    first, other = by_first_assignment(nodes)
    assign = only(nodes[first].take(), JobAssign)
    only(client.take(), Accepted)
    await path.from_node(first, JobReject(assign.job_id, 1, "busy"))
    again = only(nodes[other].take(), JobAssign)
    assert (again.job_id, again.attempt) == (assign.job_id, 2)
    await path.from_node(other, JobResult(again.job_id, 2, ok=True, output="ok"))
    result = only(client.take(), Result)
    assert (result.ok, result.node_id, result.attempts) == (True, other, 2)
    record = await path.service.home.job_record(assign.job_id)
    assert record is not None
    assert [(a.node_id, a.outcome) for a in record.attempts] == [(first, "rejected"), (other, "ok")]
    assert record.excluded == [first]


async def test_an_accept_timeout_cancels_the_attempt_and_fails_over(path: JobPath) -> None:
    nodes = {"n1": await path.node("n1"), "n2": await path.node("n2")}
    client = path.client()
    await path.submit(client, "r1")
    first, other = by_first_assignment(nodes)
    assign = only(nodes[first].take(), JobAssign)
    await path.fire_deadlines(999)  # not yet
    assert nodes[first].take() == [] and nodes[other].take() == []
    await path.fire_deadlines(20)
    cancel = only(nodes[first].take(), JobCancel)
    assert (cancel.job_id, cancel.attempt, cancel.reason) == (assign.job_id, 1, "accept_timeout")
    again = only(nodes[other].take(), JobAssign)
    assert again.attempt == 2
    assert [type(m) for m in client.take()] == [Accepted]  # no result yet


async def test_an_accepted_attempt_that_runs_too_long_times_out(path: JobPath) -> None:
    node = await path.node("n1")
    client = path.client()
    await path.submit(client, "r1")
    assign = only(node.take(), JobAssign)
    await path.from_node("n1", JobAccept(assign.job_id, 1))
    await path.fire_deadlines(1_010)  # the accept deadline re-arms for the attempt's end
    assert node.take() == []
    await path.fire_deadlines(5_000)
    cancel, retry = node.take()
    assert isinstance(cancel, JobCancel) and cancel.reason == "timeout"
    # The only node failed, but nothing else can serve the job: soft exclusion sends the
    # next attempt back to it (instead of ending the job `no_node`).
    assert isinstance(retry, JobAssign) and (retry.job_id, retry.attempt) == (assign.job_id, 2)
    assert client.take()[1:] == []
    for attempt in (2, 3):  # every attempt times out: the job's budget (3 attempts) ends it
        await path.from_node("n1", JobAccept(assign.job_id, attempt))
        await path.fire_deadlines(1_010)
        await path.fire_deadlines(5_000)
    result = only(client.take(), Result)
    assert not result.ok and result.error is not None
    assert result.error.code == "timeout" and result.attempts == 3


async def test_the_clients_timeout_ends_the_job(path: JobPath) -> None:
    node = await path.node("n1")
    client = path.client()
    await path.submit(client, "r1", timeout_ms=300)
    assign = only(node.take(), JobAssign)
    await path.from_node("n1", JobAccept(assign.job_id, 1))
    client.take()
    await path.fire_deadlines(310)
    assert only(node.take(), JobCancel).reason == "timeout"
    result = only(client.take(), Result)
    assert result.error is not None and result.error.code == "timeout"


async def test_cancel_stops_the_job_at_its_node(path: JobPath) -> None:
    node = await path.node("n1")
    client, stranger = path.client("c1"), path.client("c2")
    await path.submit(client, "r1")
    assign = only(node.take(), JobAssign)
    client.take()
    with pytest.raises(ProtocolError) as refused:
        await path.service.home.cancel(stranger, Cancel(assign.job_id))
    assert refused.value.code == "not_your_job"
    await path.service.home.cancel(client, Cancel(assign.job_id))
    assert only(node.take(), JobCancel).reason == "cancelled"
    result = only(client.take(), Result)
    assert result.error is not None and result.error.code == "cancelled"
    with pytest.raises(ProtocolError) as finished:
        await path.service.home.cancel(client, Cancel(assign.job_id))
    assert finished.value.code == "job_finished"


async def test_a_duplicate_submit_watches_the_same_job(path: JobPath) -> None:
    node = await path.node("n1")
    first, second = path.client("c1"), path.client("c2")
    await path.submit(first, "r1")
    assign = only(node.take(), JobAssign)
    first.take()
    await path.submit(second, "r1")
    duplicate = only(second.take(), Accepted)
    assert (duplicate.job_id, duplicate.duplicate) == (assign.job_id, True)
    assert node.take() == []  # not run twice
    await path.from_node("n1", JobResult(assign.job_id, 1, ok=True, output="x"))
    assert only(first.take(), Result).output == "x"
    assert only(second.take(), Result).output == "x"
    # After the end, a resubmit is answered from the archive.
    third = path.client("c3")
    await path.submit(third, "r1")
    answered = third.take()
    assert [type(m) for m in answered] == [Accepted, Result]
    assert answered[1].output == "x" and node.take() == []


async def test_no_node_is_rejected_with_reasons_and_the_request_released(path: JobPath) -> None:
    await path.node("n1")
    client = path.client()
    await path.service.home.submit(client, Submit("r1", "fr", "es"))
    rejected = only(client.take(), Rejected)
    assert rejected.code == "no_node" and rejected.reasons == {"lang_pair_unsupported": 1}
    # Released: the same request id may be submitted again and gets a fresh answer.
    await path.service.home.submit(client, Submit("r1", "fr", "es"))
    assert only(client.take(), Rejected).code == "no_node"


async def test_a_lost_node_fails_its_attempt_over(path: JobPath) -> None:
    nodes = {"n1": await path.node("n1"), "n2": await path.node("n2")}
    client = path.client()
    await path.submit(client, "r1")
    first, other = by_first_assignment(nodes)
    assign = only(nodes[first].take(), JobAssign)
    await path.from_node(first, JobAccept(assign.job_id, 1))
    await path.drop(first)
    again = only(nodes[other].take(), JobAssign)
    assert (again.job_id, again.attempt) == (assign.job_id, 2)
    assert path.metrics.attempts.get("node_lost") == 1


async def test_attempts_are_bounded(path: JobPath) -> None:
    links = {n: await path.node(n) for n in ("n1", "n2", "n3", "n4")}
    client = path.client()
    await path.submit(client, "r1")
    for attempt in (1, 2, 3):
        node_id = next(n for n, link in links.items() if link.sent)
        assign = only(links[node_id].take(), JobAssign)
        assert assign.attempt == attempt
        await path.from_node(node_id, JobReject(assign.job_id, attempt, "no"))
    assert all(not link.sent for link in links.values())  # the fourth node is never tried
    result = only(client.take()[1:], Result)
    assert result.error is not None and result.error.code == "attempts_exhausted"
    assert result.attempts == 3


async def test_finished_jobs_leave_no_deadlines_behind(path: JobPath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    deadlines = path.service.home.attempts.deadlines
    for i in range(300):
        await path.submit(client, f"r{i}", timeout_ms=86_400_000)  # a day-long budget
        assign = only(node.take(), JobAssign)
        assert len(deadlines) == 2  # the accept deadline and the job's own
        await path.from_node("n1", JobResult(assign.job_id, 1, ok=True))
        assert len(deadlines) == 0
    assert deadlines.heap_size <= 100  # not 600 entries waiting a day to fall due
    assert [type(m) for m in client.take()] == [Accepted, Result] * 300


async def test_a_submit_that_finds_no_node_just_after_one_left_waits_for_one() -> None:
    # Nodes leave a draining hub and register with another a moment later: a submit in
    # that moment waits for one in the queue instead of being refused `no_node`.
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=3_000))
    await path.node("n1")
    await path.leave("n1")  # drained, on its way to another hub
    client = path.client()
    await path.submit(client, "r1")
    accepted = only(client.take(), Accepted)
    assert accepted.queued and accepted.node_id == ""
    node = await path.node("n2")  # a node arrives
    await path.service.home.pump.pump()
    assign = only(node.take(), JobAssign)
    assert (assign.job_id, assign.attempt) == (accepted.job_id, 1)


async def test_without_the_queue_the_wait_for_a_node_in_transit_is_bounded() -> None:
    # queue_timeout_ms 0 (the v1 behaviour): the submit itself waits, at most
    # hub_timeout_ms / 3, for a node to arrive.
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=300, queue_timeout_ms=0))
    await path.node("n1")
    await path.leave("n1")
    client = path.client()
    waiting = asyncio.create_task(path.submit(client, "r1"))
    await asyncio.sleep(0)  # the submit runs up to its wait
    assert not waiting.done() and client.take() == []
    await asyncio.wait_for(waiting, 1.0)  # nothing arrived within 0.1 s
    assert only(client.take(), Rejected).code == "no_node"
    path.clock.advance(CONFIG.node_timeout_ms + 301)  # long after the departure: no wait
    await path.submit(client, "r2")
    assert only(client.take(), Rejected).code == "no_node"


async def test_a_departure_is_waited_for_only_within_its_window() -> None:
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=300))
    await path.node("n1")
    await path.leave("n1")
    path.clock.advance(300 + CONFIG.node_timeout_ms + 1)
    client = path.client()
    await path.submit(client, "r1")
    assert only(client.take(), Rejected).code == "no_node"


async def test_a_failover_that_finds_no_node_just_after_one_left_waits_for_one() -> None:
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=3_000))
    first = await path.node("n1")
    client = path.client()
    await path.submit(client, "r1", preferred_node_id="n1")
    assign = only(first.take(), JobAssign)
    only(client.take(), Accepted)
    await path.node("n2")
    await path.leave("n2")  # drained, on its way to another hub
    await path.drop("n1")  # and the job's node leaves with it: nothing to fail over to
    assert client.take() == []  # not `no_node`: it waits in the queue for a node
    assert len(path.service.home.waiting) == 1
    second = await path.node("n2")  # back (on this hub)
    await path.service.home.pump.pump()
    again = only(second.take(), JobAssign)
    assert (again.job_id, again.attempt) == (assign.job_id, 2)


async def test_a_node_that_drains_itself_is_not_waited_for() -> None:
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=3_000))
    await path.node("n1")
    await path.from_node("n1", Drain())  # the node itself is going away, not moving
    client = path.client()
    await path.submit(client, "r1")
    assert only(client.take(), Rejected).code == "no_node"
    await path.drop("n1")
    await path.submit(client, "r2")
    assert only(client.take(), Rejected).code == "no_node"


async def test_nodes_that_crash_are_not_waited_for() -> None:
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=3_000))
    await path.node("n1")
    await path.drop("n1")  # gone without draining first: not on its way anywhere
    client = path.client()
    await path.submit(client, "r1")
    assert only(client.take(), Rejected).code == "no_node"


async def test_a_job_no_departed_node_could_serve_does_not_wait() -> None:
    path = JobPath(CONFIG.with_changes(hub_timeout_ms=3_000))
    first = await path.node("n1")
    client = path.client()
    await path.submit(client, "r1")
    only(first.take(), JobAssign)
    only(client.take(), Accepted)
    await path.drop("n1")  # the job's own node: excluded from it from now on
    result = only(client.take(), Result)
    assert result.error is not None and result.error.code == "no_node"


class FlakyStore(MemoryStore):
    """A memory store whose request releases fail (the store went away meanwhile)."""

    async def release_request(
        self, request_id: str, job_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        raise StoreUnavailable("the store went away")


async def test_a_failed_release_still_answers_and_leaves_nothing_pending() -> None:
    path = JobPath(store=FlakyStore(hub_id=CONFIG.hub_id))
    await path.node("n1")
    client = path.client()
    await path.service.home.submit(client, Submit("r1", "fr", "es"))
    assert only(client.take(), Rejected).code == "no_node"
    assert path.service.home.table.pending == {}
    # Still bound, to a job that never existed: the resubmit takes it over (and, no node
    # serving the pair either, is refused again: never `duplicate_in_flight`).
    await path.service.home.submit(client, Submit("r1", "fr", "es"))
    assert only(client.take(), Rejected).code == "no_node"
    assert path.service.home.table.pending == {}
    await path.service.home.submit(client, Submit("r1", "en", "de"))  # now servable
    assert only(client.take(), Accepted).duplicate is False


# --- tenancy through the duplicate paths ---------------------------------


async def test_a_watch_joins_only_an_active_job_of_its_own_tenant(path: JobPath) -> None:
    await path.node("n1")
    client = path.client()
    acme = dataclasses.replace(ANONYMOUS, tenant="acme")
    await path.service.home.submit(client, Submit("r1", "en", "de"), acme)
    accepted = only(client.take(), Accepted)
    resubmits = path.service.home.resubmits
    # A watch from another hub naming this job under another tenant: unknown here (the
    # inbound router answers `Unknown`, and that hub resolves the request again).
    stranger = path.client("c2")
    watcher = path.service.home.delivery.watcher(stranger, "r1")
    assert not await resubmits.add_watcher(accepted.job_id, watcher, tenant="globex")
    assert stranger.take() == []
    assert await resubmits.add_watcher(accepted.job_id, watcher, tenant="acme")
    duplicate = only(stranger.take(), Accepted)
    assert duplicate.duplicate is True and duplicate.job_id == accepted.job_id


async def test_an_inherited_job_is_watched_by_its_tenant_and_archived_under_it(
    path: JobPath,
) -> None:
    # A job of an earlier run of this hub id (another boot token) still runs on another
    # hub's node: that hub's `Reconcile` says so, with the job's tenant.
    previous = path.service.home.previous
    job_id = f"{CONFIG.hub_id}.0ldb00t.7"
    assert previous.owns(job_id)
    await previous.reconciled("hub-b", [Held(job_id, 1, "n9", "r7", "acme")])
    client = path.client()
    watcher = path.service.home.delivery.watcher(client, "r7")
    submit = Submit("r7", "en", "de")
    assert not await previous.watch(job_id, watcher, submit, "globex")
    assert client.take() == []
    assert await previous.watch(job_id, watcher, submit, "acme")
    assert only(client.take(), Accepted).job_id == job_id
    await previous.node_event(
        "n9", JobResult(job_id, 1, ok=True, output="done"), request_id="r7", tenant="acme"
    )
    result = only(client.take(), Result)
    assert result.ok and result.job_id == job_id
    record = await path.archive.load(job_id)
    assert record is not None and record.tenant == "acme" and record.orphaned
