"""`Resubmits`: a submit whose `request_id` is already bound to a job, wherever it runs.

The resubmitting client becomes another *watcher* of the existing job and
gets its `accepted` (`duplicate: true`) and its one `result`: from the job if
it is active (or being created) here, from the archive if it finished, from
its home hub (a `Watch` envelope, answered with `Deliver` envelopes) if it
runs there, or by running it again here (*adoption*) if its home hub died
before archiving it.
"""

from __future__ import annotations

import time

from hub.cluster.cluster import Cluster
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.envelopes import Watch
from hub.core.job import Watcher
from hub.core.messages import Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.principal import DEFAULT_TENANT
from hub.jobs.admission import Admission
from hub.jobs.delivery import ClientDelivery
from hub.jobs.links import Link
from hub.jobs.table import JobTable, job_home
from hub.store.archive import JobArchive
from hub.store.base import Store


class Resubmits:
    def __init__(
        self,
        *,
        config: HubConfig,
        table: JobTable,
        admission: Admission,
        delivery: ClientDelivery,
        archive: JobArchive,
        cluster: Cluster,
        store: Store,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.table = table
        self.admission = admission
        self.delivery = delivery
        self.archive = archive
        self.cluster = cluster
        self.store = store
        self.metrics = metrics

    async def attach(
        self, link: Link, message: Submit, job_id: str, tenant: str = DEFAULT_TENANT
    ) -> None:
        """A resubmitted request_id: answer for the job that exists, wherever it runs (it
        is the tenant's own: the binding that named it is scoped to `tenant`)."""
        self.metrics.submit("duplicate", message.src_lang, message.tgt_lang)
        request_id = message.request_id
        watcher = self.delivery.watcher(link, request_id)
        if await self.add_watcher(job_id, watcher):
            return
        home = job_home(job_id)
        cluster = self.cluster
        if home != self.hub_id and not cluster.is_live(home):
            await cluster.refresh_live()
        if home != self.hub_id and cluster.is_live(home):
            cluster.send(
                home,
                Watch(
                    self.hub_id, job_id=job_id, client_id=link.peer_id, submit=message,
                    tenant=tenant,
                ),
            )
            return
        if home != self.hub_id:
            # The home hub died: results it never archived may still sit in its inbox.
            await cluster.reap(home)
            if await self.add_watcher(job_id, watcher):
                return
            if await self.adopt(link, message, job_id, tenant):
                return
        # Bound, but not recorded anywhere this hub can see.
        self.metrics.recent.rejected(time.monotonic(), error_codes.DUPLICATE_IN_FLIGHT)
        await link.send(Rejected(
            request_id=request_id, code=error_codes.DUPLICATE_IN_FLIGHT,
            message=f"request {request_id} is already being handled; submit it again later",
        ))

    async def adopt(
        self, link: Link, message: Submit, job_id: str, tenant: str = DEFAULT_TENANT
    ) -> bool:
        """Run again, here, a job whose home hub died before archiving its result.

        Its attempts were revoked when the death was noticed (`NodeRegistry.home_lost`
        on every hub), so the job is not running anywhere. False when another hub
        rebound the request first."""
        new_job_id = self.table.new_job_id()
        if not await self.store.rebind_request(
            message.request_id, job_id, new_job_id, self.config.idempotency_ttl_ms,
            tenant=tenant,
        ):
            return False
        self.metrics.submits.inc("adopted")
        await self.admission.create(link, message, new_job_id, tenant)
        return True

    async def add_watcher(self, job_id: str, watcher: Watcher) -> bool:
        """Have `watcher` get the job's `accepted` (duplicate) and its one `result`.

        False when this hub knows nothing of the job (not active here, no record).
        """
        pending = self.table.pending.get(job_id)
        if pending is not None:
            pending.watchers.append(watcher)  # answered once the job exists (`Submits`)
            return True
        job = self.table.get(job_id)
        if job is not None:
            job.watchers.append(watcher)
            await self.delivery.accepted(watcher, job_id, job.node_id, queued=job.queued)
            return True
        stored = await self.archive.load(job_id)
        if stored is None or stored.result is None:
            return False
        await self.delivery.accepted(watcher, job_id, stored.result.node_id)
        await self.delivery.result(watcher, stored.result)
        return True
