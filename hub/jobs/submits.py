"""`Submits`: a client's `submit` and `cancel`, from the frame to the job.

    submit -> plan (select, assign; no I/O) -> bind request_id (store; with the
    first Dispatch when the node is on another hub) -> commit (record, hand the
    attempt to its node, `accepted`) -> replay early node events -> answer the
    duplicates that arrived meanwhile

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

from hub.cluster.cluster import Cluster
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.envelopes import encode
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.job_state import BINDING_FAILED, CANCELLED
from hub.core.messages import Cancel, ErrorInfo, Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.principal import DEFAULT_TENANT
from hub.jobs.admission import Admission
from hub.jobs.attempts import Attempts
from hub.jobs.binder import Binder
from hub.jobs.delivery import ClientDelivery
from hub.jobs.links import Link
from hub.jobs.resubmits import Resubmits
from hub.jobs.table import JobTable, Pending
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
        cluster: Cluster,
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
        self.cluster = cluster
        self.metrics = metrics

    async def submit(self, link: Link, message: Submit, tenant: str = DEFAULT_TENANT) -> None:
        """A client's submit; the job belongs to `tenant`, and so does its request_id (the
        same request_id in another tenant names another job)."""
        started_ns = time.perf_counter_ns()
        table = self.table
        job_id = table.new_job_id()
        # Selected and assigned before the binding, so that a dispatch to a node of
        # another hub goes out with the binding, atomically, in the same round trip.
        plan = self.admission.plan(link, message, job_id, tenant)
        if plan.job is None:  # maybe nodes in transit between hubs: wait for one
            plan = await self.admission.replan_in_transit(link, message, job_id, plan, tenant)
        job, assign = plan.job, plan.assign
        # The binding outlives the longest the job can run, plus the idempotency window.
        config = self.config
        ttl_ms = config.idempotency_ttl_ms + config.job_budget_ms(message.timeout_ms)
        binding = Binding(message.request_id, job_id, ttl_ms, tenant=tenant)
        if job is not None and assign is not None and job.node_hub != self.hub_id:
            binding = binding._replace(
                send_to=job.node_hub, envelope=encode(self.attempts.dispatch(job, assign))
            )
        # Until the job exists, duplicates (from any hub) and node events wait here.
        pending = table.pending[job_id] = Pending()
        rejected: Rejected | None = None
        unconfirmed = False
        try:
            try:
                existing = await self.binder.bind(binding)
            except BaseException as exc:
                if not isinstance(exc, StoreUnavailable):
                    if job is not None and binding.send_to is not None:
                        # It may have gone out, with only the reply lost.
                        self.cluster.send(
                            binding.send_to, self.attempts.revocation(job, BINDING_FAILED)
                        )
                    raise  # answered by the session (`rejected` `internal_error`)
                # Fail fast: without the binding the hub cannot promise exactly-once.
                rejected = await self._store_unavailable(link, message, exc)
                if job is None or assign is None or binding.send_to is None:
                    # The binding may have been made all the same (a lost reply): a
                    # resubmit then finds it, unknown here, and takes it over
                    # (`Resubmits.take_over`); nothing was dispatched.
                    return
                # The Dispatch may have gone out with it: track the attempt (without the
                # refused submitter) so that it is never started twice.
                await self.admission.keep_unconfirmed(message, job, assign, started_ns)
                existing, unconfirmed = None, True
                rejected = None  # duplicates that waited found the binding: they join
            early, pending.early = pending.early or [], None  # later events find the job
            if existing is not None:
                # Nothing was dispatched (the script sends only what it binds), and nobody
                # can know this job id: the request belongs to `existing`.
                del table.pending[job_id]
                await self.resubmits.attach(link, message, existing, tenant)
                return
            if not unconfirmed:
                rejected = await self.admission.commit(
                    link, message, job_id, plan, started_ns,
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
                    await self.delivery.to_watcher(watcher, rejected)
                elif not await self.resubmits.add_watcher(job_id, watcher):
                    await self.delivery.to_watcher(watcher, Rejected(
                        request_id=watcher.request_id, code=error_codes.INTERNAL_ERROR,
                        message="the hub failed to create the job",
                    ))

    async def _store_unavailable(
        self, link: Link, message: Submit, exc: StoreUnavailable
    ) -> Rejected:
        """Refuse a submit whose binding failed: the store is unreachable."""
        self.metrics.submit(error_codes.STORE_UNAVAILABLE, message.src_lang, message.tgt_lang)
        self.attempts.log.rejected(message.request_id, error_codes.STORE_UNAVAILABLE, str(exc))
        self.metrics.recent.rejected(time.monotonic(), error_codes.STORE_UNAVAILABLE)
        rejected = Rejected(
            request_id=message.request_id, code=error_codes.STORE_UNAVAILABLE, message=str(exc)
        )
        await link.send(rejected)
        return rejected

    async def cancel(self, link: Link, message: Cancel, tenant: str = DEFAULT_TENANT) -> None:
        """A client's cancel: only of a job this connection watches, of its own tenant (a
        job of another tenant is `unknown_job`, as if it did not exist)."""
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
