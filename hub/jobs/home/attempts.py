"""`Attempts`: a job's attempts on nodes, its deadlines, and its one terminal result.

An attempt is assigned to the node the unified selector picked, handed to the
node's owner (this hub's owner role through `Slots`, or a `Dispatch` envelope to the hub
that owns the node), and watched by deadlines: the accept deadline
(`accept_timeout_ms`), then the attempt's own (`job_timeout_ms`), and the
job's overall one when the client set `timeout_ms`. A reject, a deadline, the
node dropping or its hub dying fails the attempt; the next one selects again
with that node excluded, up to `max_attempts`, then the job finishes with one
failed `result`. The exclusion is soft (`_soften`): when only excluded nodes
could serve the job, the next attempt may go back to one of them. `finish` is
the only way a job ends: it sends the result to every watcher exactly once and
archives the record.

A job waits instead (`wait`) when every node that could serve it
is full: on its first dispatch (`Admission`), on a failover, and when the
owner hub of a remote node refuses it for capacity (then it is not a failed
attempt: no exclusion, no `max_attempts` spent). `QueuePump` starts it again
(`start_waiting`) when a slot frees; its queue deadline ends it with
`queue_timeout`.

A failover that finds no capable node online at all, shortly after one that
could serve the job drained (it is on its way to another hub: `Transit`),
polls for it briefly (`TRANSIT` deadlines, up to `Transit.wait_s`)
instead of failing `no_node`. The two waits never overlap: a fleet that is
merely full is the queue's.

Each method changes all state before its first `await` (decide, then
perform), so an interleaved message always sees a consistent job.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import msgspec
from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.capabilities import AT_CAPACITY, EXCLUDED, Requirements
from hub.core.config import HubConfig
from hub.core.envelopes import Dispatch, Revoke
from hub.core.fleet_view import FleetView
from hub.core.job_state import (
    ACCEPT_TIMEOUT,
    ATTEMPT_TIMEOUT,
    BAD_OUTPUT,
    HUB_LOST,
    Job,
    JobStatus,
)
from hub.core.messages import ErrorInfo, JobAssign, hub_silence_ms
from hub.core.metrics import Metrics
from hub.core.selector import Selection, select_node
from hub.jobs.home.answers import SubmitReply
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.job_log import OFF, JobLog
from hub.jobs.home.stranded import StrandedAttempts
from hub.jobs.home.table import JobTable
from hub.jobs.home.transit import Transit
from hub.jobs.home.waiting import WaitingJobs
from hub.jobs.roles import Slots
from hub.runtime.deadline_loop import Clock, DeadlineLoop
from hub.store.archive import JobArchive

ACCEPT = "accept"
ATTEMPT = "attempt"
OVERALL = "overall"
QUEUE = "queue"
TRANSIT = "transit"
TRANSIT_POLL_MS = 50
"""How often a job waiting for a node in transit selects again."""
Deadline = tuple[str, int, str]
"""(job_id, attempt, kind) of a pending deadline."""


class Attempts:
    def __init__(
        self,
        *,
        config: HubConfig,
        table: JobTable,
        fleet: FleetView,
        slots: Slots,
        peers: Peers,
        delivery: ClientDelivery,
        archive: JobArchive,
        metrics: Metrics,
        clock: Clock,
        rng: random.Random,
        waiting: WaitingJobs,
        transit: Transit,
        job_log: JobLog | None = None,
    ) -> None:
        self.config = config
        self.log = job_log if job_log is not None else JobLog(config.hub_id, OFF)
        """Each job's story."""
        self.transit = transit
        self._in_transit: dict[str, int] = {}
        """Jobs waiting for a node in transit: until when they may (monotonic ms)."""
        self.hub_id = config.hub_id
        self._remote_slack_ms = config.hub_timeout_ms
        """How much later this hub times out an attempt on another hub's node: the owner
        times the node itself (`OwnerDeadlines`), and its reports may be late by up to the
        time that hub is allowed to be silent before it is excluded (then the attempt
        fails `hub_lost` at once)."""
        self.table = table
        self.fleet = fleet
        self.slots = slots
        self.peers = peers
        self.delivery = delivery
        self.archive = archive
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.waiting = waiting
        self.deadlines: DeadlineLoop[Deadline] = DeadlineLoop(clock, self._deadline_passed)
        self.stranded = StrandedAttempts(
            hub_id=config.hub_id, fleet=fleet, peers=peers, table=table, clock=clock,
            # Time for a node to notice that its hub went silent and register with
            # another hub: its next ping (a heartbeat away), the protocol's silence
            # for it, then reconnecting. The wait starts when the hub is excluded, at
            # least hub_timeout_ms / 2 after it froze, so hub_timeout_ms on top leaves
            # the node 1.5 hub_timeout_ms to reconnect; a shorter wait failed an
            # attempt over just as its node arrived with the result.
            wait_ms=(
                config.heartbeat_interval_ms + hub_silence_ms(config.heartbeat_interval_ms)
                + config.hub_timeout_ms
            ),
            # Replayed results follow a node's registration at once; forwarding them
            # takes a store round trip or two.
            replay_grace_ms=max(500, config.hub_timeout_ms // 3),
            fail_over=self._unstrand,
        )
        """Attempts whose node's hub went silent: their results may still come."""

    def __repr__(self) -> str:
        return f"Attempts(hub={self.hub_id!r}, {self.deadlines!r})"

    # --- choosing and assigning --------------------------------------------------------

    def select(self, req: Requirements) -> Selection:
        """The unified selector on the current snapshot, timed and counted."""
        started = time.perf_counter_ns()
        selection = select_node(self.fleet.snapshot, req, self.rng)
        self.metrics.selection_seconds.observe((time.perf_counter_ns() - started) / 1e9)
        if selection.node_id is None:
            for reason, count in selection.reasons.items():
                self.metrics.no_node.inc(reason, amount=count)
        return selection

    def assign(self, job: Job, node_id: str) -> JobAssign:
        """Start the job's next attempt on `node_id` (state only); the node's message."""
        config = self.config
        state = self.fleet.snapshot.get(node_id)
        node_hub = state.hub_id if state is not None else self.hub_id
        now = self.clock.now_ms()
        attempt_deadline = now + config.accept_timeout_ms + config.job_timeout_ms
        return job.assign(node_id, node_hub, now, attempt_deadline, wall_ms=self.clock.wall_ms())

    def dispatch(self, job: Job, assign: JobAssign) -> Dispatch:
        """The envelope that hands an attempt to the hub owning its node."""
        return Dispatch(
            self.hub_id, node_id=job.node_id, request_id=job.request_id, assign=assign,
            tenant=job.tenant,
        )

    def revocation(self, job: Job, reason: str) -> Revoke:
        return Revoke(
            self.hub_id, node_id=job.node_id, job_id=job.job_id, attempt=job.attempt, reason=reason
        )

    # --- running attempts -----------------------------------------------------------

    async def send(
        self, job: Job, assign: JobAssign, *, reply: SubmitReply | None = None,
        dispatched: bool = False,
    ) -> None:
        """Hand the assigned attempt to its node; on a refusal, go straight to the next.

        `reply` is the submitter's, on the first attempt: it gets `accepted`
        after the slot is held and before the node hears of the job, so that
        `accepted` always precedes the job's `result`. `dispatched`: the
        `Dispatch` to another hub already went out (with the request binding).
        """
        now = self.clock.now_ms()
        if job.node_hub != self.hub_id:
            # The owner hub holds the slots: it takes one or answers `Refused` (which
            # does not spend the attempt budget). Not counting the slot here as well:
            # with short jobs, increments between two coalesced load updates add up
            # past the node's real load and the hub would refuse work it could place.
            # The owner times the node's accept (`OwnerDeadlines`); this deadline is the
            # backstop for a Dispatch or a report the store lost (`_remote_slack_ms`).
            self.deadlines.push(
                now + self.config.accept_timeout_ms + self._remote_slack_ms,
                (job.job_id, job.attempt, ACCEPT),
            )
            # Counted in this hub's view until the owner publishes the node's load again,
            # so that jobs started in one go (the queue pump) do not all go to the one
            # slot the view last showed free. A stale count costs a short
            # wait, never a refusal: a job that finds every node full waits.
            state = self.fleet.snapshot.get(job.node_id)
            if state is not None:
                self.fleet.set_running(job.node_id, state.running + 1)
            if not dispatched:
                self.peers.send(job.node_hub, self.dispatch(job, assign))
            self.log.assigned(job)
            if reply is not None:
                reply.accepted(job.job_id, job.node_id, started=True)
            return
        refused = self.slots.reserve(
            job.node_id, job.job_id, job.attempt, self.hub_id, job.request_id, job.tenant
        )
        if refused is not None:
            await self.next(job, refused, reply=reply)
            return
        # One deadline per attempt: when it fires on an accepted job, it re-arms for the
        # attempt's end (most jobs are long gone by then: one heap entry, not two).
        self.deadlines.push(now + self.config.accept_timeout_ms, (job.job_id, job.attempt, ACCEPT))
        # The node first: its write leaves first. `accepted` still precedes `result`:
        # both are queued in this turn, before any reply from the node can be read.
        self.slots.deliver(job.node_id, assign)
        self.log.assigned(job)
        if reply is not None:
            reply.accepted(job.job_id, job.node_id, started=True)
        if job.attempt == 1:
            started = self.table.submitted_ns.get(job.job_id)
            if started is not None:
                self.metrics.dispatch_seconds.observe((time.perf_counter_ns() - started) / 1e9)

    async def next(self, job: Job, outcome: str, *, reply: SubmitReply | None = None) -> None:
        """The current attempt failed with `outcome`: retry elsewhere or finish.

        `reply` carries the submitter's answer through refusals of the first dispatch.
        """
        self._forget_deadlines(job, overall=False)
        if job.unconfirmed and not job.watchers:
            self._drop_unconfirmed(job, outcome)
            return
        if outcome == AT_CAPACITY and self.may_wait(job):
            # The owner hub's node was full after all: back in line, not a failure.
            job.requeue_attempt(outcome)
            self.metrics.attempts.inc(outcome)
            self.log.queued(job, outcome)
            await self.wait(job, reply=reply, keep_deadline=True, logged=True)
            return
        # A node whose hub died or stopped answering did not fail: it may well serve the
        # job from the hub it reconnects to.
        hub_failed = outcome == HUB_LOST or (
            job.node_hub != self.hub_id and self.peers.is_excluded(job.node_hub)
        )
        job.fail_attempt(outcome, exclude=not hub_failed)
        self.log.attempt_failed(job, outcome)
        self.metrics.attempts.inc(outcome)
        if not job.can_retry(self.config.max_attempts, self.clock.now_ms()):
            if self.clock.now_ms() >= job.deadline_ms:
                error = ErrorInfo(
                    error_codes.TIMEOUT, f"the job's deadline passed (last: {outcome})"
                )
            elif outcome == BAD_OUTPUT:
                error = ErrorInfo(
                    error_codes.BAD_OUTPUT,
                    f"{job.attempt} attempts failed; the last node's output named no "
                    "detected language (output.src_lang)",
                )
            else:
                error = ErrorInfo(
                    error_codes.ATTEMPTS_EXHAUSTED,
                    f"{job.attempt} attempts failed (last: {outcome})",
                )
            await self.finish(job, ok=False, error=error, reply=reply)
            return
        await self._reselect(job, outcome, reply=reply)

    async def _reselect(self, job: Job, outcome: str, *, reply: SubmitReply | None = None) -> None:
        """The job's next attempt: a node if one fits; if none does just after nodes left
        their hub (`Transit`), try again shortly (a deadline, up to `Transit.wait_s`;
        the submitter gets its `accepted` meanwhile); else the job ends `no_node`."""
        selection = self.select(job.requirements)
        req = job.requirements
        reasons = selection.reasons
        if (
            selection.node_id is None and reasons.get(EXCLUDED) and not reasons.get(AT_CAPACITY)
            and not self.transit.coming(selection, req)
        ):
            selection = self._soften(job, selection)
        if selection.node_id is None and self.may_wait(job) and (
            selection.reasons.get(AT_CAPACITY) or self.transit.coming(selection, job.requirements)
        ):
            # Every node that could take it is full, or on its way to a hub (the selection
            # was just made): the admission queue's, not a transit wait.
            self._in_transit.pop(job.job_id, None)
            await self.wait(job, reply=reply, recheck=False)
            return
        if selection.node_id is not None:
            self._in_transit.pop(job.job_id, None)
            assign = self.assign(job, selection.node_id)
            self.log.failover(job, outcome)
            await self.send(job, assign, reply=reply)
            return
        now = self.clock.now_ms()
        until = self._in_transit.setdefault(
            job.job_id, now + int(self.transit.wait_s * 1000)
        )
        if self.transit.should_wait(selection) and self.transit.recent(job.requirements) and (
            now < until
        ):
            if reply is not None:
                reply.accepted(job.job_id, job.node_id, started=True)
            self.deadlines.push(now + TRANSIT_POLL_MS, (job.job_id, job.attempt, TRANSIT))
            return
        self._in_transit.pop(job.job_id, None)
        self.metrics.no_node_answer(selection.reasons)
        error = ErrorInfo(error_codes.NO_NODE, selection.explain())
        await self.finish(job, ok=False, error=error, reply=reply)

    def _soften(self, job: Job, strict: Selection) -> Selection:
        """Soft exclusion: the nodes that failed this job are avoided while another node
        could serve it (a full one included: the job waits for it). When only they
        could (every other node lacks a capability, is draining or offline, or there is
        none), the next attempt may go back to one of them (within
        `max_attempts`, counted as ever): a node's reject or timeout is often
        passing (busy, restarting), and ending the job `no_node` while its node is
        there would be worse. The job's exclusions are dropped then, so that if those
        nodes are only full it waits for them in the queue like any job."""
        relaxed = msgspec.structs.replace(job.requirements, excluded=frozenset())
        softened = self.select(relaxed)
        if softened.node_id is None and not softened.reasons.get(AT_CAPACITY):
            return strict  # not even the excluded nodes can take it now
        job.requirements = relaxed
        return softened

    def _drop_unconfirmed(self, job: Job, outcome: str) -> None:
        """An unconfirmed job's attempt failed and nobody watches it (`Admission.
        keep_unconfirmed`): it ends here, without a result or a record. It is not
        running anywhere now, so a resubmit that finds its binding may take it over."""
        self._forget_deadlines(job, overall=True)
        self.table.remove(job.job_id)
        self.metrics.attempts.inc(outcome)
        logger.bind(job_id=job.job_id, node_id=job.node_id).info(
            "unconfirmed job of {} dropped: its attempt failed ({})", job.request_id, outcome
        )

    # --- waiting for a free slot ----------------------------------------------

    def may_wait(self, job: Job) -> bool:
        return job.queue_timeout_ms > 0

    async def wait(
        self, job: Job, *, reply: SubmitReply | None = None, keep_deadline: bool = False,
        recheck: bool = True, logged: bool = False,
    ) -> None:
        """Queue the job until a slot frees (`QueuePump` starts it again).

        `reply` is the submitter's, who gets `accepted` with `queued: true`.
        `recheck`: the selection that sent it here may be stale (it was made before
        an await, or on another hub's view): look for a free node once more."""
        now = self.clock.now_ms()
        job.wait(now, keep_deadline=keep_deadline)
        if not logged:
            self.log.queued(job, AT_CAPACITY)
        self.waiting.add(job, job.fair_key)
        self.deadlines.push(job.queue_deadline_ms, (job.job_id, 0, QUEUE))
        if reply is not None:
            reply.accepted(job.job_id, queued=True, started=True)
        if recheck:
            # A slot may have freed since the selection that sent it here (a store round
            # trip, a stale view of another hub's node): have the pump look at once.
            selection = select_node(self.fleet.snapshot, job.requirements, self.rng)
            if selection.node_id is not None:
                self.waiting.look_at(selection.node_id)

    async def start_waiting(self, job: Job) -> bool:
        """Start a job the queue picked for a free slot; False (and back in the queue,
        in its place) when the selector finds no node for it after all."""
        selection = self.select(job.requirements)
        if selection.node_id is None:
            job.wait(self.clock.now_ms(), keep_deadline=True)
            self.waiting.add(job, job.fair_key)
            return False
        self.deadlines.discard((job.job_id, 0, QUEUE))  # pushed again if it waits again
        assign = self.assign(job, selection.node_id)
        self.log.dequeued(job)
        await self.send(job, assign)
        return True

    async def revoke(self, job: Job, reason: str) -> None:
        """Take the current attempt back from its node (it is told with `job_cancel`)."""
        if job.queued:
            return  # no attempt is on a node
        if job.node_hub == self.hub_id:
            await self.slots.revoke(job.node_id, job.job_id, job.attempt, reason)
        elif self.peers.is_live(job.node_hub):
            self.peers.send(job.node_hub, self.revocation(job, reason))

    async def finish(
        self,
        job: Job,
        *,
        ok: bool,
        output: Any = None,
        error: ErrorInfo | None = None,
        reply: SubmitReply | None = None,
        archive: bool = True,
    ) -> None:
        """Send the job's one terminal result to every watcher and archive it (unless
        not `archive`: the job goes on elsewhere, and a resubmit must find it there).

        With `reply` (the first dispatch never reached a node) the submitter
        first gets the `accepted` it has not had yet.
        """
        if job.finished:
            return
        if job.queued:
            self.waiting.remove(job, self.clock.now_ms())
        self._forget_deadlines(job, overall=True)
        result = job.complete(ok=ok, output=output, error=error)
        started = self.table.remove(job.job_id)
        outcome = "ok" if ok else (error.code if error else error_codes.FAILED)
        # Codes from nodes are free text: keep the label set bounded.
        known = outcome in error_codes.HUB_OUTCOMES or outcome in error_codes.QUEUE_OUTCOMES
        self.metrics.jobs.inc(outcome if known else "node_error")
        self.log.finished(job, outcome)
        seconds = None if started is None else (time.perf_counter_ns() - started) / 1e9
        if seconds is not None:
            self.metrics.job_seconds.observe(seconds)
        self.metrics.recent.finished(
            time.monotonic(), code=None if ok else outcome, seconds=seconds
        )
        if reply is not None:
            reply.accepted(job.job_id, job.node_id, started=True)
        for watcher in job.watchers:
            self.delivery.result(watcher, result)
        # Archived in the background, batched: the result is out already, and waiting
        # here for the store would hold up whatever handed us this job's end.
        if archive:
            self.archive.put(job.to_record())

    # --- deadlines ---------------------------------------------------------------------

    def watch_overall(self, job: Job) -> None:
        """Arm the job's overall deadline (the client's `timeout_ms`)."""
        self.deadlines.push(job.deadline_ms, (job.job_id, 0, OVERALL))

    def _store_silenced(self, job: Job) -> bool:
        """Whether a remote attempt's deadline should wait: the store between this hub
        and the node's is (or just was) failing, and the job's budget is not spent."""
        return (
            job.node_hub != self.hub_id
            and self.clock.now_ms() < job.deadline_ms
            and self.peers.store_troubled(self.config.accept_timeout_ms / 1000)
        )

    def _forget_deadlines(self, job: Job, *, overall: bool) -> None:
        """The current attempt ended (and with `overall`, the job): its deadlines go, so
        the heap holds only what can still fire."""
        job_id, attempt = job.job_id, job.attempt
        keys = [(job_id, attempt, ACCEPT), (job_id, attempt, ATTEMPT), (job_id, attempt, TRANSIT)]
        if overall:
            keys += ((job_id, 0, OVERALL), (job_id, 0, QUEUE))
            self._in_transit.pop(job_id, None)
        self.deadlines.discard_all(keys)
        self.stranded.release(job_id)

    async def run_deadlines(self) -> None:
        """Fire accept, attempt, overall and stranded attempts' deadlines; runs until
        cancelled."""
        await asyncio.gather(self.deadlines.run(), self.stranded.run())

    async def _unstrand(self, job: Job, outcome: str) -> None:
        """A stranded attempt's wait ended without its result reaching this hub: a hub
        that read the result on this hub's behalf (it declared this hub dead and drained
        its inbox) archived it; else the attempt failed."""
        record = await self.archive.load(job.job_id)
        if job.finished or self.table.get(job.job_id) is not job:
            return
        if record is not None and record.result is not None and record.orphaned:
            result = record.result
            self.log.recovered(job)
            await self.finish(job, ok=result.ok, output=result.output, error=result.error)
            return
        await self.next(job, outcome)

    async def _deadline_passed(self, item: Deadline) -> None:
        job_id, attempt, kind = item
        job = self.table.get(job_id)
        if job is None:
            return
        if kind == OVERALL:
            await self.revoke(job, ATTEMPT_TIMEOUT)
            error = ErrorInfo(error_codes.TIMEOUT, "the job's deadline passed")
            await self.finish(job, ok=False, error=error)
            return
        if kind == QUEUE:
            if job.queued and self.clock.now_ms() >= job.queue_deadline_ms:
                error = ErrorInfo(
                    error_codes.QUEUE_TIMEOUT,
                    f"no slot freed for the job within {job.queue_timeout_ms} ms",
                )
                await self.finish(job, ok=False, error=error)
            return
        if job.attempt != attempt or job.queued:
            return
        if kind == TRANSIT:
            await self._reselect(job, job.history[-1].outcome if job.history else TRANSIT)
            return
        if self.stranded.holds(job):
            return  # its node's hub went silent: `stranded` decides
        if self._store_silenced(job) or self.peers.out_of_touch():
            # The node's hub can reach us only through the store, which is failing or
            # just failed (its messages are late, or being replayed), or this hub itself
            # was frozen (what its nodes sent meanwhile is unread): silence proves
            # nothing yet. Look again later (the job's own deadline still applies).
            self.deadlines.push(self.clock.now_ms() + self.config.accept_timeout_ms, item)
            return
        if kind == ACCEPT:
            if job.status is JobStatus.ASSIGNED:
                await self.revoke(job, ACCEPT_TIMEOUT)
                await self.next(job, ACCEPT_TIMEOUT)
            else:
                due = job.attempt_deadline_ms
                if job.node_hub != self.hub_id:
                    due += self._remote_slack_ms
                self.deadlines.push(due, (job_id, attempt, ATTEMPT))
        elif kind == ATTEMPT:
            await self.revoke(job, ATTEMPT_TIMEOUT)
            await self.next(job, ATTEMPT_TIMEOUT)
