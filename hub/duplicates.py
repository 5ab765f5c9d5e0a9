"""Duplicate submits: a `request_id` that is already bound to a job, wherever it runs.

`JobService` inherits this: a resubmitted request finds its binding and gets
the existing job's `accepted` (`duplicate: true`) and its one `result`: from
the job if it is active here, from the archive if it finished, from its home
hub (a `Watch` envelope, answered with `Deliver` envelopes) if it runs there,
or by running it again here (`adopt`) if its home hub died before archiving it.
"""

from __future__ import annotations

import time

import msgspec

from hub.archive import JobArchive
from hub.cluster import Cluster
from hub.config import HubConfig
from hub.envelopes import Watch
from hub.jobs import Job, Watcher
from hub.links import Link
from hub.messages import Accepted, ClientOutbound, Rejected, Result, Submit
from hub.metrics import Metrics
from hub.store.base import Store


class DuplicateRequests:
    """The duplicate-request part of the job home role (mixed into `JobService`)."""

    config: HubConfig
    hub_id: str
    store: Store
    metrics: Metrics
    cluster: Cluster
    archive: JobArchive
    jobs: dict[str, Job]
    clients: dict[str, Link]
    _creating: dict[str, list[Watcher]]

    def _new_job_id(self) -> str:
        raise NotImplementedError

    async def _create(
        self, link: Link, message: Submit, job_id: str, started_ns: int
    ) -> Rejected | None:
        raise NotImplementedError

    async def _to_watcher(self, watcher: Watcher, message: ClientOutbound) -> None:
        raise NotImplementedError

    async def _attach_duplicate(self, link: Link, message: Submit, job_id: str) -> None:
        """A resubmitted request_id: answer for the job that exists, wherever it runs."""
        self.metrics.submits.inc("duplicate")
        request_id = message.request_id
        watcher = Watcher(self.hub_id, link.peer_id, request_id)
        if await self.add_watcher(job_id, watcher):
            return
        home = job_home(job_id)
        if home != self.hub_id and not self.cluster.is_live(home):
            await self.cluster.refresh_live()
        if home != self.hub_id and self.cluster.is_live(home):
            self.cluster.send(home, Watch(self.hub_id, job_id=job_id, client_id=link.peer_id,
                                          submit=message))
            return
        if home != self.hub_id:
            # The home hub died: results it never archived may still sit in its inbox.
            await self.cluster.reap(home)
            if await self.add_watcher(job_id, watcher):
                return
            if await self.adopt(link, message, job_id):
                return
        # Bound, but not recorded anywhere this hub can see.
        await link.send(Rejected(
            request_id=request_id, code="duplicate_in_flight",
            message=f"request {request_id} is already being handled; submit it again later",
        ))

    async def adopt(self, link: Link, message: Submit, job_id: str) -> bool:
        """Run again, here, a job whose home hub died before archiving its result.

        Its attempts were revoked when the death was noticed (`NodeRegistry.home_lost`
        on every hub), so the job is not running anywhere. False when another hub
        rebound the request first."""
        new_job_id = self._new_job_id()
        if not await self.store.rebind_request(
            message.request_id, job_id, new_job_id, self.config.idempotency_ttl_ms
        ):
            return False
        self.metrics.submits.inc("adopted")
        await self._create(link, message, new_job_id, time.perf_counter_ns())
        return True

    async def add_watcher(self, job_id: str, watcher: Watcher) -> bool:
        """Have `watcher` get the job's `accepted` (duplicate) and its one `result`.

        False when this hub knows nothing of the job (not active here, no record).
        """
        pending = self._creating.get(job_id)
        if pending is not None:
            pending.append(watcher)  # answered once the job exists (see `submit`)
            return True
        job = self.jobs.get(job_id)
        if job is not None:
            job.watchers.append(watcher)
            await self._to_watcher(
                watcher,
                Accepted(
                    request_id=watcher.request_id, job_id=job_id, node_id=job.node_id,
                    duplicate=True,
                ),
            )
            return True
        stored = await self.archive.load(job_id)
        if stored is None or stored.result is None:
            return False
        result = stored.result
        await self._to_watcher(
            watcher,
            Accepted(
                request_id=watcher.request_id, job_id=job_id, node_id=result.node_id,
                duplicate=True,
            ),
        )
        await self._to_watcher(watcher, readdressed(result, watcher.request_id))
        return True



def job_home(job_id: str) -> str:
    """The hub a job was submitted to (job ids are `<hub id>.<boot>.<counter>`)."""
    return job_id.rsplit(".", 2)[0]


def readdressed(result: Result, request_id: str) -> Result:
    return msgspec.structs.replace(result, request_id=request_id)

