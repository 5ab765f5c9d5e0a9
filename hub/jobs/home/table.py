"""`JobTable`: the jobs this hub is home to, and those being created.

A job is *active* from the moment its request binding is confirmed until its
one terminal result. Between the submit and that confirmation (a round trip
to the store) it is *pending*: duplicates of its request (from any hub) and
node events about it (which can overtake the binding's reply in
cross-instance mode) wait in its `Pending` entry, and are answered or
replayed once the job exists. (One exception: a job whose binding's reply was
lost after its Dispatch went with it is active *unconfirmed*: see
`Admission.keep_unconfirmed`.) Every collaborator of the job path reads and
changes jobs through this one table.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hub.core.held_bytes import HeldBytes
from hub.core.job_state import Job, Watcher

Replay = Callable[[], Awaitable[None]]
"""A node event that arrived before its job existed, to run once it does."""


@dataclass(slots=True)
class Pending:
    """A job whose request binding is on its way to the store."""

    watchers: list[Watcher] = field(default_factory=list)
    """Duplicate submits to answer once the job exists (or was refused)."""
    early: list[Replay] | None = field(default_factory=list)
    """Node events that overtook the binding's reply, in arrival order; None once the
    reply is in (events then find the job itself)."""


class JobTable:
    __slots__ = (
        "_counter", "_prefix", "active", "boot", "bytes", "held", "hub_id", "pending",
        "submitted_ns",
    )

    def __init__(
        self, hub_id: str, boot: str | None = None, held_bytes: HeldBytes | None = None
    ) -> None:
        self.hub_id = hub_id
        self.bytes = held_bytes if held_bytes is not None else HeldBytes(1 << 62)
        """The payload bytes of the active jobs, against `max_held_payload_bytes`."""
        self.boot = boot or os.urandom(4).hex()
        """This run's boot token (the store's, `Store.boot`)."""
        self.active: dict[str, Job] = {}
        self.pending: dict[str, Pending] = {}
        self.submitted_ns: dict[str, int] = {}
        """When each active job's submit arrived (perf counter), for the latency metrics."""
        self.held: dict[str, int] = {}
        """Active jobs per client session of this hub that submitted them (its peer id),
        against `max_jobs_per_session`."""
        # `<home hub id>.<boot token>.<counter>`: any hub can tell a job's home, and a
        # restarted hub never reuses an id of its previous run.
        self._prefix = f"{hub_id}.{self.boot}."
        self._counter = 0

    def __repr__(self) -> str:
        return f"JobTable({len(self.active)} active, {len(self.pending)} pending)"

    def new_job_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter}"

    def is_previous_run(self, job_id: str) -> bool:
        """Whether `job_id` was made by an earlier run of this hub (same hub id, another
        boot token): its state was in that run's memory."""
        home, boot, _ = _parts(job_id)
        return home == self.hub_id and boot != self.boot

    def get(self, job_id: str) -> Job | None:
        return self.active.get(job_id)

    def add(self, job: Job, submitted_ns: int) -> None:
        self.active[job.job_id] = job
        self.submitted_ns[job.job_id] = submitted_ns
        self.bytes.hold(job.fair_key, job.held_bytes)
        if job.unconfirmed:
            return  # its submitter was refused: it holds nothing of the session's
        submitter = job.watchers[0]
        if submitter.hub_id == self.hub_id:
            self.held[submitter.client_id] = self.held.get(submitter.client_id, 0) + 1

    def remove(self, job_id: str) -> int | None:
        """Forget a finished job; when its submit arrived (None if unknown)."""
        job = self.active.pop(job_id, None)
        if job is not None:
            self.bytes.release(job.fair_key, job.held_bytes)
        if job is not None and not job.unconfirmed:
            submitter = job.watchers[0]
            if submitter.hub_id == self.hub_id:
                left = self.held.get(submitter.client_id, 0) - 1
                if left > 0:
                    self.held[submitter.client_id] = left
                else:
                    self.held.pop(submitter.client_id, None)
        return self.submitted_ns.pop(job_id, None)


def _parts(job_id: str) -> tuple[str, str, str]:
    parts = job_id.rsplit(".", 2)
    if len(parts) != 3:
        return job_id, "", ""
    return parts[0], parts[1], parts[2]
