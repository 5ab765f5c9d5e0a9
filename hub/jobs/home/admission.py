"""`Admission`: whether and where a submitted job starts: decide, then do.

What becomes of a submit is a `Decision`, made without I/O over the current
state: `Refuse` (with its code and reasons), `Start` (the job with its first
attempt assigned to a node), `Queue` (the job waits for a slot), or, once the
request's binding is in, `Duplicate` (the request was bound to a job
already). `decide` makes it before the binding (so that a dispatch to another
hub travels with the binding, in the same store call), `settle` corrects it
with the binding's reply, and `carry_out` does it: the answer (through the
submit's `SubmitReply`), the metrics, the log line and the store calls, one
place per outcome.

When every node that could serve the job is full, the job is
planned without an attempt and waits (`Attempts.wait`; `accepted` with
`queued: true`); so does a job that a node has room for but a waiting job of
at least its priority fits that node too (it must not jump the line). Past
`max_queued_jobs` waiting jobs the answer is `rejected` `overloaded`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from loguru import logger

from hub.core import error_codes
from hub.core.capabilities import AT_CAPACITY, Requirements
from hub.core.config import HubConfig
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.job_state import Job
from hub.core.messages import AUTO, JobAssign, Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, DEFAULT_TENANT, Principal
from hub.core.selector import Selection
from hub.jobs.home.answers import SubmitReply
from hub.jobs.home.attempts import Attempts
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.table import JobTable
from hub.jobs.home.transit import Transit
from hub.jobs.home.waiting import WaitingJobs
from hub.jobs.links import Link
from hub.runtime.deadline_loop import Clock
from hub.store.base import Store


class Refuse(NamedTuple):
    """The submit is answered `rejected` with `code` (no job is made)."""

    code: str
    message: str
    reasons: dict[str, int] | None = None
    selection: Selection | None = None
    """The selection that found no node (`no_node`), for a wait on nodes in transit."""


class Start(NamedTuple):
    """A job with its first attempt assigned to a node, not recorded yet."""

    job: Job
    assign: JobAssign
    selection: Selection


class Queue(NamedTuple):
    """A job that waits for a free slot, not recorded yet."""

    job: Job
    selection: Selection


class Duplicate(NamedTuple):
    """The request is bound to `job_id` already: the submit watches that job."""

    job_id: str


Decision = Refuse | Start | Queue | Duplicate
"""What becomes of a submit: decided without I/O (`Admission.decide`, then `settle`
once the binding's reply is in), carried out by `Admission.carry_out`."""


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
        self.accepting = True
        """False once the hub stops taking work (drain, shutdown): `hub_shutdown`."""

    # --- deciding (no I/O) -----------------------------------------------------------------

    def refuse_early(
        self, link: Link, held: int, principal: Principal = ANONYMOUS, size: int = 0
    ) -> Refuse | None:
        """A refusal that needs no selection and no binding: the hub is stopping, the
        client session holds `max_jobs_per_session` unfinished jobs already, or the
        submit's `size` bytes would pass `max_held_payload_bytes` (or its party's
        share of it)."""
        if not self.accepting:
            return Refuse(error_codes.HUB_SHUTDOWN, "the hub is shutting down")
        limit = self.config.max_jobs_per_session
        if held >= limit:
            return Refuse(
                error_codes.OVERLOADED,
                f"this session holds {held} unfinished jobs (max_jobs_per_session is "
                f"{limit}); wait for results",
            )
        if size:
            why = self.table.bytes.refusal(self.fair_key(link, principal), size)
            if why is not None:
                return Refuse(error_codes.OVERLOADED, why)
        return None

    def fair_key(self, link: Link, principal: Principal) -> str:
        """Whose fair share a submit on `link` takes (the queue's, and the held bytes')."""
        return principal.share_key(f"{self.hub_id}:{link.peer_id}")

    def decide(
        self, link: Link, message: Submit, job_id: str, principal: Principal = ANONYMOUS
    ) -> Refuse | Start | Queue:
        """Select a node and assign the job's first attempt to it, or have it wait for a
        slot, or refuse it (no I/O, nothing recorded yet). The job belongs to the
        principal's tenant."""
        config = self.config
        if message.src_lang == AUTO or message.langs is not None:
            _check_two_way(message)
        session_id, req = self._requirements(link, message)
        selection = self.attempts.select(req)
        queue_timeout_ms = config.queue_timeout(message.queue_timeout_ms)
        waits = False
        if selection.node_id is None:
            if not (queue_timeout_ms and (
                selection.reasons.get(AT_CAPACITY) or self.transit.coming(selection, req)
            )):
                return Refuse(
                    error_codes.NO_NODE, selection.explain(), selection.reasons, selection
                )
            # Every node that could take it is full, or on its way to a hub (draining,
            # offline with a hub that stopped answering, moving): it waits for one.
            waits = True
        elif self.waiting.jobs:
            state = self.attempts.fleet.snapshot.get(selection.node_id)
            waits = state is not None and self.waiting.ahead(state, message.priority)
        fair_key = self.fair_key(link, principal)
        if waits and not self.waiting.admits(fair_key, config.max_queued_jobs):
            return self._overloaded()
        timeout_ms = config.job_budget_ms(message.timeout_ms)
        job = Job(
            job_id=job_id,
            request_id=message.request_id,
            session_id=session_id,
            requirements=req,
            payload=message.payload if req.two_way is None else _two_way_payload(message),
            home_hub=self.hub_id,
            created_ms=self.clock.wall_ms(),
            deadline_ms=self.clock.now_ms() + timeout_ms,
            watcher=self.delivery.watcher(link, message.request_id),
            timeout_ms=timeout_ms,
            tenant=principal.tenant,
            priority=message.priority,
            queue_timeout_ms=queue_timeout_ms,
            fair_key=fair_key,  # whose turn a waiting job takes
            submit=message,
        )
        if waits or selection.node_id is None:
            return Queue(job, selection)
        return Start(job, self.attempts.assign(job, selection.node_id), selection)

    def settle(self, decision: Decision, bound_to: str | None) -> Decision:
        """The decision once the request's binding is in: a request bound to another
        job already is a duplicate of it; a job planned to wait finds the queue filled
        while the binding was on its way."""
        if bound_to is not None:
            return Duplicate(bound_to)
        if isinstance(decision, Queue) and not self.waiting.admits(
            decision.job.fair_key, self.config.max_queued_jobs
        ):
            return self._overloaded()
        return decision

    def _overloaded(self) -> Refuse:
        return Refuse(
            error_codes.OVERLOADED,
            f"{len(self.waiting)} jobs wait for a slot already (this session's share of "
            "max_queued_jobs is used up); retry later",
        )

    async def decide_waiting(
        self, link: Link, message: Submit, job_id: str, principal: Principal = ANONYMOUS
    ) -> Refuse | Start | Queue:
        """`decide`; when no node fits just after nodes left a draining hub (they are on
        their way to another: `Transit`), wait briefly for one to arrive and decide
        again.

        Only a `no_node` refusal (no capable node online at all) waits here; a full
        fleet is the admission queue's (the job is planned to wait for a slot), so the
        two never wait for the same submit at once. A node that arrives is planned for
        like any other: behind the jobs already waiting for it."""
        decision = self.decide(link, message, job_id, principal)
        if (
            isinstance(decision, Refuse)
            and decision.selection is not None
            and self.transit.should_wait(decision.selection)
            and self.transit.recent(self._requirements(link, message)[1])
        ):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.transit.wait_s
            while await self.transit.arrival(deadline - loop.time()):
                decision = self.decide(link, message, job_id, principal)
                if not isinstance(decision, Refuse):
                    break
        return decision

    def _requirements(self, link: Link, message: Submit) -> tuple[str, Requirements]:
        """The submit's session id and what a node must offer to run it."""
        session_id = message.session_id or f"{self.hub_id}:{link.peer_id}"
        routing_key = message.routing_key
        if routing_key is None and self.config.session_affinity:
            routing_key = session_id
        return session_id, Requirements.from_submit(message, routing_key=routing_key)

    # --- carrying it out ----------------------------------------------------------------

    async def carry_out(
        self, decision: Start | Queue | Refuse, message: Submit, reply: SubmitReply,
        started_ns: int, *, bound_job_id: str | None, dispatched: bool = False,
        tenant: str = DEFAULT_TENANT,
    ) -> Rejected | None:
        """Do what was decided for a submit: record and run the job, or have it wait,
        or answer the refusal (releasing the request's binding to `bound_job_id`, the
        job that was planned; None when it was refused before any binding).
        `dispatched`: its first Dispatch went out with the binding. Returns the
        `rejected` answered, if any."""
        if isinstance(decision, Refuse):
            if bound_job_id is not None:
                try:
                    await self.store.release_request(
                        message.request_id, bound_job_id, tenant=tenant
                    )
                except StoreUnavailable as exc:
                    # Still bound, to a job that never existed: a resubmit takes it over.
                    logger.warning("releasing request {} failed: {}", message.request_id, exc)
            if decision.code == error_codes.NO_NODE and decision.reasons is not None:
                self.metrics.no_node_answer(decision.reasons)
            return reply.rejected(decision.code, decision.message, decision.reasons)
        job = decision.job
        self.table.add(job, started_ns)
        if message.timeout_ms is not None:
            self.attempts.watch_overall(job)
        self.attempts.log.accepted(job, queued=isinstance(decision, Queue))
        if isinstance(decision, Queue):
            # Planned before the binding's round trip (when the store waits on I/O).
            await self.attempts.wait(job, reply=reply, recheck=self.store.waits)
        else:
            await self.attempts.send(job, decision.assign, reply=reply, dispatched=dispatched)
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
        self, link: Link, message: Submit, job_id: str, reply: SubmitReply,
        principal: Principal = ANONYMOUS, size: int | None = None,
    ) -> Rejected | None:
        """Decide and carry out a job whose request is already bound to `job_id` (`size`:
        its submit's bytes, estimated from its payload when not given)."""
        started_ns = time.perf_counter_ns()
        decision = await self.decide_waiting(link, message, job_id, principal)
        if isinstance(decision, Start | Queue):
            decision.job.held_bytes = payload_bytes(message.payload) if size is None else size
        return await self.carry_out(
            decision, message, reply, started_ns, bound_job_id=job_id, tenant=principal.tenant
        )


def _check_two_way(message: Submit) -> None:
    """A two-way submit names two distinct `langs`, `tgt_lang: auto`, and a payload the
    hub can add `langs` to (an object, or none); `langs` goes with two-way only."""
    langs = message.langs
    if message.src_lang != AUTO:
        raise ProtocolError(
            error_codes.INVALID_FIELD, "`langs` goes with src_lang: auto only", path="$.langs"
        )
    if langs is None or len(langs) != 2 or langs[0] == langs[1]:
        raise ProtocolError(
            error_codes.INVALID_FIELD,
            "a two-way submit (src_lang: auto) needs `langs`: two distinct languages",
            path="$.langs",
        )
    if message.tgt_lang != AUTO:
        raise ProtocolError(
            error_codes.INVALID_FIELD, "a two-way submit has tgt_lang: auto", path="$.tgt_lang"
        )
    if message.payload is not None and not isinstance(message.payload, dict):
        raise ProtocolError(
            error_codes.INVALID_FIELD,
            "a two-way submit's payload is an object (the hub adds `langs` to it)",
            path="$.payload",
        )


def _two_way_payload(message: Submit) -> dict[str, Any]:
    """What the node gets: the submit's payload with the two languages."""
    payload = dict(message.payload or {})
    payload["langs"] = list(message.langs or ())
    return payload


def payload_bytes(payload: Any, depth: int = 0) -> int:
    """About how many bytes a payload takes on the wire, for a submit whose frame was not
    measured (a resubmit's, a handed-on job's, a live session's utterance)."""
    if isinstance(payload, str | bytes | bytearray):
        return len(payload)
    if depth >= 64:  # deeper than the ingress rules let in
        return 8
    if isinstance(payload, dict):
        return sum(len(str(k)) + payload_bytes(v, depth + 1) + 4 for k, v in payload.items())
    if isinstance(payload, list | tuple):
        return sum(payload_bytes(v, depth + 1) + 1 for v in payload)
    return 8
