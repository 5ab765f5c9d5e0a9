"""`JobHome`: the home role, composed: the jobs this hub's clients submitted here.

| part | owns |
|---|---|
| `JobTable` (table.py) | the jobs this hub is home to, and those being created |
| `ClientDelivery` (delivery.py) | client sessions here; messages to watchers anywhere |
| `Attempts` (attempts.py) | attempts on nodes, deadlines, the one terminal result |
| `Admission` (admission.py) | selection and the first attempt of a new job |
| `WaitingJobs` (waiting.py) | jobs waiting for a free slot |
| `QueuePump` (queue_pump.py) | slots that free, handed to waiting jobs |
| `Transit` (transit.py) | nodes between hubs: a submit finding none waits briefly |
| `PreviousRuns` (previous.py) | jobs an earlier run of this hub id was home to |
| `Resubmits` (resubmits.py) | duplicate submits, watching, adopting a dead home's job |
| `NodeEvents` (node_events.py) | node owners' reports (`JobEvents`) at the job's home |
| `Submits` (submits.py) | `submit` (binding) and `cancel` |

It reaches nodes through `Slots` (this hub's owner role) and other hubs
through `Peers`; the owner role reaches it through `events`. Every part is
built here, once, in dependency order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import msgspec
from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.envelopes import HandedJob, Handoff
from hub.core.errors import StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.held_bytes import HeldBytes
from hub.core.job_state import HUB_SHUTDOWN, Job, JobRecord
from hub.core.messages import Cancel, ErrorInfo, Submit
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, Principal
from hub.jobs.home.admission import Admission
from hub.jobs.home.attempts import Attempts
from hub.jobs.home.binder import Binder
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.job_log import JobLog
from hub.jobs.home.node_events import NodeEvents
from hub.jobs.home.previous import PreviousRuns
from hub.jobs.home.queue_pump import QueuePump
from hub.jobs.home.resubmits import Resubmits
from hub.jobs.home.submits import Submits
from hub.jobs.home.table import JobTable
from hub.jobs.home.transit import Transit
from hub.jobs.home.waiting import WaitingJobs
from hub.jobs.links import Link
from hub.jobs.roles import Slots
from hub.runtime.deadline_loop import Clock
from hub.store.archive import JobArchive
from hub.store.base import Store

HANDOFF_BATCH = 256
"""Jobs per `Handoff` envelope."""


class JobHome:
    def __init__(
        self,
        *,
        config: HubConfig,
        store: Store,
        fleet: FleetView,
        metrics: Metrics,
        peers: Peers,
        archive: JobArchive,
        slots: Slots,
        reap: Callable[[str], Awaitable[None]],
        rng: random.Random,
        clock: Clock,
        held_bytes: HeldBytes | None = None,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.archive = archive
        self._store = store
        self._peers = peers
        self._clock = clock
        self.table = table = JobTable(
            config.hub_id, boot=store.boot,
            held_bytes=held_bytes or HeldBytes(config.max_held_payload_bytes),
        )
        self.delivery = delivery = ClientDelivery(hub_id=config.hub_id, peers=peers)
        self.waiting = waiting = WaitingJobs(
            fleet=fleet, metrics=metrics, announce=peers.set_waiting
        )
        self.transit = transit = Transit(
            fleet=fleet, clock=clock,
            # Long enough for a dead hub's nodes to notice and reconnect elsewhere.
            window_ms=config.hub_timeout_ms + config.node_timeout_ms,
            wait_s=config.hub_timeout_ms / 3000,
            hub_gone=lambda hub_id: hub_id != config.hub_id and (
                peers.is_excluded(hub_id) or not peers.is_live(hub_id)
            ),
            hub_draining=peers.is_draining,
        )
        self.attempts = attempts = Attempts(
            config=config, table=table, fleet=fleet, slots=slots, peers=peers,
            delivery=delivery, archive=archive, metrics=metrics, clock=clock, rng=rng,
            waiting=waiting, transit=transit,
            job_log=JobLog(config.hub_id, config.job_log_level, config.log_level),
        )
        self.pump = pump = QueuePump(waiting=waiting, attempts=attempts, fleet=fleet, clock=clock)
        self.previous = previous = PreviousRuns(
            config=config, table=table, delivery=delivery, archive=archive, peers=peers,
        )
        self.admission = admission = Admission(
            config=config, table=table, attempts=attempts, delivery=delivery, store=store,
            metrics=metrics, clock=clock, waiting=waiting, transit=transit,
        )
        self.resubmits = resubmits = Resubmits(
            config=config, table=table, admission=admission, delivery=delivery,
            archive=archive, peers=peers, store=store, metrics=metrics, previous=previous,
            reap=reap,
        )
        self.events = NodeEvents(
            hub_id=config.hub_id, table=table, attempts=attempts, delivery=delivery,
            archive=archive, peers=peers, metrics=metrics, previous=previous,
            resubmits=resubmits, pump=pump,
        )
        """What the owner role reports to (`JobEvents`)."""
        self.binder = binder = Binder(store)
        self.submits = Submits(
            config=config, table=table, admission=admission, attempts=attempts,
            resubmits=resubmits, delivery=delivery, binder=binder, archive=archive,
            peers=peers, metrics=metrics,
        )

    def __repr__(self) -> str:
        return f"JobHome(hub={self.hub_id!r}, {self.table!r})"

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

    def client_connected(
        self, link: Link, principal: Principal = ANONYMOUS, *, internal: bool = False
    ) -> None:
        """A client connected (`internal`: one of this hub's own submitters, a live
        session or a room, not counted as a connection)."""
        self.delivery.connected(link, principal, internal=internal)

    def client_disconnected(self, link: Link) -> None:
        self.delivery.disconnected(link)
        self.resubmits.client_gone(link.peer_id)

    def jobs_held(self, link: Link) -> int:
        """Unfinished jobs that the client session on `link` submitted here."""
        return self.table.held.get(link.peer_id, 0)

    async def submit(
        self, link: Link, message: Submit, principal: Principal = ANONYMOUS,
        size: int | None = None,
    ) -> None:
        """A client's submit, answered once (`accepted` or `rejected`, with its request
        id), for the principal's tenant; `size` is its frame's length (estimated from
        its payload when not given), held against `max_held_payload_bytes`."""
        await self.submits.submit(link, message, principal, size)

    async def cancel(
        self, link: Link, message: Cancel, principal: Principal = ANONYMOUS
    ) -> None:
        """A client's cancel of a job it submitted; `ProtocolError` to refuse it."""
        await self.submits.cancel(link, message, principal)

    def stop_accepting(self) -> None:
        """The hub drains or stops: every submit from now on is `rejected`
        `hub_shutdown`."""
        self.admission.accepting = False

    # --- reading, running and shutting down -------------------------------------------------

    async def job_record(self, job_id: str) -> JobRecord | None:
        job = self.table.get(job_id)
        if job is not None:
            return job.to_record()
        return await self.archive.load(job_id)

    async def run_deadlines(self) -> None:
        """Fire the attempts' accept, attempt and overall deadlines; until cancelled."""
        await self.attempts.run_deadlines()

    async def run_queue(self) -> None:
        """Hand slots that free to waiting jobs; runs until cancelled."""
        await self.pump.run()

    async def shutdown(self) -> None:
        """Stop every unfinished job: cancel it at its node, tell its clients
        `hub_shutdown`, and hand it on: to a live hub that runs it under the same
        request id (cross-instance), or by releasing its request id (no hub to take it).
        Either way a resubmit of the request gets the job run, never this stop's
        failure: nothing is archived for it here."""
        await self.binder.aclose()  # submits waiting on their binding get it first...
        for _ in range(100):  # ...and record their jobs in their next step (bounded: 1 s)
            if not self.table.pending:
                break
            await asyncio.sleep(0.01)
        targets = self._peers.handoff_targets()
        handed: dict[str, list[HandedJob]] = {hub_id: [] for hub_id in targets}
        released: list[Job] = []
        now_ms = self._clock.now_ms()
        for i, job in enumerate(list(self.table.active.values())):
            await self.attempts.revoke(job, HUB_SHUTDOWN)
            await self.attempts.finish(
                job, ok=False,
                error=ErrorInfo(error_codes.HUB_SHUTDOWN, "the hub is shutting down"),
                archive=False,
            )
            left_ms = job.deadline_ms - now_ms
            if targets and isinstance(job.submit, Submit) and left_ms > 0:
                submit = msgspec.structs.replace(job.submit, timeout_ms=left_ms)
                handed[targets[i % len(targets)]].append(
                    HandedJob(job.job_id, job.tenant, submit)
                )
            else:
                released.append(job)
        for hub_id, jobs in handed.items():
            for start in range(0, len(jobs), HANDOFF_BATCH):
                batch = jobs[start : start + HANDOFF_BATCH]
                self._peers.send(hub_id, Handoff(self.hub_id, jobs=batch))
            if jobs:
                logger.info("handed {} unfinished jobs to hub {}", len(jobs), hub_id)
        for job in released:
            try:
                await self._store.release_request(job.request_id, job.job_id, tenant=job.tenant)
            except StoreUnavailable as exc:  # its binding lapses with its TTL
                logger.warning("releasing request {} failed: {}", job.request_id, exc)
        await self.archive.flush()
