"""`Admission`: whether and where a submitted job starts.

`plan` selects a node and assigns the job's first attempt to it without any
I/O and without recording anything, so that a dispatch to another hub can
travel with the request's binding. `commit`, once the binding is confirmed,
records the job and hands the attempt to its node, or, when no node fits,
answers `rejected` `no_node` and releases the binding.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger

from hub.core import error_codes
from hub.core.capabilities import Requirements
from hub.core.config import HubConfig
from hub.core.errors import StoreUnavailable
from hub.core.job import Job
from hub.core.messages import JobAssign, Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.selector import Selection
from hub.jobs.attempts import Attempts
from hub.jobs.delivery import ClientDelivery
from hub.jobs.links import Link
from hub.jobs.table import JobTable
from hub.jobs.transit import Transit
from hub.runtime.deadline_loop import Clock
from hub.store.base import Store

Plan = tuple[Job | None, JobAssign | None, Selection]
"""A job with its first attempt assigned, before it is recorded (None: no node fits)."""


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

    async def plan_waiting(self, link: Link, message: Submit, job_id: str) -> Plan:
        """`plan`; when no node fits just after nodes left a draining hub (they are on
        their way to another: `Transit`), wait briefly for one to arrive and plan again."""
        plan = self.plan(link, message, job_id)
        if plan[0] is None:
            plan = await self.replan_in_transit(link, message, job_id, plan)
        return plan

    async def replan_in_transit(
        self, link: Link, message: Submit, job_id: str, plan: Plan
    ) -> Plan:
        """A plan that found no node: wait for nodes in transit, if any, and plan again."""
        if self.transit.should_wait(plan[2]) and self.transit.recent(
            self._requirements(link, message)[1]
        ):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.transit.wait_s
            while await self.transit.arrival(deadline - loop.time()):
                plan = self.plan(link, message, job_id)
                if plan[0] is not None:
                    break
        return plan

    def plan(self, link: Link, message: Submit, job_id: str) -> Plan:
        """Select a node and assign the job's first attempt to it (no I/O, nothing
        recorded yet); no job when no node fits."""
        config = self.config
        session_id, req = self._requirements(link, message)
        selection = self.attempts.select(req)
        if selection.node_id is None:
            return None, None, selection
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
        )
        return job, self.attempts.assign(job, selection.node_id), selection

    def _requirements(self, link: Link, message: Submit) -> tuple[str, Requirements]:
        """The submit's session id and what a node must offer to run it."""
        session_id = message.session_id or f"{self.hub_id}:{link.peer_id}"
        routing_key = message.routing_key
        if routing_key is None and self.config.session_affinity:
            routing_key = session_id
        return session_id, Requirements.from_submit(message, routing_key=routing_key)

    async def commit(
        self, link: Link, message: Submit, job_id: str, plan: Plan, started_ns: int,
        *, dispatched: bool = False,
    ) -> Rejected | None:
        """Record and run a planned job now that its request is bound to `job_id`
        (`dispatched`: its Dispatch to another hub went out with the binding); the
        `rejected` sent when no node fits (the binding is then released)."""
        job, assign, selection = plan
        if job is None or assign is None:
            try:
                await self.store.release_request(message.request_id, job_id)
            except StoreUnavailable as exc:
                # Still bound, to a job that never existed: a resubmit takes it over.
                logger.warning("releasing request {} failed: {}", message.request_id, exc)
            self.metrics.submits.inc(error_codes.NO_NODE)
            rejected = Rejected(
                request_id=message.request_id,
                code=error_codes.NO_NODE,
                message=selection.explain(),
                reasons=selection.reasons,
            )
            await link.send(rejected)
            return rejected
        self.table.add(job, started_ns)
        if message.timeout_ms is not None:
            self.attempts.watch_overall(job)
        self.metrics.submits.inc("accepted")
        await self.attempts.send(job, assign, announce=link, dispatched=dispatched)
        return None

    async def create(self, link: Link, message: Submit, job_id: str) -> Rejected | None:
        """Plan and commit a job whose request is already bound to `job_id`."""
        started_ns = time.perf_counter_ns()
        plan = await self.plan_waiting(link, message, job_id)
        return await self.commit(link, message, job_id, plan, started_ns)
