"""`JobService`: the one job path, from `submit` to the single terminal `result`.

    submit -> bind request_id (store) -> select (the unified selector) ->
    job record -> assign (node owner) -> accept/reject within accept_timeout ->
    progress -> result -> `result` to every watcher of the job

A reject, an accept timeout, the attempt's `job_timeout_ms`, or the node
dropping starts the next attempt with that node hard-excluded, up to
`max_attempts`; then exactly one failed `result`. Each handler decides first
(all state changes happen before its first `await`), then performs the I/O,
so an interleaved message always sees a consistent job.

The service is the job's *home* role; the node's *owner* role is
`NodeRegistry`. Neither knows whether the store is memory or Redis.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from hub.archive import JobArchive
from hub.binder import Binder
from hub.capabilities import Requirements
from hub.cluster import Cluster
from hub.config import HubConfig
from hub.deadline_loop import Clock, DeadlineLoop
from hub.directory import NodeDirectory
from hub.duplicates import DuplicateRequests, readdressed
from hub.envelopes import Deliver, Dispatch, Revoke, encode
from hub.errors import ProtocolError, StoreUnavailable
from hub.jobs import Job, JobRecord, JobStatus, Watcher
from hub.links import Link
from hub.messages import (
    Accepted,
    Cancel,
    ClientOutbound,
    ErrorInfo,
    JobAssign,
    Rejected,
    Submit,
)
from hub.metrics import Metrics
from hub.node_events import NodeEvents
from hub.node_registry import NodeRegistry
from hub.selector import Selection, select_node
from hub.store.base import Binding, Store

HUB_OUTCOMES = frozenset(
    {"ok", "no_node", "attempts_exhausted", "timeout", "cancelled", "hub_shutdown"}
)
"""Terminal outcomes the hub itself decides (any other failure came from a node)."""

ACCEPT = "accept"
ATTEMPT = "attempt"
OVERALL = "overall"
Deadline = tuple[str, int, str]
"""(job_id, attempt, kind) of a pending deadline."""
Plan = tuple[Job | None, JobAssign | None, Selection]
"""A job with its first attempt assigned, before it is recorded (None: no node fits)."""


class JobService(NodeEvents, DuplicateRequests):
    def __init__(
        self,
        *,
        config: HubConfig,
        store: Store,
        directory: NodeDirectory,
        metrics: Metrics,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.store = store
        self.directory = directory
        self.metrics = metrics
        self.rng = rng if rng is not None else random.Random(config.selection_seed)
        self.clock = clock if clock is not None else Clock()
        self.cluster = (
            cluster if cluster is not None
            else Cluster(config=config, store=store, directory=directory)
        )
        self.nodes = NodeRegistry(
            config=config, directory=directory, store=store, events=self,
            published=self.cluster.node_changed,
        )
        self.jobs: dict[str, Job] = {}
        self.clients: dict[str, Link] = {}
        self._deadlines: DeadlineLoop[Deadline] = DeadlineLoop(self.clock, self._deadline_item)
        self._job_prefix = f"{self.hub_id}.{os.urandom(4).hex()}."
        self._job_counter = 0
        self._submitted_ns: dict[str, int] = {}
        self._creating: dict[str, list[Watcher]] = {}
        self._early: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        self.binder = Binder(store)
        self.archive = JobArchive(store=store, ttl_ms=config.idempotency_ttl_ms)

    def __repr__(self) -> str:
        return f"JobService(hub={self.hub_id!r}, active_jobs={len(self.jobs)}, {self.nodes!r})"

    # --- clients ---------------------------------------------------------------------

    def client_connected(self, link: Link) -> None:
        self.clients[link.peer_id] = link

    def client_disconnected(self, link: Link) -> None:
        # Jobs go on: the client may reconnect and resubmit its request_id to get the result.
        self.clients.pop(link.peer_id, None)

    async def submit(self, link: Link, message: Submit) -> None:
        started_ns = time.perf_counter_ns()
        job_id = self._new_job_id()
        # Selected and assigned before the binding, so that a dispatch to a node of
        # another hub goes out with the binding, atomically, in the same round trip.
        job, assign, selection = self._plan(link, message, job_id)
        # The binding outlives the longest the job can run, plus the idempotency window.
        config = self.config
        ttl_ms = config.idempotency_ttl_ms + config.job_budget_ms(message.timeout_ms)
        binding = Binding(message.request_id, job_id, ttl_ms)
        if job is not None and assign is not None and job.node_hub != self.hub_id:
            binding = binding._replace(
                send_to=job.node_hub, envelope=encode(self._dispatch(job, assign))
            )
        # Until the job exists, duplicates (from any hub) and node events wait here.
        self._creating[job_id] = []
        self._early[job_id] = []
        try:
            existing = await self.binder.bind(binding)
        except BaseException as exc:
            del self._creating[job_id], self._early[job_id]
            if job is not None and binding.send_to is not None:
                # It may have gone out, with only the reply lost.
                self.cluster.send(binding.send_to, self._revocation(job, "store_unavailable"))
            if not isinstance(exc, StoreUnavailable):
                raise  # answered as an internal error by the session
            # Fail fast: without the binding the hub cannot promise exactly-once.
            self.metrics.submits.inc("store_unavailable")
            await link.send(
                Rejected(request_id=message.request_id, code="store_unavailable", message=str(exc))
            )
            return
        early = self._early.pop(job_id)
        if existing is not None:
            del self._creating[job_id]  # nothing was dispatched: the script sent only if bound
            await self._attach_duplicate(link, message, existing)
            return
        rejected = await self._commit(
            link, message, job_id, (job, assign, selection), started_ns,
            dispatched=binding.send_to is not None,
        )
        for event in early:  # node events that overtook the binding's reply
            try:
                await event()
            except ProtocolError as exc:  # about the node's message, not this client's
                logger.bind(job_id=job_id).info("early node event refused: {}", exc.message)
        for watcher in self._creating.pop(job_id, ()):
            if rejected is not None:
                await self._to_watcher(watcher, rejected)
            else:
                await self.add_watcher(job_id, watcher)

    def _new_job_id(self) -> str:
        # `<home hub id>.<boot token>.<counter>`: any hub can tell a job's home.
        self._job_counter += 1
        return f"{self._job_prefix}{self._job_counter}"

    def _plan(self, link: Link, message: Submit, job_id: str) -> Plan:
        """Select a node and assign the job's first attempt to it (no I/O, nothing
        recorded yet); no job when no node fits."""
        config = self.config
        session_id = message.session_id or f"{self.hub_id}:{link.peer_id}"
        routing_key = message.routing_key
        if routing_key is None and config.session_affinity:
            routing_key = session_id
        req = Requirements.from_submit(message, routing_key=routing_key)
        selection = self._select(req)
        if selection.node_id is None:
            return None, None, selection
        timeout_ms = self.config.job_budget_ms(message.timeout_ms)
        job = Job(
            job_id=job_id,
            request_id=message.request_id,
            session_id=session_id,
            requirements=req,
            payload=message.payload,
            home_hub=self.hub_id,
            created_ms=self.clock.wall_ms(),
            deadline_ms=self.clock.now_ms() + timeout_ms,
            watcher=Watcher(self.hub_id, link.peer_id, message.request_id),
            timeout_ms=timeout_ms,
        )
        return job, self._assign(job, selection.node_id), selection

    async def _commit(
        self, link: Link, message: Submit, job_id: str, plan: Plan, started_ns: int,
        *, dispatched: bool = False,
    ) -> Rejected | None:
        """Record and run a planned job now that its request is bound to `job_id`
        (`dispatched`: its Dispatch to another hub went out with the binding); the
        `rejected` sent when no node fits (the binding is then released)."""
        job, assign, selection = plan
        if job is None or assign is None:
            await self.store.release_request(message.request_id, job_id)
            self.metrics.submits.inc("no_node")
            rejected = Rejected(
                request_id=message.request_id,
                code="no_node",
                message=selection.explain(),
                reasons=selection.reasons,
            )
            await link.send(rejected)
            return rejected
        self.jobs[job.job_id] = job
        self._submitted_ns[job.job_id] = started_ns
        if message.timeout_ms is not None:
            self._push_deadline(job.deadline_ms, (job.job_id, 0, OVERALL))
        self.metrics.submits.inc("accepted")
        await self._send_attempt(job, assign, announce=link, dispatched=dispatched)
        return None

    async def _create(
        self, link: Link, message: Submit, job_id: str, started_ns: int
    ) -> Rejected | None:
        """Plan and commit a job whose request is already bound to `job_id`."""
        return await self._commit(
            link, message, job_id, self._plan(link, message, job_id), started_ns
        )

    async def cancel(self, link: Link, message: Cancel) -> None:
        job = self.jobs.get(message.job_id)
        if job is None:
            stored = await self.archive.load(message.job_id)
            if stored is None:
                raise ProtocolError("unknown_job", f"no job {message.job_id}")
            raise ProtocolError("job_finished", f"job {message.job_id} is already finished")
        if not any(w.client_id == link.peer_id and w.hub_id == self.hub_id for w in job.watchers):
            raise ProtocolError("not_your_job", f"job {message.job_id} was not submitted here")
        await self._revoke(job, "cancelled")
        await self._finish(job, ok=False, error=ErrorInfo("cancelled", "cancelled by the client"))

    async def _to_watcher(self, watcher: Watcher, message: ClientOutbound) -> None:
        if watcher.hub_id == self.hub_id:
            link = self.clients.get(watcher.client_id)
            if link is not None:
                await link.send(message)
        elif self.cluster.is_live(watcher.hub_id):
            self.cluster.send(
                watcher.hub_id, Deliver(self.hub_id, client_id=watcher.client_id, message=message)
            )

    # --- attempts --------------------------------------------------------------------

    def _select(self, req: Requirements) -> Selection:
        started = time.perf_counter_ns()
        selection = select_node(self.directory.snapshot, req, self.rng)
        self.metrics.selection_seconds.observe((time.perf_counter_ns() - started) / 1e9)
        if selection.node_id is None:
            for reason, count in selection.reasons.items():
                self.metrics.no_node.inc(reason, amount=count)
        return selection

    def _assign(self, job: Job, node_id: str) -> JobAssign:
        """Start the job's next attempt on `node_id` (state only); the node's message."""
        config = self.config
        state = self.directory.snapshot.get(node_id)
        node_hub = state.hub_id if state is not None else self.hub_id
        now = self.clock.now_ms()
        attempt_deadline = now + config.accept_timeout_ms + config.job_timeout_ms
        return job.assign(node_id, node_hub, now, attempt_deadline, wall_ms=self.clock.wall_ms())

    def _dispatch(self, job: Job, assign: JobAssign) -> Dispatch:
        return Dispatch(self.hub_id, node_id=job.node_id, request_id=job.request_id, assign=assign)

    def _revocation(self, job: Job, reason: str) -> Revoke:
        return Revoke(
            self.hub_id, node_id=job.node_id, job_id=job.job_id, attempt=job.attempt, reason=reason
        )

    async def _start_attempt(self, job: Job, node_id: str, *, announce: Link | None = None) -> None:
        await self._send_attempt(job, self._assign(job, node_id), announce=announce)

    async def _send_attempt(
        self, job: Job, assign: JobAssign, *, announce: Link | None = None, dispatched: bool = False
    ) -> None:
        """Hand the assigned attempt to its node; on a refusal, go straight to the next.

        `announce` is the submitter on the first attempt: it gets `accepted`
        after the slot is held and before the node hears of the job, so that
        `accepted` always precedes the job's `result`.
        """
        now = self.clock.now_ms()
        accepted = Accepted(
            request_id=job.request_id, job_id=job.job_id, node_id=job.node_id, duplicate=False
        )
        if job.node_hub != self.hub_id:
            # The owner hub holds the slots: it takes one or answers `Refused` (which
            # does not spend the attempt budget). Not counting the slot here as well:
            # with short jobs, increments between two coalesced load updates add up
            # past the node's real load and the hub would refuse work it could place.
            self._push_deadline(
                now + self.config.accept_timeout_ms, (job.job_id, job.attempt, ACCEPT)
            )
            if not dispatched:
                self.cluster.send(job.node_hub, self._dispatch(job, assign))
            if announce is not None:
                await announce.send(accepted)
            return
        refused = self.nodes.reserve(
            job.node_id, job.job_id, job.attempt, self.hub_id, job.request_id
        )
        if refused is not None:
            await self._next_attempt(job, refused, announce=announce)
            return
        # One deadline per attempt: when it fires on an accepted job, it re-arms for the
        # attempt's end (most jobs are long gone by then: one heap entry, not two).
        self._push_deadline(now + self.config.accept_timeout_ms, (job.job_id, job.attempt, ACCEPT))
        # The node first: its write leaves first. `accepted` still precedes `result`:
        # both are queued in this turn, before any reply from the node can be read.
        self.nodes.deliver(job.node_id, assign)
        if announce is not None:
            await announce.send(accepted)
        if job.attempt == 1:
            started = self._submitted_ns.get(job.job_id)
            if started is not None:
                self.metrics.dispatch_seconds.observe((time.perf_counter_ns() - started) / 1e9)

    async def _next_attempt(self, job: Job, outcome: str, *, announce: Link | None = None) -> None:
        """The current attempt failed with `outcome`: retry elsewhere or finish.

        `announce` carries the submitter through refusals of the first dispatch.
        """
        job.fail_attempt(outcome)
        logger.bind(job_id=job.job_id).debug(
            "attempt {} on {} ({}) failed: {}", job.attempt, job.node_id, job.node_hub, outcome
        )
        self.metrics.attempts.inc(outcome)
        if not job.can_retry(self.config.max_attempts, self.clock.now_ms()):
            if self.clock.now_ms() >= job.deadline_ms:
                error = ErrorInfo("timeout", f"the job's deadline passed (last: {outcome})")
            else:
                error = ErrorInfo(
                    "attempts_exhausted",
                    f"{job.attempt} attempts failed (last: {outcome})",
                )
            await self._finish(job, ok=False, error=error, announce=announce)
            return
        selection = self._select(job.requirements)
        if selection.node_id is None:
            error = ErrorInfo("no_node", selection.explain())
            await self._finish(job, ok=False, error=error, announce=announce)
            return
        await self._start_attempt(job, selection.node_id, announce=announce)

    async def _revoke(self, job: Job, reason: str) -> None:
        if job.node_hub == self.hub_id:
            await self.nodes.revoke(job.node_id, job.job_id, job.attempt, reason)
        elif self.cluster.is_live(job.node_hub):
            self.cluster.send(job.node_hub, self._revocation(job, reason))

    async def _finish(
        self,
        job: Job,
        *,
        ok: bool,
        output: Any = None,
        error: ErrorInfo | None = None,
        announce: Link | None = None,
    ) -> None:
        """Send the job's one terminal result to every watcher and archive it.

        With `announce` (the first dispatch never reached a node) the submitter
        first gets the `accepted` it has not had yet.
        """
        if job.finished:
            return
        result = job.complete(ok=ok, output=output, error=error)
        del self.jobs[job.job_id]
        outcome = "ok" if ok else (error.code if error else "failed")
        # Codes from nodes are free text: keep the label set bounded.
        self.metrics.jobs.inc(outcome if outcome in HUB_OUTCOMES else "node_error")
        started = self._submitted_ns.pop(job.job_id, None)
        if started is not None:
            self.metrics.job_seconds.observe((time.perf_counter_ns() - started) / 1e9)
        if announce is not None:
            await announce.send(
                Accepted(
                    request_id=job.request_id, job_id=job.job_id, node_id=job.node_id,
                    duplicate=False,
                )
            )
        for watcher in job.watchers:
            if watcher.request_id == result.request_id:
                await self._to_watcher(watcher, result)
            else:
                await self._to_watcher(watcher, readdressed(result, watcher.request_id))
        # Archived in the background, batched: the result is out already, and waiting
        # here for the store would hold up whatever handed us this job's end.
        self.archive.put(job.to_record())

    # --- deadlines ---------------------------------------------------------------------

    def _push_deadline(self, due_ms: int, item: Deadline) -> None:
        self._deadlines.push(due_ms, item)

    async def run_deadlines(self) -> None:
        """Fire accept, attempt and overall deadlines; runs until cancelled."""
        await self._deadlines.run()

    async def _deadline_item(self, item: Deadline) -> None:
        await self._deadline_passed(*item)

    async def _deadline_passed(self, job_id: str, attempt: int, kind: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        if kind == OVERALL:
            await self._revoke(job, "timeout")
            error = ErrorInfo("timeout", "the job's deadline passed")
            await self._finish(job, ok=False, error=error)
            return
        if job.attempt != attempt:
            return
        if kind == ACCEPT:
            if job.status is JobStatus.ASSIGNED:
                await self._revoke(job, "accept_timeout")
                await self._next_attempt(job, "accept_timeout")
            else:
                self._push_deadline(job.attempt_deadline_ms, (job_id, attempt, ATTEMPT))
        elif kind == ATTEMPT:
            await self._revoke(job, "timeout")
            await self._next_attempt(job, "timeout")

    # --- reading and shutting down --------------------------------------------------------

    async def job_record(self, job_id: str) -> JobRecord | None:
        job = self.jobs.get(job_id)
        if job is not None:
            return job.to_record()
        return await self.archive.load(job_id)

    async def shutdown(self) -> None:
        """Stop every unfinished job: cancel at its node and tell its clients."""
        await self.binder.aclose()  # submits waiting on their binding get it first...
        for _ in range(100):  # ...and record their jobs in their next step (bounded: 1 s)
            if not self._creating:
                break
            await asyncio.sleep(0.01)
        for job in list(self.jobs.values()):
            await self._revoke(job, "hub_shutdown")
            await self._finish(
                job, ok=False, error=ErrorInfo("hub_shutdown", "the hub is shutting down")
            )
        await self.archive.flush()

