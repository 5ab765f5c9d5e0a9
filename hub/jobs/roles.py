"""The job path's two roles and the narrow interfaces between them.

A job's **home** is the hub its client submitted it to (hub/jobs/home/): it
admits the job, picks its node, times its attempts, fails it over and sends
its one result. A node's **owner** is the hub the node is connected to
(hub/jobs/owner/): it registers the node, holds its slots, fences its
messages and reports them to each job's home. For a job on a node of its own
hub, one hub is both; across hubs the two talk in envelopes through the
store (hub/jobs/inbound.py). Neither role imports the other: each sees the
other only through one of these protocols, and `JobService` composes them.
"""

from __future__ import annotations

from typing import Protocol

from hub.core.messages import JobAccept, JobAssign, JobProgress, JobReject, JobResult
from hub.core.principal import DEFAULT_TENANT

JobMessage = JobAccept | JobReject | JobProgress | JobResult
"""A node's message about one of its jobs."""


class Slots(Protocol):
    """What a home asks of this hub's owner role for a node this hub owns (a node of
    another hub is reached with a `Dispatch` envelope instead)."""

    def reserve(
        self, node_id: str, job_id: str, attempt: int, home_hub: str, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> str | None:
        """Take one of the node's slots for the attempt; None when taken, else why not
        (`node_gone`, `draining`, `at_capacity`). Synchronous: the slot is held before
        the caller's next await."""

    def deliver(self, node_id: str, message: JobAssign) -> None:
        """Send a reserved attempt to its node now."""

    async def revoke(self, node_id: str, job_id: str, attempt: int, reason: str) -> None:
        """Take the attempt back from its node (`job_cancel`); its slot frees."""


class JobEvents(Protocol):
    """What the owner reports to the jobs' home role (this hub's, which forwards the
    reports about other hubs' jobs to their homes)."""

    async def node_event(
        self, node_id: str, message: JobMessage, *, home_hub: str, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """A fenced message of the node about one of its jobs."""

    async def node_lost(
        self, node_id: str, job_id: str, attempt: int, *, home_hub: str, outcome: str
    ) -> None:
        """The attempt ended without a result (the node dropped, or did not accept)."""

    async def slot_freed(self) -> None:
        """A result or reject freed a slot on one of this hub's nodes: give it to a
        waiting job now, before the message that freed it is passed on."""
