"""`NodeEvents`: what node owners report about a job's attempts, at the job's home.

The `JobEvents` that the owner role (`NodeOwner`) reports to (accept, progress, result,
reject, node lost), plus refusals by another hub's registry and a node's hub
dying. An event about a job whose home is another hub is forwarded there (or,
for a result whose home died, archived for the client's resubmit). At the
home, each event is fenced (job active, same node, same attempt) and drives
the job's state machine through `Attempts`. An event that overtakes its job's
binding (cross-instance mode) waits in the job's `Pending` entry and is
replayed once the job exists. A slot that a result or reject frees on one of
this hub's nodes goes to a waiting job (`QueuePump.pump_now`) before the
result is passed on.
"""

from __future__ import annotations

from functools import partial

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.envelopes import NodeEvent, NodeLost
from hub.core.errors import ProtocolError
from hub.core.job_state import ACCEPTED, BAD_OUTPUT, HUB_LOST, NODE_LOST, REJECTED
from hub.core.messages import (
    ErrorInfo,
    JobAccept,
    JobProgress,
    JobReject,
    JobResult,
    Progress,
)
from hub.core.metrics import Metrics
from hub.core.principal import DEFAULT_TENANT
from hub.jobs.home.attempts import Attempts
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.previous import PreviousRuns
from hub.jobs.home.queue_pump import QueuePump
from hub.jobs.home.resubmits import Resubmits
from hub.jobs.home.table import JobTable, Replay
from hub.jobs.roles import JobMessage
from hub.store.archive import JobArchive


class NodeEvents:
    def __init__(
        self,
        *,
        hub_id: str,
        table: JobTable,
        attempts: Attempts,
        delivery: ClientDelivery,
        archive: JobArchive,
        peers: Peers,
        metrics: Metrics,
        previous: PreviousRuns,
        resubmits: Resubmits,
        pump: QueuePump,
    ) -> None:
        self.hub_id = hub_id
        self.resubmits = resubmits
        self.pump = pump
        self.previous = previous
        self.table = table
        self.attempts = attempts
        self.delivery = delivery
        self.archive = archive
        self.peers = peers
        self.metrics = metrics
        self._rejoin_grace_s = 2 * attempts.config.hub_timeout_ms / 1000
        """How long after this hub was out of touch a node's loss may be its move."""

    async def slot_freed(self) -> None:
        """A slot on one of this hub's nodes freed: this hub's waiting jobs get it at
        once, in the step that freed it (other hubs' jobs learn of it from the node's
        published load)."""
        await self.pump.pump_now()

    def _early(self, job_id: str) -> list[Replay] | None:
        """Where an event about a job still waiting on its binding goes, if it is."""
        pending = self.table.pending.get(job_id)
        return None if pending is None else pending.early

    async def node_event(
        self, node_id: str, message: JobMessage, *, home_hub: str, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """A fenced node message about a job; jobs of other homes are forwarded there."""
        if home_hub != self.hub_id:
            if self.peers.is_live(home_hub):
                self.peers.send(
                    home_hub,
                    NodeEvent(
                        self.hub_id, node_id=node_id, request_id=request_id, message=message,
                        tenant=tenant,
                    ),
                )
            elif isinstance(message, JobResult):
                await self.archive.put_orphan(node_id, request_id, message, tenant=tenant)
            return
        job = self.table.active.get(message.job_id)
        if job is None:
            if (early := self._early(message.job_id)) is not None:
                early.append(
                    partial(self.node_event, node_id, message, home_hub=home_hub,
                            request_id=request_id, tenant=tenant)
                )
                return
            if self.previous.owns(message.job_id):  # an earlier run of this hub made it
                stranded = await self.previous.node_event(
                    node_id, message, request_id=request_id, tenant=tenant
                )
                await self.resubmits.resolve_stranded(message.job_id, stranded)
                return
            if isinstance(message, JobResult):
                # A result is never thrown away: a job this run does not know (its
                # binding's reply was lost) answers a later resubmit with it.
                await self.archive.put_orphan(node_id, request_id, message, tenant=tenant)
            raise ProtocolError(
                error_codes.JOB_FINISHED, f"job {message.job_id} is no longer active"
            )
        job.fence(node_id, message.attempt)
        match message:
            case JobAccept():
                if job.accept():
                    self.metrics.attempts.inc(ACCEPTED)
            case JobProgress():
                job.progress()
                self.delivery.progress(job, Progress(job_id=job.job_id, data=message.data))
            case JobResult():
                if job.accept():  # implied: its owner hub may send a result without it
                    self.metrics.attempts.inc(ACCEPTED)
                langs = job.requirements.two_way
                if message.ok and langs is not None and not _detected(message.output, langs):
                    # A two-way job's output must say which language was spoken: without
                    # it the result cannot be directed, so the attempt failed (retried
                    # within max_attempts, like any failed attempt).
                    await self.attempts.next(job, BAD_OUTPUT)
                    return
                self.metrics.attempts.inc("ok" if message.ok else error_codes.FAILED)
                # A node's own failure is the job's outcome: it ran the job, and
                # running it again elsewhere could repeat its effects. Nodes that
                # want a retry elsewhere send job_reject instead.
                error = message.error
                if not message.ok and error is None:
                    error = ErrorInfo(
                        error_codes.FAILED, "the node reported a failure without details"
                    )
                await self.attempts.finish(job, ok=message.ok, output=message.output, error=error)
            case JobReject():
                await self.attempts.next(job, REJECTED)

    async def node_lost(
        self, node_id: str, job_id: str, attempt: int, *, home_hub: str, outcome: str = NODE_LOST
    ) -> None:
        if home_hub != self.hub_id:
            if self.peers.is_live(home_hub):
                self.peers.send(
                    home_hub,
                    NodeLost(
                        self.hub_id, node_id=node_id, job_id=job_id, attempt=attempt,
                        outcome=outcome,
                    ),
                )
            return
        await self.attempt_failed(job_id, attempt, outcome, node_id=node_id)

    async def attempt_failed(
        self, job_id: str, attempt: int, outcome: str, *, node_id: str | None = None
    ) -> None:
        """An attempt ended without a result (node lost, refused by its owner)."""
        if (early := self._early(job_id)) is not None:
            early.append(partial(self.attempt_failed, job_id, attempt, outcome, node_id=node_id))
            return
        if self.previous.owns(job_id):
            stranded = self.previous.attempt_lost(job_id, attempt)
            await self.resubmits.resolve_stranded(job_id, stranded)
            return
        job = self.table.get(job_id)
        if (
            job is None or job.attempt != attempt or job.queued
            or (node_id and job.node_id != node_id)
        ):
            return
        if outcome == NODE_LOST and self.peers.out_of_touch(self._rejoin_grace_s):
            # This hub was frozen: the node left because its pings went unanswered, and
            # replays its results at the hub it moved to (forwarded here, or archived if
            # that hub had declared this one dead). Wait for them before running it again.
            self.attempts.stranded.strand(job, outcome)
            self.attempts.log.stranded(job, "this hub was out of touch")
            return
        await self.attempts.next(job, outcome)

    async def node_hub_lost(self, hub_id: str) -> None:
        """A hub died: every attempt on one of its nodes waits for its node to move and
        replay its result, then fails over (`StrandedAttempts`)."""
        stranded = self.attempts.stranded
        for job in list(self.table.active.values()):
            if job.node_hub == hub_id and not job.finished and not job.queued:
                stranded.strand(job, HUB_LOST, heals=True)
                self.attempts.log.stranded(job, f"hub {hub_id} died")

    def home_revived(self, hub_id: str, running: set[tuple[str, int]]) -> None:
        """A hub that had declared this one dead sees it again: it stopped every attempt
        of this hub's jobs on its nodes when it did, except `running` (job id, attempt).
        The others end: with the result it archived for them, or failed over."""
        stranded = self.attempts.stranded
        for job in list(self.table.active.values()):
            if (
                job.node_hub == hub_id and not job.finished and not job.queued
                and (job.job_id, job.attempt) not in running
            ):
                stranded.strand(job, HUB_LOST, wait_ms=stranded.replay_grace_ms)
                self.attempts.log.stranded(job, f"hub {hub_id} had declared this hub dead")


def _detected(output: object, langs: tuple[str, str]) -> bool:
    """Whether a two-way output names the language it detected, one of the two."""
    return isinstance(output, dict) and output.get("src_lang") in langs
