"""`Admission`: whether and where a submitted job starts.

`plan` selects a node and assigns the job's first attempt to it without any
I/O and without recording anything, so that a dispatch to another hub can
travel with the request's binding. `commit`, once the binding is confirmed,
records the job and hands the attempt to its node, or, when no node fits,
answers `rejected` `no_node` and releases the binding.

When every node that could serve the job is full, the job is
planned without an attempt and waits (`Attempts.wait`; `accepted` with
`queued: true`); so does a job that a node has room for but a waiting job of
at least its priority fits that node too (it must not jump the line). Past
`max_queued_jobs` waiting jobs the answer is `rejected` `overloaded`.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from loguru import logger

from hub.core import error_codes
from hub.core.capabilities import AT_CAPACITY, Requirements
from hub.core.config import HubConfig
from hub.core.errors import StoreUnavailable
from hub.core.job_state import Job
from hub.core.messages import JobAssign, Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.principal import DEFAULT_TENANT
from hub.core.selector import Selection
from hub.jobs.attempts import Attempts
from hub.jobs.delivery import ClientDelivery
from hub.jobs.links import Link
from hub.jobs.table import JobTable
from hub.jobs.transit import Transit
from hub.jobs.waiting import WaitingJobs
from hub.runtime.deadline_loop import Clock
from hub.store.base import Store


class Plan(NamedTuple):
    """A job with its first attempt assigned, before it is recorded.

    No `job`: nothing can take it (`refusal` is the `rejected` code). A job
    without `assign`: it waits for a free slot."""

    job: Job | None
    assign: JobAssign | None
    selection: Selection
    refusal: str = error_codes.NO_NODE


class Admission:
    def __init__(
        self,
        *,
        config: HubConfig,
        table: JobTable,
        attempts: Attempts,
        delivery: ClientDelivery,
        store: Store,
        metrics: Metrics,
        clock: Clock,
        waiting: WaitingJobs,
        transit: Transit,
    ) -> None:
        self.config = config
        self.transit = transit
        self.hub_id = config.hub_id
        self.table = table
        self.attempts = attempts
        self.delivery = delivery
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.waiting = waiting

    async def plan_waiting(
        self, link: Link, message: Submit, job_id: str, tenant: str = DEFAULT_TENANT
    ) -> Plan:
        """`plan`; when no node fits just after nodes left a draining hub (they are on
        their way to another: `Transit`), wait briefly for one to arrive and plan again."""
        plan = self.plan(link, message, job_id, tenant)
        if plan.job is None:
            plan = await self.replan_in_transit(link, message, job_id, plan, tenant)
        return plan

    async def replan_in_transit(
        self, link: Link, message: Submit, job_id: str, plan: Plan, tenant: str = DEFAULT_TENANT
    ) -> Plan:
        """A plan that found no node: wait for nodes in transit, if any, and plan again.

        Only a `no_node` plan (no capable node online at all) waits here; a full fleet
        is the admission queue's (the job is planned to wait for a slot), so
        the two never wait for the same submit at once. A node that arrives is planned
        for like any other: behind the jobs already waiting for it."""
        if (
            plan.refusal == error_codes.NO_NODE
            and self.transit.should_wait(plan.selection)
            and self.transit.recent(self._requirements(link, message)[1])
        ):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.transit.wait_s
            while await self.transit.arrival(deadline - loop.time()):
                plan = self.plan(link, message, job_id, tenant)
                if plan.job is not None:
                    break
        return plan

    def plan(
        self, link: Link, message: Submit, job_id: str, tenant: str = DEFAULT_TENANT
    ) -> Plan:
        """Select a node and assign the job's first attempt to it (no I/O, nothing
        recorded yet); no job when no node fits. The job belongs to `tenant`."""
        config = self.config
        session_id, req = self._requirements(link, message)
        selection = self.attempts.select(req)
        queue_timeout_ms = config.queue_timeout(message.queue_timeout_ms)
        waits = False
        if selection.node_id is None:
            if not (queue_timeout_ms and selection.reasons.get(AT_CAPACITY)):
                return Plan(None, None, selection)
            waits = True  # every node that could take it is full
        elif self.waiting.jobs:
            state = self.attempts.fleet.snapshot.get(selection.node_id)
            waits = state is not None and self.waiting.ahead(state, message.priority)
        # Whose turn a waiting job takes: its tenant with authentication, else its
        # client session.
        fair_key = tenant if config.auth == "jwt" else f"{self.hub_id}:{link.peer_id}"
        if waits and not self.waiting.admits(fair_key, config.max_queued_jobs):
            return Plan(None, None, selection, error_codes.OVERLOADED)
        timeout_ms = config.job_budget_ms(message.timeout_ms)
        job = Job(
            job_id=job_id,
            request_id=message.request_id,
            session_id=session_id,
            requirements=req,
            payload=message.payload,
            home_hub=self.hub_id,
            created_ms=self.clock.wall_ms(),
            deadline_ms=self.clock.now_ms() + timeout_ms,
            watcher=self.delivery.watcher(link, message.request_id),
            timeout_ms=timeout_ms,
            tenant=tenant,
            priority=message.priority,
            queue_timeout_ms=queue_timeout_ms,
            fair_key=fair_key,  # whose turn a waiting job takes
        )
        if waits or selection.node_id is None:
            return Plan(job, None, selection)
        return Plan(job, self.attempts.assign(job, selection.node_id), selection)

    def _requirements(self, link: Link, message: Submit) -> tuple[str, Requirements]:
        """The submit's session id and what a node must offer to run it."""
        session_id = message.session_id or f"{self.hub_id}:{link.peer_id}"
        routing_key = message.routing_key
        if routing_key is None and self.config.session_affinity:
            routing_key = session_id
        return session_id, Requirements.from_submit(message, routing_key=routing_key)

    async def commit(
        self, link: Link, message: Submit, job_id: str, plan: Plan, started_ns: int,
        *, dispatched: bool = False, tenant: str = DEFAULT_TENANT,
    ) -> Rejected | None:
        """Record and run a planned job now that its request is bound to `job_id`
        (`dispatched`: its Dispatch to another hub went out with the binding); the
        `rejected` sent when no node fits (the binding is then released)."""
        job, assign, selection, refusal = plan
        if (
            job is not None and assign is None
            and not self.waiting.admits(job.fair_key, self.config.max_queued_jobs)
        ):
            job, refusal = None, error_codes.OVERLOADED  # the queue filled meanwhile
        if job is None:
            try:
                await self.store.release_request(message.request_id, job_id, tenant=tenant)
            except StoreUnavailable as exc:
                # Still bound, to a job that never existed: a resubmit takes it over.
                logger.warning("releasing request {} failed: {}", message.request_id, exc)
            self.metrics.submit(refusal, message.src_lang, message.tgt_lang)
            self.metrics.recent.rejected(time.monotonic(), refusal)
            if refusal == error_codes.OVERLOADED:
                rejected = Rejected(
                    request_id=message.request_id, code=refusal,
                    message=(
                        f"{len(self.waiting)} jobs wait for a slot already (this session's "
                        "share of max_queued_jobs is used up); retry later"
                    ),
                )
            else:
                self.metrics.no_node_answer(selection.reasons)
                rejected = Rejected(
                    request_id=message.request_id,
                    code=error_codes.NO_NODE,
                    message=selection.explain(),
                    reasons=selection.reasons,
                )
            self.attempts.log.rejected(message.request_id, rejected.code, rejected.message)
            await link.send(rejected)
            return rejected
        self.table.add(job, started_ns)
        if message.timeout_ms is not None:
            self.attempts.watch_overall(job)
        self.metrics.submit("accepted", message.src_lang, message.tgt_lang)
        self.attempts.log.accepted(job, queued=assign is None)
        if assign is None:
            # Planned before the binding's round trip (when the store waits on I/O).
            await self.attempts.wait(job, announce=link, recheck=self.store.waits)
        else:
            await self.attempts.send(job, assign, announce=link, dispatched=dispatched)
        return None

    async def keep_unconfirmed(
        self, message: Submit, job: Job, assign: JobAssign, started_ns: int
    ) -> None:
        """Track a job whose binding's reply was lost after its first Dispatch went out
        with it (its submitter was refused `store_unavailable`).

        The store may have made the binding and appended the Dispatch all the same (a
        reply lost on the way back, or a paused Redis that ran the script when it
        resumed): the attempt may reach its node and run. It is tracked like any other,
        without a watcher, so that such a run is archived and answered to a resubmit
        that finds the binding (it joins this job: `Resubmits.add_watcher`), never
        started a second time by a takeover. If its attempt fails while nobody watches
        it, it ends without a record (`Attempts.next`): the binding, if made, then
        names a job nobody holds, and a resubmit takes it over safely."""
        job.unconfirmed = True  # before `add`: it holds nothing of the session's
        job.watchers.clear()
        self.table.add(job, started_ns)
        if message.timeout_ms is not None:
            self.attempts.watch_overall(job)
        logger.bind(job_id=job.job_id, node_id=job.node_id).info(
            "binding of {} unconfirmed (reply lost); its dispatch to hub {} is tracked",
            job.request_id, job.node_hub,
        )
        await self.attempts.send(job, assign, dispatched=True)

    async def create(
        self, link: Link, message: Submit, job_id: str, tenant: str = DEFAULT_TENANT
    ) -> Rejected | None:
        """Plan and commit a job whose request is already bound to `job_id`."""
        started_ns = time.perf_counter_ns()
        plan = await self.plan_waiting(link, message, job_id, tenant)
        return await self.commit(link, message, job_id, plan, started_ns, tenant=tenant)
