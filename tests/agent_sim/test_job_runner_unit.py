"""`JobRunner` without sockets: recording links, a manual clock, handlers the test holds.

Each test serves one or more `RecordingLink`s as the connection loop does (the
jobs of a link run in its task group; when the link ends, the jobs still
running are cancelled) and asserts the exact messages each link was sent and
the runner's counters. The only timer left real is a fault's accept delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from loguru import logger

from agent_sim.behaviour import NO_FAULT, FaultDecision
from agent_sim.frames import Frames
from agent_sim.job import FaultPolicy, JobContext, JobFailed, JobHandler, JobRejected
from agent_sim.jobs import REPLAY_WINDOW_S, JobRunner
from agent_sim.state import AgentState
from hub.core.messages import (
    ErrorInfo,
    JobAccept,
    JobAssign,
    JobProgress,
    JobReject,
    JobResult,
)
from tests.agent_sim.fakes import (
    ABNORMAL,
    CAPS,
    TIMEOUT_S,
    Gate,
    ManualClock,
    RecordingLink,
    job_assign,
)

COUNTERS = ("accepted", "rejected", "completed", "failed", "cancelled", "lost")


async def never_called(ctx: JobContext) -> Any:
    raise AssertionError("the handler must not run")


async def echo(ctx: JobContext) -> Any:
    return {"echo": ctx.payload, "job": ctx.job_id}


class Policy:
    """A `FaultPolicy` with a decision per job id; records what it was asked about."""

    def __init__(self, **decisions: FaultDecision) -> None:
        self.decisions = decisions
        self.seen: list[str] = []

    def on_assign(self, assign: JobAssign) -> FaultDecision:
        self.seen.append(assign.job_id)
        return self.decisions.get(assign.job_id, NO_FAULT)


class Agent:
    """A `JobRunner` with the parts `NodeAgent` gives it and a manual clock."""

    def __init__(
        self, handler: JobHandler, *, max_concurrency: int = 2, faults: FaultPolicy | None = None
    ) -> None:
        log = logger.bind(node_id="n1")
        caps = msgspec.structs.replace(CAPS, max_concurrency=max_concurrency)
        self.state = AgentState(node_id="n1", capabilities=caps, log=log)
        self.frames = Frames(node_id="n1", log=log)
        self.clock = ManualClock()
        self.results: list[JobResult] = []
        self.jobs = JobRunner(
            self.state, self.frames, handler=handler, faults=faults,
            on_result=self.results.append, clock=self.clock,
        )
        self._link: RecordingLink | None = None
        self._tg: asyncio.TaskGroup | None = None

    @asynccontextmanager
    async def serving(self, link: RecordingLink) -> AsyncIterator[None]:
        """Serve `link` as the connection loop does; leaving is the link's connection
        dropping (unless it ended already): every job still running is cancelled and
        awaited."""
        self.frames.current = self._link = link
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    yield
                finally:
                    link.ended(ABNORMAL)
                    self.jobs.cancel_all()
        finally:
            self.jobs.forget_cancels()
            self.frames.current = self._link = self._tg = None

    async def assign(self, job_id: str, attempt: int = 1, payload: Any = None) -> None:
        """The hub's `job_assign` arrives on the link being served."""
        assert self._link is not None and self._tg is not None, "not serving a link"
        await self.jobs.assign(self._link, self._tg, job_assign(job_id, attempt, payload))

    def counters(self) -> dict[str, int]:
        return {name: getattr(self.jobs, name) for name in COUNTERS}


def counts(**nonzero: int) -> dict[str, int]:
    return {name: nonzero.get(name, 0) for name in COUNTERS}


def kinds(link: RecordingLink) -> list[tuple[str, str, int]]:
    """(message type, job id, attempt) of everything `link` was sent."""
    found = []
    for message in link.sent:
        assert isinstance(message, JobAccept | JobReject | JobProgress | JobResult), message
        found.append((type(message).__name__, message.job_id, message.attempt))
    return found


async def idle(agent: Agent) -> None:
    await asyncio.wait_for(agent.jobs.wait_idle(), TIMEOUT_S)


# --- accept and result ------------------------------------------------------------------


async def test_an_accepted_job_sends_its_accept_then_its_result() -> None:
    seen: list[JobContext] = []

    async def translate(ctx: JobContext) -> Any:
        seen.append(ctx)
        return {"text": f"[{ctx.src_lang}->{ctx.tgt_lang}] {ctx.payload['text']}"}

    agent = Agent(translate)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1", payload={"text": "hi"})
        assert agent.jobs.running == 1  # held from the assign on, before its accept
        await link.next_sent(JobResult)
    result = JobResult("j1", 1, ok=True, output={"text": "[en->zh] hi"})
    assert link.sent == [JobAccept("j1", 1), result]
    (ctx,) = seen
    assert (ctx.node_id, ctx.job_id, ctx.attempt, ctx.session_id) == ("n1", "j1", 1, "s1")
    assert agent.results == [result]
    assert agent.counters() == counts(accepted=1, completed=1)
    assert agent.jobs.running == 0
    await idle(agent)


async def test_a_repeated_job_assign_for_a_held_attempt_is_ignored() -> None:
    gate = Gate()
    agent = Agent(gate)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        assert await gate.wait_started() == "j1"
        await agent.assign("j1")  # the same attempt again: ignored
        await agent.assign("j1", attempt=2)  # a new attempt is a new job
        assert await gate.wait_started() == "j1"
        gate.release("j1")
        await link.next_sent(JobAccept)
        await link.next_sent(JobAccept)
        await link.next_sent(JobResult)
        await link.next_sent(JobResult)
    assert kinds(link) == [
        ("JobAccept", "j1", 1), ("JobAccept", "j1", 2), ("JobResult", "j1", 1),
        ("JobResult", "j1", 2),
    ]
    assert agent.counters() == counts(accepted=2, completed=2)


# --- rejects ---------------------------------------------------------------------------


async def test_a_draining_agent_rejects_without_asking_the_policy_or_the_handler() -> None:
    policy = Policy()
    agent = Agent(never_called, faults=policy)
    agent.state.draining = True
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
    assert link.sent == [JobReject("j1", 1, "draining")]
    assert policy.seen == []
    assert agent.counters() == counts(rejected=1)
    assert agent.jobs.running == 0


async def test_at_max_concurrency_a_job_is_rejected_busy_until_a_slot_frees() -> None:
    gate = Gate()
    policy = Policy()
    agent = Agent(gate, max_concurrency=2, faults=policy)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await agent.assign("j2")
        assert {await gate.wait_started(), await gate.wait_started()} == {"j1", "j2"}
        await agent.assign("j3")
        assert link.sent[-1] == JobReject("j3", 1, "busy")
        gate.release("j1")
        assert (await link.next_sent(JobResult)).job_id == "j1"
        await agent.assign("j4")
        assert await gate.wait_started() == "j4"
        gate.release("j2")
        gate.release("j4")
        await link.next_sent(JobResult)
        await link.next_sent(JobResult)
    assert kinds(link)[:5] == [
        ("JobAccept", "j1", 1), ("JobAccept", "j2", 1), ("JobReject", "j3", 1),
        ("JobResult", "j1", 1), ("JobAccept", "j4", 1),
    ]
    assert policy.seen == ["j1", "j2", "j4"]  # not consulted for a job it could not take
    assert agent.counters() == counts(accepted=3, rejected=1, completed=3)


async def test_a_cancelled_job_frees_its_slot_at_once() -> None:
    # The hub freed the slot when it sent job_cancel and may fill it in the same
    # breath, before the cancelled handler has wound down.
    gate = Gate()
    agent = Agent(gate, max_concurrency=1)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await gate.wait_started()
        agent.jobs.cancel("j1", 1)
        assert agent.jobs.running == 0
        await agent.assign("j2")
        assert await gate.wait_started() == "j2"
        gate.release("j2")
        await link.next_sent(JobResult)
    assert link.sent == [JobAccept("j1", 1), JobAccept("j2", 1),
                         JobResult("j2", 1, ok=True, output={"done": "j2"})]
    assert gate.cancelled == ["j1"]
    assert agent.counters() == counts(accepted=2, completed=1, cancelled=1)


async def test_the_policy_rejects_a_job_with_its_reason() -> None:
    policy = Policy(j1=FaultDecision(reject_reason="simulated_reject"))
    agent = Agent(never_called, faults=policy)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
    assert link.sent == [JobReject("j1", 1, "simulated_reject")]
    assert policy.seen == ["j1"]
    assert agent.counters() == counts(rejected=1)


async def test_a_handler_giving_the_job_back_sends_job_reject_after_its_accept() -> None:
    async def out_of_memory(ctx: JobContext) -> Any:
        raise JobRejected("gpu_oom")

    agent = Agent(out_of_memory)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await link.next_sent(JobReject)
    assert link.sent == [JobAccept("j1", 1), JobReject("j1", 1, "gpu_oom")]
    assert agent.results == []  # not a result: the hub runs the job elsewhere
    assert agent.counters() == counts(accepted=1, rejected=1)


# --- failures ---------------------------------------------------------------------------


async def test_a_handler_raising_job_failed_reports_its_code_and_message() -> None:
    async def bad_input(ctx: JobContext) -> Any:
        raise JobFailed("bad_audio", "too short")

    agent = Agent(bad_input)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        result = await link.next_sent(JobResult)
    assert result == JobResult(
        "j1", 1, ok=False, error=ErrorInfo(code="bad_audio", message="too short")
    )
    assert agent.results == [result]
    assert agent.counters() == counts(accepted=1, failed=1)


async def test_an_unexpected_exception_is_a_handler_error_logged_at_warning() -> None:
    async def buggy(ctx: JobContext) -> Any:
        raise RuntimeError("model exploded")

    seen: list[Any] = []
    sink = logger.add(lambda message: seen.append(message.record), level="WARNING")
    agent = Agent(buggy)
    link = RecordingLink()
    try:
        async with agent.serving(link):
            await agent.assign("j1")
            result = await link.next_sent(JobResult)
    finally:
        logger.remove(sink)
    assert result == JobResult(
        "j1", 1, ok=False,
        error=ErrorInfo(code="handler_error", message="RuntimeError: model exploded"),
    )
    assert agent.counters() == counts(accepted=1, failed=1)
    (record,) = [r for r in seen if r["extra"].get("event") == "handler_error"]
    assert record["extra"]["job_id"] == "j1" and record["exception"] is not None


async def test_an_output_the_codec_cannot_carry_is_a_handler_error() -> None:
    class Opaque:
        pass

    async def opaque(ctx: JobContext) -> Any:
        return {"model": Opaque()}

    agent = Agent(opaque)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        result = await link.next_sent(JobResult)
    assert not result.ok and result.error is not None
    assert result.error.code == "handler_error"
    assert result.error.message.startswith("output not encodable")
    assert agent.counters() == counts(accepted=1, failed=1)


# --- progress ---------------------------------------------------------------------------


async def test_progress_goes_out_in_order_between_the_accept_and_the_result() -> None:
    async def stages(ctx: JobContext) -> Any:
        for step in range(4):
            await ctx.progress({"step": step})
        return "done"

    agent = Agent(stages)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await link.next_sent(JobResult)
    assert link.sent == [
        JobAccept("j1", 1),
        *(JobProgress("j1", 1, {"step": step}) for step in range(4)),
        JobResult("j1", 1, ok=True, output="done"),
    ]


async def test_progress_of_concurrent_jobs_stays_in_each_jobs_order() -> None:
    turns = {"a": asyncio.Event(), "b": asyncio.Event()}
    turns["a"].set()  # the two jobs take turns, `a` first

    async def interleaved(ctx: JobContext) -> Any:
        mine, theirs = turns[ctx.job_id], turns["b" if ctx.job_id == "a" else "a"]
        for step in range(3):
            await mine.wait()
            mine.clear()
            await ctx.progress(step)
            theirs.set()
        return ctx.job_id

    agent = Agent(interleaved)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("a")
        await agent.assign("b")
        await link.next_sent(JobResult)
        await link.next_sent(JobResult)
    progress = [(m.job_id, m.data) for m in link.sent if isinstance(m, JobProgress)]
    assert progress == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    for job_id in ("a", "b"):
        mine = [kind for kind, job, _ in kinds(link) if job == job_id]
        assert mine == ["JobAccept", "JobProgress", "JobProgress", "JobProgress", "JobResult"]


# --- cancels ----------------------------------------------------------------------------


async def test_job_cancel_cancels_the_handler_and_sends_nothing_for_it() -> None:
    gate = Gate()
    agent = Agent(gate)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await gate.wait_started()
        agent.jobs.cancel("j1", 1)
        assert agent.jobs.running == 0
        await idle(agent)
        agent.jobs.cancel("j1", 1)  # no longer held: nothing happens
        agent.jobs.cancel("j9", 1)
    assert gate.cancelled == ["j1"]
    assert link.sent == [JobAccept("j1", 1)]
    assert agent.results == []
    assert agent.counters() == counts(accepted=1, cancelled=1)


async def test_a_handler_that_swallows_job_cancel_still_sends_no_result() -> None:
    async def stubborn(ctx: JobContext) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept going"

    agent = Agent(stubborn)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await link.next_sent(JobAccept)
        agent.jobs.cancel("j1", 1)
        await idle(agent)
    assert link.sent == [JobAccept("j1", 1)]
    assert agent.counters() == counts(accepted=1, cancelled=1)


async def test_a_delayed_accept_waits_and_a_cancel_during_the_delay_sends_nothing() -> None:
    delay = FaultDecision(accept_delay_s=0.05)
    gate = Gate()
    agent = Agent(gate, faults=Policy(j1=delay, j2=delay))
    link = RecordingLink()
    loop = asyncio.get_running_loop()
    async with agent.serving(link):
        started = loop.time()
        await agent.assign("j1")
        assert await gate.wait_started() == "j1"
        assert loop.time() - started >= 0.04  # the loop may wake a little early
        await agent.assign("j2")
        agent.jobs.cancel("j2", 1)
        gate.release("j1")
        await link.next_sent(JobResult)
        await idle(agent)
    assert link.sent == [JobAccept("j1", 1), JobResult("j1", 1, ok=True, output={"done": "j1"})]
    assert gate.started.empty()  # j2's handler never ran
    assert agent.counters() == counts(accepted=1, completed=1, cancelled=1)


# --- the link ends ----------------------------------------------------------------------


async def test_the_jobs_of_a_dropped_link_are_lost_and_nothing_is_sent_for_them() -> None:
    gate = Gate()
    agent = Agent(gate)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await agent.assign("j2")
        await gate.wait_started()
        await gate.wait_started()
        link.ended(ABNORMAL)
    assert sorted(gate.cancelled) == ["j1", "j2"]
    assert link.sent == [JobAccept("j1", 1), JobAccept("j2", 1)]
    assert agent.counters() == counts(accepted=2, lost=2)
    assert agent.jobs.running == 0
    await idle(agent)


async def test_a_job_cancelled_before_its_task_started_leaves_the_table() -> None:
    # The connection drops in the same loop turn as the job_assign: the job's task is
    # cancelled before its first step, so its body (and its `finally`) never runs.
    agent = Agent(never_called)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        assert agent.jobs.running == 1
        agent.jobs.cancel_all()  # same step: the task has not started
    assert agent.jobs.running == 0
    assert agent.counters() == counts(lost=1)
    assert link.sent == []
    await idle(agent)  # `drain` does not wait for it


async def test_a_job_that_outlives_its_link_sends_nothing_and_leaves_nothing_to_replay() -> None:
    # A handler that swallows the cancellation of a dropped link finishes anyway: its
    # progress and result must go nowhere, neither on that link nor on the next one.
    async def stubborn(ctx: JobContext) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await ctx.progress("late")
            return "late"

    agent = Agent(stubborn)
    first, second = RecordingLink("first"), RecordingLink("second")
    async with agent.serving(first):
        await agent.assign("j1")
        await first.next_sent(JobAccept)
    assert first.unread() == []
    assert agent.results == []
    async with agent.serving(second):
        assert await agent.jobs.replay(second) == 0
    assert second.sent == []


async def test_a_simulated_crash_aborts_the_jobs_link_and_nothing_more_is_written_to_it() -> None:
    async def finishes_late(ctx: JobContext) -> Any:
        await link.closed.wait()  # runs on past the crash, before the loop cancels it
        await ctx.progress("after the crash")
        return "after the crash"

    agent = Agent(finishes_late, faults=Policy(j1=FaultDecision(crash_after_s=0.0)))
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await asyncio.wait_for(link.closed.wait(), TIMEOUT_S)
        assert link.aborted and link.close_code == ABNORMAL
        assert agent.frames.current is None
        await idle(agent)
    assert link.sent == [JobAccept("j1", 1)]  # (RecordingLink fails a write after abort)
    assert agent.results == []


async def test_a_simulated_crash_cancels_the_running_job_as_a_lost_one() -> None:
    gate = Gate()
    agent = Agent(gate, faults=Policy(j1=FaultDecision(crash_after_s=0.0)))
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await gate.wait_started()
        await asyncio.wait_for(link.closed.wait(), TIMEOUT_S)
    assert link.sent == [JobAccept("j1", 1)]
    assert gate.cancelled == ["j1"]
    assert agent.counters() == counts(accepted=1, lost=1)


# --- replay after the link changed ----------------------------------------------------------


async def test_results_of_the_last_seconds_are_replayed_on_the_next_link() -> None:
    agent = Agent(echo)
    first, second, third = RecordingLink("first"), RecordingLink("second"), RecordingLink("third")
    async with agent.serving(first):
        await agent.assign("old")
        old = await first.next_sent(JobResult)
        agent.jobs.confirmed(agent.jobs.now_s())  # the hub answered a ping after it
        agent.clock.advance(REPLAY_WINDOW_S - 1.0)
        await agent.assign("recent")
        recent = await first.next_sent(JobResult)
    agent.clock.advance(2.0)  # `old` is now past the window, `recent` is not
    async with agent.serving(second):
        assert await agent.jobs.replay(second) == 1
    assert second.sent == [msgspec.structs.replace(recent, replayed=True)]
    assert recent.replayed is False and old.job_id == "old"
    # Kept until the new hub shows it read them; then, once past the window, forgotten.
    agent.jobs.confirmed(agent.jobs.now_s())
    agent.clock.advance(REPLAY_WINDOW_S + 1.0)
    async with agent.serving(third):
        assert await agent.jobs.replay(third) == 0
    assert third.sent == []


async def test_a_result_a_frozen_hub_never_read_is_replayed_however_old() -> None:
    """The hub stopped answering pings before the result: it may hold it unread for as
    long as it is frozen, past any fixed window."""
    agent = Agent(echo)
    first, second = RecordingLink("first"), RecordingLink("second")
    async with agent.serving(first):
        agent.jobs.confirmed(agent.jobs.now_s())  # the last ping the hub answered
        agent.clock.advance(0.1)
        await agent.assign("unread")
        unread = await first.next_sent(JobResult)
    agent.clock.advance(10 * REPLAY_WINDOW_S)
    async with agent.serving(second):
        assert await agent.jobs.replay(second) == 1
    assert second.sent == [msgspec.structs.replace(unread, replayed=True)]


async def test_a_failed_result_is_replayed_too() -> None:
    async def failing(ctx: JobContext) -> Any:
        raise JobFailed("bad_audio")

    agent = Agent(failing)
    first, second = RecordingLink("first"), RecordingLink("second")
    async with agent.serving(first):
        await agent.assign("j1")
        result = await first.next_sent(JobResult)
    async with agent.serving(second):
        await agent.jobs.replay(second)
    assert result.error == ErrorInfo(code="bad_audio")
    assert second.sent == [msgspec.structs.replace(result, replayed=True)]


# --- draining -------------------------------------------------------------------------------


async def test_draining_rejects_new_jobs_and_wait_idle_waits_for_the_running_ones() -> None:
    gate = Gate()
    agent = Agent(gate)
    link = RecordingLink()
    async with agent.serving(link):
        await agent.assign("j1")
        await agent.assign("j2")
        await gate.wait_started()
        await gate.wait_started()
        agent.state.draining = True
        await agent.assign("j3")
        assert link.sent[-1] == JobReject("j3", 1, "draining")
        waiting = asyncio.create_task(agent.jobs.wait_idle())
        await asyncio.sleep(0)  # one loop turn: an idle runner's wait would be done now
        assert not waiting.done()
        gate.release("j1")
        await link.next_sent(JobResult)
        await asyncio.sleep(0)
        assert not waiting.done()  # j2 still runs
        gate.release("j2")
        await asyncio.wait_for(waiting, TIMEOUT_S)
    assert link.sent == [
        JobAccept("j1", 1), JobAccept("j2", 1), JobReject("j3", 1, "draining"),
        JobResult("j1", 1, ok=True, output={"done": "j1"}),
        JobResult("j2", 1, ok=True, output={"done": "j2"}),
    ]
    assert agent.counters() == counts(accepted=2, rejected=1, completed=2)
    await idle(agent)  # at once when nothing runs
