"""Events from node owners about a job's attempts (the `JobEvents` that
`NodeRegistry` reports to): accept, progress, result, reject, node lost,
refusals and a node's hub dying.

`JobService` inherits this. A job whose home is another hub gets the event
forwarded there; at the home, each event is fenced (job active, same node,
same attempt) and drives the job's state machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from hub.archive import JobArchive
from hub.cluster import Cluster
from hub.envelopes import NodeEvent, NodeLost
from hub.errors import ProtocolError
from hub.jobs import Job, Watcher
from hub.links import Link
from hub.messages import (
    ClientOutbound,
    ErrorInfo,
    JobAccept,
    JobProgress,
    JobReject,
    JobResult,
    Progress,
)
from hub.metrics import Metrics
from hub.node_registry import JobMessage


class NodeEvents:
    """The node-event part of the job home role (mixed into `JobService`)."""

    hub_id: str
    metrics: Metrics
    cluster: Cluster
    archive: JobArchive
    jobs: dict[str, Job]
    clients: dict[str, Link]
    _early: dict[str, list[Callable[[], Awaitable[None]]]]

    async def _finish(
        self, job: Job, *, ok: bool, output: Any = None, error: ErrorInfo | None = None,
        announce: Link | None = None,
    ) -> None:
        raise NotImplementedError

    async def _next_attempt(self, job: Job, outcome: str, *, announce: Link | None = None) -> None:
        raise NotImplementedError

    async def _to_watcher(self, watcher: Watcher, message: ClientOutbound) -> None:
        raise NotImplementedError


    async def node_event(
        self, node_id: str, message: JobMessage, *, home_hub: str, request_id: str
    ) -> None:
        """A fenced node message about a job; jobs of other homes are forwarded there."""
        if home_hub != self.hub_id:
            if self.cluster.is_live(home_hub):
                self.cluster.send(
                    home_hub,
                    NodeEvent(self.hub_id, node_id=node_id, request_id=request_id, message=message),
                )
            elif isinstance(message, JobResult):
                await self.archive_orphan(node_id, request_id, message)
            return
        job = self.jobs.get(message.job_id)
        if job is None:
            if (early := self._early.get(message.job_id)) is not None:
                early.append(
                    partial(self.node_event, node_id, message, home_hub=home_hub,
                            request_id=request_id)
                )
                return
            raise ProtocolError("job_finished", f"job {message.job_id} is no longer active")
        job.fence(node_id, message.attempt)
        match message:
            case JobAccept():
                if job.accept():
                    self.metrics.attempts.inc("accepted")
            case JobProgress():
                job.progress()
                progress = Progress(job_id=job.job_id, data=message.data)
                told = set()
                for watcher in job.watchers:  # once per client session, not per submit
                    if (watcher.hub_id, watcher.client_id) not in told:
                        told.add((watcher.hub_id, watcher.client_id))
                        await self._to_watcher(watcher, progress)
            case JobResult():
                if job.accept():  # implied: its owner hub may send a result without it
                    self.metrics.attempts.inc("accepted")
                self.metrics.attempts.inc("ok" if message.ok else "failed")
                # A node's own failure is the job's outcome: it ran the job, and
                # running it again elsewhere could repeat its effects. Nodes that
                # want a retry elsewhere send job_reject instead.
                error = message.error
                if not message.ok and error is None:
                    error = ErrorInfo("failed", "the node reported a failure without details")
                await self._finish(job, ok=message.ok, output=message.output, error=error)
            case JobReject():
                await self._next_attempt(job, "rejected")

    async def node_lost(self, node_id: str, job_id: str, attempt: int, *, home_hub: str) -> None:
        if home_hub != self.hub_id:
            if self.cluster.is_live(home_hub):
                self.cluster.send(
                    home_hub, NodeLost(self.hub_id, node_id=node_id, job_id=job_id, attempt=attempt)
                )
            return
        await self.attempt_failed(job_id, attempt, "node_lost", node_id=node_id)

    async def attempt_failed(
        self, job_id: str, attempt: int, outcome: str, *, node_id: str | None = None
    ) -> None:
        """An attempt ended without a result (node lost, refused by its owner)."""
        if (early := self._early.get(job_id)) is not None:
            early.append(partial(self.attempt_failed, job_id, attempt, outcome, node_id=node_id))
            return
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt or (node_id and job.node_id != node_id):
            return
        await self._next_attempt(job, outcome)

    async def node_hub_lost(self, hub_id: str) -> None:
        """A hub died: every attempt on one of its nodes failed."""
        for job in list(self.jobs.values()):
            if job.node_hub == hub_id and not job.finished:
                await self._next_attempt(job, "hub_lost")

    async def archive_orphan(self, node_id: str, request_id: str, message: JobResult) -> None:
        """Keep the result of a job whose home hub died, for the client's resubmit."""
        await self.archive.put_orphan(node_id, request_id, message)
