"""`Submits`: a client's `submit` and `cancel`, from the frame to the job.

    submit -> decide (refuse, start on a node, or queue; no I/O) -> bind the
    request id (store; with the first Dispatch when the node is on another hub)
    -> settle (a duplicate?) -> carry out (record, hand the attempt to its node,
    `accepted`; or `rejected`) -> replay early node events -> answer the
    duplicates that arrived meanwhile

Each submit is answered through its `SubmitReply`, once, whichever way it
goes (answers.py); `submit` answers for a path that failed before answering.

The binding comes after the selection so that a dispatch to another hub costs
no round trip of its own: the store appends it to the owner's inbox in the
same atomic step, and only when the binding was made (a duplicate never
dispatches). A request already bound goes to `Resubmits`. A binding whose
reply is lost is refused `store_unavailable`; if its Dispatch went with it, the
job is tracked all the same, unconfirmed (`Admission.keep_unconfirmed`), since
the store may have made both.
"""

from __future__ import annotations

import time

from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.envelopes import encode
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.job_state import BINDING_FAILED, CANCELLED
from hub.core.messages import Cancel, Error, ErrorInfo, Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, Principal
from hub.jobs.home.admission import (
    Admission,
    Duplicate,
    Queue,
    Refuse,
    Start,
    payload_bytes,
)
from hub.jobs.home.answers import SubmitReply
from hub.jobs.home.attempts import Attempts
from hub.jobs.home.binder import Binder
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.resubmits import Resubmits
from hub.jobs.home.table import JobTable, Pending
from hub.jobs.links import Link
from hub.store.archive import JobArchive
from hub.store.base import Binding


class Submits:
    def __init__(
        self,
        *,
        config: HubConfig,
        table: JobTable,
        admission: Admission,
        attempts: Attempts,
        resubmits: Resubmits,
        delivery: ClientDelivery,
        binder: Binder,
        archive: JobArchive,
        peers: Peers,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.table = table
        self.admission = admission
        self.attempts = attempts
        self.resubmits = resubmits
        self.delivery = delivery
        self.binder = binder
        self.archive = archive
        self.peers = peers
        self.metrics = metrics
        self.in_flight: dict[str, int] = {}
        """Submits being handled, per client session (its peer id): they count against
        `max_jobs_per_session` with the unfinished jobs it holds."""

    async def submit(
        self, link: Link, message: Submit, principal: Principal = ANONYMOUS,
        size: int | None = None,
    ) -> None:
        """A client's submit, answered exactly once: whatever path it takes answers
        through its `SubmitReply`, and if that path fails before answering, the reply
        answers `rejected` here (after an answer, the failure is reported as `error`).
        `size`: its frame's bytes (estimated from the payload when not given)."""
        if size is None:
            size = payload_bytes(message.payload)
        reply = SubmitReply(link, message, self.metrics, self.attempts.log)
        peer = link.peer_id
        held = self.table.held.get(peer, 0) + self.in_flight.get(peer, 0)
        self.in_flight[peer] = self.in_flight.get(peer, 0) + 1
        try:
            refused = self.admission.refuse_early(link, held, principal, size)
            if refused is not None:
                reply.rejected(refused.code, refused.message)
                return
            await self._submit(link, message, principal, reply, size)
        except Exception as exc:
            code, text = error_codes.INTERNAL_ERROR, "the hub failed"
            if isinstance(exc, ProtocolError):
                self.metrics.protocol_errors.inc("client", exc.code)
                code, text = exc.code, exc.message
            elif isinstance(exc, StoreUnavailable):
                code, text = error_codes.STORE_UNAVAILABLE, str(exc)
            else:
                logger.exception("internal error on a submit")
            if reply.answered:
                await link.send(Error(code=code, message=text, request_id=message.request_id))
            else:
                reply.rejected(code, text)
        finally:
            left = self.in_flight[peer] - 1
            if left:
                self.in_flight[peer] = left
            else:
                del self.in_flight[peer]

    async def _submit(
        self, link: Link, message: Submit, principal: Principal, reply: SubmitReply,
        size: int = 0,
    ) -> None:
        """decide -> bind the request id (store; with the first Dispatch when the node
        is on another hub) -> settle -> carry out -> replay early node events -> answer
        the duplicates that arrived meanwhile."""
        started_ns = time.perf_counter_ns()
        table = self.table
        tenant = principal.tenant
        job_id = table.new_job_id()
        # Decided before the binding, so that a dispatch to a node of another hub goes
        # out with the binding, atomically, in the same round trip.
        decision: Refuse | Start | Queue | None = await self.admission.decide_waiting(
            link, message, job_id, principal
        )
        if isinstance(decision, Start | Queue):
            decision.job.held_bytes = size
        # The binding outlives the longest the job can run, plus the idempotency window.
        config = self.config
        ttl_ms = config.idempotency_ttl_ms + config.job_budget_ms(message.timeout_ms)
        binding = Binding(message.request_id, job_id, ttl_ms, tenant=tenant)
        start = decision if isinstance(decision, Start) else None
        if start is not None and start.job.node_hub != self.hub_id:
            binding = binding._replace(
                send_to=start.job.node_hub,
                envelope=encode(self.attempts.dispatch(start.job, start.assign)),
            )
        # Until the job exists, duplicates (from any hub) and node events wait here.
        pending = table.pending[job_id] = Pending()
        rejected: Rejected | None = None
        try:
            try:
                bound_to = await self.binder.bind(binding)
            except BaseException as exc:
                if not isinstance(exc, StoreUnavailable):
                    if start is not None and binding.send_to is not None:
                        # It may have gone out, with only the reply lost.
                        self.peers.send(
                            binding.send_to, self.attempts.revocation(start.job, BINDING_FAILED)
                        )
                    raise  # answered by `submit` (`rejected` `internal_error`)
                # Fail fast: without the binding the hub cannot promise exactly-once.
                rejected = reply.rejected(error_codes.STORE_UNAVAILABLE, str(exc))
                if start is None or binding.send_to is None:
                    # The binding may have been made all the same (a lost reply): a
                    # resubmit then finds it, unknown here, and takes it over
                    # (`Resubmits.take_over`); nothing was dispatched.
                    return
                # The Dispatch may have gone out with it: track the attempt (without the
                # refused submitter) so that it is never started twice.
                await self.admission.keep_unconfirmed(
                    message, start.job, start.assign, started_ns
                )
                rejected = None  # duplicates that waited found the binding: they join
                decision = None
            early, pending.early = pending.early or [], None  # later events find the job
            if decision is not None:
                settled = self.admission.settle(decision, bound_to)
                if isinstance(settled, Duplicate):
                    # Nothing was dispatched (the script sends only what it binds), and
                    # nobody can know this job id: the request belongs to `bound_to`.
                    del table.pending[job_id]
                    reply.is_duplicate()
                    await self.resubmits.resolve(link, message, settled.job_id, principal, reply)
                    return
                rejected = await self.admission.carry_out(
                    settled, message, reply, started_ns, bound_job_id=job_id,
                    dispatched=binding.send_to is not None, tenant=tenant,
                )
            for event in early:  # node events that overtook the binding's reply
                try:
                    await event()
                except ProtocolError as exc:  # about the node's message, not this client's
                    logger.bind(job_id=job_id).info("early node event refused: {}", exc.message)
        finally:
            # Whatever happened, the entry goes and the duplicates that waited get answers
            # (the same refusal as this submit, or the job's `accepted` and result).
            if table.pending.get(job_id) is pending:
                del table.pending[job_id]
            for watcher in pending.watchers:
                if rejected is not None:
                    self.delivery.to_watcher(watcher, rejected)
                elif not await self.resubmits.add_watcher(job_id, watcher):
                    self.delivery.to_watcher(watcher, Rejected(
                        request_id=watcher.request_id, code=error_codes.INTERNAL_ERROR,
                        message="the hub failed to create the job",
                    ))

    async def cancel(
        self, link: Link, message: Cancel, principal: Principal = ANONYMOUS
    ) -> None:
        """A client's cancel: only of a job this connection watches, of its own tenant (a
        job of another tenant is `unknown_job`, as if it did not exist)."""
        tenant = principal.tenant
        job = self.table.get(message.job_id)
        if job is None or job.tenant != tenant:
            stored = None if job is not None else await self.archive.load(message.job_id)
            if stored is None or stored.tenant != tenant:
                raise ProtocolError(error_codes.UNKNOWN_JOB, f"no job {message.job_id}")
            raise ProtocolError(
                error_codes.JOB_FINISHED, f"job {message.job_id} is already finished"
            )
        if not any(w.client_id == link.peer_id and w.hub_id == self.hub_id for w in job.watchers):
            raise ProtocolError(
                error_codes.NOT_YOUR_JOB, f"job {message.job_id} was not submitted here"
            )
        await self.attempts.revoke(job, CANCELLED)
        await self.attempts.finish(
            job, ok=False, error=ErrorInfo(error_codes.CANCELLED, "cancelled by the client")
        )
