"""`JobService`: the one job path, from `submit` to the single terminal `result`.

It composes the job path's parts and is the surface the session layer and
the inbound router use:

| part | owns |
|---|---|
| `JobTable` (table.py) | the jobs this hub is home to, and those being created |
| `ClientDelivery` (delivery.py) | client sessions here; messages to watchers anywhere |
| `Attempts` (attempts.py) | attempts on nodes, deadlines, the one terminal result |
| `Admission` (admission.py) | selection and the first attempt of a new job |
| `WaitingJobs` (waiting.py) | jobs waiting for a free slot |
| `QueuePump` (queue_pump.py) | slots that free, handed to waiting jobs |
| `Resubmits` (resubmits.py) | duplicate submits, watching, adopting a dead home's job |
| `Submits` (submits.py) | `submit` (binding) and `cancel` |
| `NodeEvents` (node_events.py) | node owners' reports at the job's home |
| `NodeRegistry` (node_registry.py) | the node owner role: registration, slots, fencing |
| `OwnerDeadlines` (owner_deadlines.py) | the owner timing its nodes' accepts of other hubs' jobs |
| `Admin` (admin.py) | an operator's drain, undrain, cancel and job list |
| `PreviousRuns` (previous.py) | jobs an earlier run of this hub id was home to |
| `Transit` (transit.py) | nodes between hubs: a submit finding none waits briefly |

The service is the job's *home* role; the node's *owner* role is
`NodeRegistry`. Neither knows whether the store is memory or Redis, nor how
peers are connected (they are `Link`s).
"""

from __future__ import annotations

import asyncio
import random

from hub.cluster.cluster import Cluster
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.fleet_view import FleetView
from hub.core.job_state import HUB_SHUTDOWN, Job, JobRecord
from hub.core.messages import Cancel, ErrorInfo, Submit
from hub.core.metrics import Metrics
from hub.core.principal import DEFAULT_TENANT
from hub.jobs.admin import Admin
from hub.jobs.admission import Admission
from hub.jobs.attempts import Attempts
from hub.jobs.binder import Binder
from hub.jobs.delivery import ClientDelivery
from hub.jobs.job_log import JobLog
from hub.jobs.links import Link, LinkCloser
from hub.jobs.node_events import NodeEvents
from hub.jobs.node_registry import NodeRegistry
from hub.jobs.owner_deadlines import OwnerDeadlines
from hub.jobs.previous import PreviousRuns
from hub.jobs.queue_pump import QueuePump
from hub.jobs.resubmits import Resubmits
from hub.jobs.submits import Submits
from hub.jobs.table import JobTable
from hub.jobs.transit import Transit
from hub.jobs.waiting import WaitingJobs
from hub.runtime.deadline_loop import Clock
from hub.store.archive import JobArchive
from hub.store.base import Store


class JobService:
    def __init__(
        self,
        *,
        config: HubConfig,
        store: Store,
        fleet: FleetView,
        metrics: Metrics,
        cluster: Cluster,
        archive: JobArchive,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        closer: LinkCloser | None = None,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        rng = rng if rng is not None else random.Random(config.selection_seed)
        clock = clock if clock is not None else Clock()
        self.table = JobTable(config.hub_id, boot=store.boot)
        self.archive = archive
        self.delivery = ClientDelivery(hub_id=config.hub_id, cluster=cluster)
        self.nodes = NodeRegistry(
            config=config, fleet=fleet, store=store, published=cluster.node_changed,
            send=cluster.send, closer=closer,
        )
        self.owner_deadlines = OwnerDeadlines(config=config, nodes=self.nodes, clock=clock)
        self.waiting = WaitingJobs(fleet=fleet, metrics=metrics, announce=cluster.set_waiting)
        self.transit = Transit(
            fleet=fleet, clock=clock, window_ms=config.hub_timeout_ms,
            wait_s=config.hub_timeout_ms / 3000,
        )
        self.attempts = Attempts(
            config=config, table=self.table, fleet=fleet, nodes=self.nodes, cluster=cluster,
            delivery=self.delivery, archive=self.archive, metrics=metrics, clock=clock, rng=rng,
            waiting=self.waiting, transit=self.transit,
            job_log=JobLog(config.hub_id, config.job_log_level, config.log_level),
        )
        self.pump = QueuePump(
            waiting=self.waiting, attempts=self.attempts, fleet=fleet, clock=clock
        )
        self.previous = PreviousRuns(
            config=config, table=self.table, delivery=self.delivery, archive=self.archive,
            cluster=cluster,
        )
        self.events = NodeEvents(
            hub_id=config.hub_id, table=self.table, attempts=self.attempts,
            delivery=self.delivery, archive=self.archive, cluster=cluster, metrics=metrics,
            previous=self.previous, pump=self.pump,
        )
        # The owner role reports to the home role, which drives attempts through it.
        self.nodes.report_to(self.events)
        self.admission = Admission(
            config=config, table=self.table, attempts=self.attempts, delivery=self.delivery,
            store=store, metrics=metrics, clock=clock, waiting=self.waiting,
            transit=self.transit,
        )
        self.resubmits = Resubmits(
            config=config, table=self.table, admission=self.admission, delivery=self.delivery,
            archive=self.archive, cluster=cluster, store=store, metrics=metrics,
            previous=self.previous,
        )
        # An earlier run's job whose attempt is lost is resolved again for its watchers.
        self.previous.resolve_with(self.resubmits)
        self.binder = Binder(store)
        self.submits = Submits(
            config=config, table=self.table, admission=self.admission, attempts=self.attempts,
            resubmits=self.resubmits, delivery=self.delivery, binder=self.binder,
            archive=self.archive, cluster=cluster, metrics=metrics,
        )
        self.admin = Admin(
            hub_id=config.hub_id, fleet=fleet, nodes=self.nodes, table=self.table,
            attempts=self.attempts, archive=self.archive, cluster=cluster,
        )

    def __repr__(self) -> str:
        return f"JobService(hub={self.hub_id!r}, {self.table!r}, {self.nodes!r})"

    @property
    def jobs(self) -> dict[str, Job]:
        """The active jobs this hub is home to."""
        return self.table.active

    @property
    def running(self) -> int:
        """Active jobs not waiting for a slot: an attempt is on a node, or being placed
        (what a drain waits for)."""
        return len(self.table.active) - len(self.waiting)

    @property
    def clients(self) -> dict[str, Link]:
        """Client sessions connected to this hub."""
        return self.delivery.clients

    # --- what client sessions do ---------------------------------------------------------

    def client_connected(self, link: Link) -> None:
        self.delivery.connected(link)

    def client_disconnected(self, link: Link) -> None:
        self.delivery.disconnected(link)
        self.resubmits.client_gone(link.peer_id)

    def jobs_held(self, link: Link) -> int:
        """Unfinished jobs that the client session on `link` submitted here."""
        return self.table.held.get(link.peer_id, 0)

    async def submit(self, link: Link, message: Submit, tenant: str = DEFAULT_TENANT) -> None:
        await self.submits.submit(link, message, tenant)

    async def cancel(self, link: Link, message: Cancel, tenant: str = DEFAULT_TENANT) -> None:
        await self.submits.cancel(link, message, tenant)

    # --- reading, running and shutting down -------------------------------------------------

    async def job_record(self, job_id: str) -> JobRecord | None:
        job = self.table.get(job_id)
        if job is not None:
            return job.to_record()
        return await self.archive.load(job_id)

    async def run_deadlines(self) -> None:
        """Fire accept, attempt and overall deadlines (the home's, and the owner's for
        other hubs' attempts on this hub's nodes); runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.attempts.run_deadlines())
            group.create_task(self.owner_deadlines.run())

    async def run_queue(self) -> None:
        """Hand slots that free to waiting jobs; runs until cancelled."""
        await self.pump.run()

    async def shutdown(self) -> None:
        """Stop every unfinished job: cancel at its node and tell its clients."""
        await self.binder.aclose()  # submits waiting on their binding get it first...
        for _ in range(100):  # ...and record their jobs in their next step (bounded: 1 s)
            if not self.table.pending:
                break
            await asyncio.sleep(0.01)
        for job in list(self.table.active.values()):
            await self.attempts.revoke(job, HUB_SHUTDOWN)
            await self.attempts.finish(
                job, ok=False,
                error=ErrorInfo(error_codes.HUB_SHUTDOWN, "the hub is shutting down"),
            )
        await self.archive.flush()
