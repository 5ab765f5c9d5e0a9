"""The admission queue on the job path: `JobService` over the memory store, recording
links, a manual clock (the harness of test_service.py). The pump runs when a test
says so (`settle`), so each test sees exactly which slot went to which job."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from hub.core.capabilities import NodeCapabilities
from hub.core.config import HubConfig
from hub.core.messages import (
    Accepted,
    Cancel,
    Capabilities,
    CapabilitiesUpdate,
    ErrorInfo,
    JobAccept,
    JobAssign,
    JobCancel,
    JobReject,
    JobResult,
    LanguagePair,
    Rejected,
    Result,
    Submit,
)
from hub.core.snapshot import NodeState
from hub.jobs.home.queue_pump import YIELD_EVERY
from tests.jobs.test_service import CONFIG, JobPath, RecordingLink, only


class QueuePath(JobPath):
    async def settle(self) -> None:
        """Let the pump hand out the slots that freed."""
        await self.service.home.pump.pump()

    async def finish(self, node_id: str, assign: JobAssign, output: Any = "ok") -> None:
        await self.from_node(node_id, JobResult(assign.job_id, assign.attempt, ok=True,
                                                output=output))
        await self.settle()


    async def one_running_one_waiting(
        self, **r2_fields: Any
    ) -> tuple[RecordingLink, RecordingLink, JobAssign, Accepted]:
        """Node n1 (one slot) runs r1, r2 (submitted with `r2_fields`) waits: the node,
        the client, r1's assignment, r2's `accepted`. What each was sent is taken."""
        node = await self.node("n1", slots=1)
        client = self.client()
        await self.submit(client, "r1")
        running = only(node.take(), JobAssign)
        client.take()
        await self.submit(client, "r2", **r2_fields)
        return node, client, running, queued(client, "r2")


def en_de(max_concurrency: int) -> Capabilities:
    """Capabilities of the harness's nodes (en -> de), with another `max_concurrency`."""
    return Capabilities(
        max_concurrency=max_concurrency, language_pairs=[LanguagePair("en", "de")],
        asr_languages=["en"], tts_languages=["de"],
    )


@pytest.fixture
def path() -> QueuePath:
    return QueuePath()


def queued(client: RecordingLink, request_id: str) -> Accepted:
    accepted = only(client.take(), Accepted)
    assert accepted.request_id == request_id and accepted.queued and accepted.node_id == ""
    return accepted


def payloads(messages: list[msgspec.Struct]) -> list[Any]:
    return [m.payload for m in messages if isinstance(m, JobAssign)]


async def test_a_full_node_makes_a_submit_wait_then_run_when_its_slot_frees(
    path: QueuePath,
) -> None:
    node, client, first, waiting = await path.one_running_one_waiting()
    assert node.take() == []  # not beyond its one slot
    record = await path.service.home.job_record(waiting.job_id)
    assert record is not None and (record.state, record.status) == ("queued", "queued")
    assert record.node_id == "" and record.attempts == []
    path.clock.advance(40)
    await path.finish("n1", first)
    second = only(node.take(), JobAssign)
    assert (second.job_id, second.attempt) == (waiting.job_id, 1)
    assert only(client.take(), Result).request_id == "r1"
    record = await path.service.home.job_record(waiting.job_id)
    assert record is not None and record.state == "active"
    await path.finish("n1", second)
    result = only(client.take(), Result)
    assert (result.request_id, result.ok, result.attempts) == ("r2", True, 1)
    wait = path.metrics.queue_wait_seconds
    assert wait.count == 1 and wait.total == pytest.approx(0.040)
    assert len(path.service.home.waiting) == 0


async def test_the_highest_priority_goes_first_then_the_oldest(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    running = only(node.take(), JobAssign)
    for request_id, priority in (("low-old", 0), ("high", 7), ("low-new", 0), ("mid", 3)):
        await path.submit(client, request_id, priority=priority, payload=request_id)
    order = []
    assign = running
    for _ in range(4):
        await path.finish("n1", assign)
        assign = only(node.take(), JobAssign)
        order.append(assign.payload)
    assert order == ["high", "mid", "low-old", "low-new"]


async def test_client_sessions_take_turns_within_a_priority(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    heavy, light = path.client("heavy"), path.client("light")
    await path.submit(heavy, "h-running")
    assign = only(node.take(), JobAssign)
    for i in range(4):
        await path.submit(heavy, f"h{i}", payload=f"h{i}")
    for i in range(2):
        await path.submit(light, f"l{i}", payload=f"l{i}")
    order = []
    for _ in range(6):
        await path.finish("n1", assign)
        assign = only(node.take(), JobAssign)
        order.append(assign.payload)
    assert order == ["h0", "l0", "h1", "l1", "h2", "h3"]


async def test_a_job_that_waits_too_long_ends_with_queue_timeout(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    running = only(node.take(), JobAssign)
    await path.from_node("n1", JobAccept(running.job_id, 1))
    await path.submit(client, "patient")  # the hub's queue_timeout_ms: 30 s
    await path.submit(client, "hurried", queue_timeout_ms=500)
    patient, hurried = [m for m in client.take() if isinstance(m, Accepted)][1:]
    await path.fire_deadlines(490)
    assert [m for m in client.take() if isinstance(m, Result)] == []
    await path.fire_deadlines(20)
    result = only(client.take(), Result)
    assert (result.request_id, result.ok) == ("hurried", False)
    assert result.error is not None and result.error.code == "queue_timeout"
    assert result.attempts == 0 and node.take() == []  # no node ever saw it
    assert path.metrics.jobs.get("queue_timeout") == 1
    record = await path.service.home.job_record(hurried.job_id)
    assert record is not None and (record.state, record.status) == ("finished", "failed")
    await path.fire_deadlines(30_000)  # the running job's own deadlines pass too
    result = next(m for m in client.take() if isinstance(m, Result) and m.request_id == "patient")
    assert result.error is not None
    assert result.error.code == "queue_timeout"
    assert patient.job_id == result.job_id and len(path.service.home.waiting) == 0


async def test_past_max_queued_jobs_a_submit_is_overloaded_and_released() -> None:
    path = QueuePath(CONFIG.with_changes(max_queued_jobs=2))
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    running = only(node.take(), JobAssign)
    await path.submit(client, "w1")
    await path.submit(client, "w2")
    await path.submit(client, "w3")
    answers = client.take()
    assert [type(m) for m in answers] == [Accepted, Accepted, Accepted, Rejected]
    rejected = answers[-1]
    assert (rejected.request_id, rejected.code) == ("w3", "overloaded")
    assert "2 jobs wait" in rejected.message
    assert path.metrics.submits.get("overloaded") == 1
    # The request id was released: once there is room it is accepted afresh.
    await path.finish("n1", running)
    await path.submit(client, "w3")
    answers = client.take()
    assert isinstance(answers[-1], Accepted) and answers[-1].request_id == "w3"
    assert not answers[-1].duplicate


async def test_cancel_of_a_waiting_job(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client, stranger = path.client("c1"), path.client("c2")
    await path.submit(client, "running")
    running = only(node.take(), JobAssign)
    await path.submit(client, "w1")
    waiting = [m for m in client.take() if isinstance(m, Accepted)][-1]
    with pytest.raises(Exception, match="not submitted here"):
        await path.service.home.cancel(stranger, Cancel(waiting.job_id))
    await path.service.home.cancel(client, Cancel(waiting.job_id))
    result = only(client.take(), Result)
    assert result.error is not None and result.error.code == "cancelled"
    assert len(path.service.home.waiting) == 0
    await path.finish("n1", running)
    only(client.take(), Result)
    assert node.take() == []  # the freed slot has nobody waiting


async def test_a_failover_that_finds_every_node_full_waits(path: QueuePath) -> None:
    one, two = await path.node("n1", slots=1), await path.node("n2", slots=1)
    client = path.client()
    await path.submit(client, "a", payload="a")
    await path.submit(client, "b", payload="b")
    assigned = {"n1": only(one.take(), JobAssign), "n2": only(two.take(), JobAssign)}
    client.take()
    # n1's job is rejected: n2 could serve it but is full, so it waits (no no_node).
    rejected_on = assigned["n1"]
    await path.from_node("n1", JobReject(rejected_on.job_id, 1, "busy"))
    assert client.take() == [] and len(path.service.home.waiting) == 1
    record = await path.service.home.job_record(rejected_on.job_id)
    assert record is not None and record.state == "queued" and record.excluded == ["n1"]
    # n1 is free now, but excluded for that job: it stays idle.
    await path.settle()
    assert one.take() == []
    await path.finish("n2", assigned["n2"])
    again = only(two.take(), JobAssign)
    assert (again.job_id, again.attempt) == (rejected_on.job_id, 2)


async def test_queue_timeout_zero_keeps_the_v1_refusal(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    only(node.take(), JobAssign)
    client.take()
    await path.submit(client, "now-or-never", queue_timeout_ms=0)
    rejected = only(client.take(), Rejected)
    assert rejected.code == "no_node" and rejected.reasons == {"at_capacity": 1}


async def test_nothing_that_could_ever_serve_it_is_still_no_node_at_once(
    path: QueuePath,
) -> None:
    await path.node("n1", slots=1)
    client = path.client()
    await path.service.home.submit(client, Submit("r1", "fr", "es"))
    rejected = only(client.take(), Rejected)
    assert rejected.code == "no_node" and rejected.reasons == {"lang_pair_unsupported": 1}
    assert len(path.service.home.waiting) == 0


async def test_a_node_joining_or_raising_its_concurrency_takes_waiting_jobs(
    path: QueuePath,
) -> None:
    first = await path.node("n1", slots=1)
    client = path.client()
    for i in range(4):
        await path.submit(client, f"r{i}", payload=i)
    assert payloads(first.take()) == [0]
    second = await path.node("n2", slots=1)
    await path.settle()
    assert payloads(second.take()) == [1]
    await path.from_node("n1", CapabilitiesUpdate(en_de(3)))
    await path.settle()
    assert payloads(first.take()) == [2, 3]
    assert len(path.service.home.waiting) == 0


async def test_a_result_hands_its_slot_to_the_next_job_before_it_goes_to_its_client(
    path: QueuePath,
) -> None:
    node, client, first, _ = await path.one_running_one_waiting(payload="next")
    path.journal.clear()
    # No pump round of its own (no `settle`): the result's step starts the next job.
    await path.from_node("n1", JobResult(first.job_id, 1, ok=True))
    assert [(peer, type(m)) for peer, m in path.journal] == [
        ("n-n1", JobAssign), ("c1", Result),
    ]
    assert payloads(node.take()) == ["next"]
    assert only(client.take(), Result).request_id == "r1"


async def test_one_pump_round_at_a_time_and_the_running_one_takes_new_marks(
    path: QueuePath,
) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    total = YIELD_EVERY + 50
    for i in range(total + 1):
        await path.submit(client, f"r{i}", payload=i)
    running = only(node.take(), JobAssign)
    # Marks n1: room for the rest.
    await path.from_node("n1", CapabilitiesUpdate(en_de(total)))
    pump = path.service.home.pump
    round_ = asyncio.create_task(pump.pump())
    await asyncio.sleep(0)  # the round's first step: YIELD_EVERY dispatches, then it yields
    assert len(node.sent) == YIELD_EVERY and not round_.done()
    # Meanwhile a result frees a slot: no second round starts (neither from the result's
    # step nor from another call), the running one takes the mark when it resumes.
    await path.from_node("n1", JobResult(running.job_id, 1, ok=True))
    assert await pump.pump() == 0
    assert await round_ == total
    assigned = payloads(node.take())
    assert assigned == list(range(1, total + 1))  # each job once, oldest first
    assert len(path.service.registry.registered["n1"].assignments) == total
    assert len(path.service.home.waiting) == 0


async def test_a_failing_pump_round_does_not_cost_the_result_that_freed_the_slot(
    path: QueuePath, monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, client, first, _ = await path.one_running_one_waiting(payload="next")

    async def broken(job: object) -> bool:
        raise RuntimeError("a bug in starting a waiting job")

    monkeypatch.setattr(path.service.home.attempts, "start_waiting", broken)
    await path.from_node("n1", JobResult(first.job_id, 1, ok=True, output="done"))
    # The job the round failed to start ends with a clear error (it does not hang in
    # limbo until its deadline), and the result that freed the slot still arrives.
    failed, done = client.take()
    assert isinstance(failed, Result) and isinstance(done, Result)
    assert (failed.request_id, failed.ok, failed.error) == (
        "r2", False, ErrorInfo("internal_error", "the hub failed to start the job")
    )
    assert (done.request_id, done.ok, done.output) == ("r1", True, "done")
    assert node.take() == [] and len(path.service.home.waiting) == 0
    assert path.service.home.jobs == {}
    assert path.metrics.jobs.get("internal_error") == 1
    # Once the fault is gone, the next job runs on the freed slot.
    monkeypatch.undo()
    await path.submit(client, "r3", payload="later")
    assert payloads(node.take()) == ["later"]


async def test_a_new_submit_does_not_jump_the_line(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    running = only(node.take(), JobAssign)
    await path.submit(client, "waiting", payload="waiting")
    # The slot frees (a cancel: the background pump hands it out, not the step that
    # freed it); before the pump runs, a new submit arrives.
    await path.service.home.cancel(client, Cancel(job_id=running.job_id))
    assert [type(m) for m in node.take()] == [JobCancel]
    await path.submit(client, "late", payload="late")
    late = [m for m in client.take() if isinstance(m, Accepted)][-1]
    assert late.queued
    await path.settle()
    assert payloads(node.take()) == ["waiting"]


async def test_a_duplicate_of_a_waiting_job_is_told_it_waits(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    first, second = path.client("c1"), path.client("c2")
    await path.submit(first, "running")
    running = only(node.take(), JobAssign)
    await path.submit(first, "w")
    original = [m for m in first.take() if isinstance(m, Accepted)][-1]
    await path.submit(second, "w")
    duplicate = only(second.take(), Accepted)
    assert (duplicate.job_id, duplicate.duplicate, duplicate.queued) == (
        original.job_id, True, True
    )
    await path.finish("n1", running)
    assign = only(node.take(), JobAssign)
    await path.finish("n1", assign)
    assert only(second.take(), Result).job_id == original.job_id


async def test_the_clients_timeout_also_ends_a_waiting_job(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    only(node.take(), JobAssign)
    await path.submit(client, "w", timeout_ms=300)
    client.take()
    await path.fire_deadlines(310)
    result = only(client.take(), Result)
    assert result.error is not None and result.error.code == "timeout"
    assert node.take() == [] and len(path.service.home.waiting) == 0


async def test_shutdown_fails_waiting_jobs_with_hub_shutdown(path: QueuePath) -> None:
    node = await path.node("n1", slots=1)
    client = path.client()
    await path.submit(client, "running")
    only(node.take(), JobAssign)
    await path.submit(client, "w")
    client.take()
    await path.service.home.shutdown()
    codes = sorted(m.error.code for m in client.take() if isinstance(m, Result) and m.error)
    assert codes == ["hub_shutdown", "hub_shutdown"]
    assert len(path.service.home.waiting) == 0


def test_config_validates_the_queue_keys() -> None:
    with pytest.raises(Exception, match="queue_timeout_ms"):
        HubConfig(queue_timeout_ms=-1)
    with pytest.raises(Exception, match="max_queued_jobs"):
        HubConfig(max_queued_jobs=-5)
    assert CONFIG.queue_timeout(None) == 30_000 and CONFIG.queue_timeout(0) == 0


async def test_an_owner_hubs_refusal_for_capacity_puts_the_job_back_in_line(
    path: QueuePath,
) -> None:
    """Cross-instance, as the home sees it: a node of another hub, a `Refused`
    (at_capacity) for the dispatch, then the owner's load update freeing the slot."""
    caps = NodeCapabilities.from_wire(Capabilities(
        max_concurrency=1, language_pairs=[LanguagePair("en", "de")], asr_languages=["en"],
        tts_languages=["de"],
    ))
    fleet = path.service.home.attempts.fleet
    fleet.put(NodeState.create("remote", caps, hub_id="other"))
    client = path.client()
    await path.submit(client, "r1")
    accepted = only(client.take(), Accepted)
    assert accepted.node_id == "remote" and not accepted.queued
    # The home counts its own dispatch until the owner publishes the node's load.
    assert fleet.snapshot.get("remote").running == 1  # type: ignore[union-attr]
    await path.service.home.events.attempt_failed(
        accepted.job_id, 1, "at_capacity", node_id="remote"
    )
    record = await path.service.home.job_record(accepted.job_id)
    assert record is not None and record.state == "queued"
    assert record.excluded == [] and [a.outcome for a in record.attempts] == ["at_capacity"]
    assert client.take() == []  # no failure, no no_node
    await path.settle()
    assert len(path.service.home.waiting) == 1  # the view still says full: it waits
    fleet.set_running("remote", 0)  # the owner's update: a slot freed
    await path.settle()
    assert len(path.service.home.waiting) == 0
    job = path.service.home.jobs[accepted.job_id]
    assert (job.attempt, job.node_id, job.requeued) == (2, "remote", 1)
    # Requeues do not spend max_attempts: three more refusals still leave it waiting.
    for attempt in (2, 3, 4):
        await path.service.home.events.attempt_failed(
            accepted.job_id, attempt, "at_capacity", node_id="remote"
        )
        fleet.set_running("remote", 0)
        await path.settle()
    assert (job.attempt, job.requeued, job.queued) == (5, 4, False)


async def test_a_full_queue_makes_room_for_another_session_not_for_the_same_backlog() -> None:
    path = QueuePath(CONFIG.with_changes(max_queued_jobs=4))
    node = await path.node("n1", slots=1)
    heavy, light = path.client("heavy"), path.client("light")
    await path.submit(heavy, "running")
    running = only(node.take(), JobAssign)
    for i in range(4):
        await path.submit(heavy, f"h{i}")
    await path.submit(light, "l0")
    assert only(light.take(), Rejected).code == "overloaded"  # the queue is full
    await path.finish("n1", running)  # h0 leaves the queue: one place frees
    heavy.take()
    await path.submit(light, "l0")
    assert only(light.take(), Accepted).queued
    # Two sessions wait now: each may hold half the queue, and heavy holds 3.
    await path.submit(heavy, "h4")
    assert only(heavy.take(), Rejected).code == "overloaded"
