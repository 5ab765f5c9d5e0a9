"""`WaitingJobs`: the jobs this hub is home to that wait for a free slot.

It holds the pure `AdmissionQueue` (which waiting job a freed slot takes)
with the `Job`s themselves, and watches the `FleetView` for slots that free:
every change of a node that leaves it online with a free slot (a result, a
reject, a cancel, a timeout, a join, a higher `max_concurrency`, a drained
node coming back; in cross-instance mode also another hub's node, as its
owner publishes it) marks the node, and `QueuePump` (queue_pump.py) hands
the marked nodes' slots to waiting jobs. While anything waits, the cluster
is told (`announce`), so that other hubs publish their load changes at once
instead of on the coalescing interval.

Metrics: `nodehub_queued_jobs` (the gauge reads `len`) and
`nodehub_queue_wait_seconds` (observed when a job leaves the queue, whatever
the reason). No I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hub.core.admission_queue import AdmissionQueue
from hub.core.fleet_view import FleetView
from hub.core.job_state import Job
from hub.core.metrics import Metrics
from hub.core.snapshot import ONLINE, NodeState


class WaitingJobs:
    __slots__ = ("_announce", "_fleet", "_metrics", "_wake", "dirty", "jobs", "per_key", "queue")

    def __init__(
        self,
        *,
        fleet: FleetView,
        metrics: Metrics,
        announce: Callable[[bool], None] = lambda waiting: None,
    ) -> None:
        """`announce(waiting)` is told when the queue turns non-empty, and empty again."""
        self.queue = AdmissionQueue()
        self.jobs: dict[str, Job] = {}
        self.per_key: dict[str, int] = {}
        """Waiting jobs per fairness key."""
        self.dirty: set[str] = set()
        """Nodes that may have a slot for a waiting job."""
        self._fleet = fleet
        self._metrics = metrics
        self._announce = announce
        self._wake = asyncio.Event()
        fleet.subscribe(self._node_changed)

    def __len__(self) -> int:
        return len(self.jobs)

    def __repr__(self) -> str:
        return f"WaitingJobs({len(self.jobs)} waiting, {len(self.dirty)} nodes to look at)"

    # --- jobs in and out -----------------------------------------------------------------

    def add(self, job: Job, fair_key: str) -> None:
        """Queue a job that `Job.wait` put in the `queued` state; a job that waited
        before keeps its place in line."""
        job.queue_order = self.queue.push(
            job.job_id, job.requirements, priority=job.priority, fair_key=fair_key,
            order=job.queue_order,
        )
        self.jobs[job.job_id] = job
        self.per_key[job.fair_key] = self.per_key.get(job.fair_key, 0) + 1
        if len(self.jobs) == 1:
            self._announce(True)

    def remove(self, job: Job, now_ms: int) -> bool:
        """Take a job out of the queue (finished, cancelled, timed out); False if it
        was not waiting."""
        if self.jobs.pop(job.job_id, None) is None:
            return False
        self.queue.remove(job.job_id)
        self._left(job, now_ms)
        return True

    def take_for(self, state: NodeState, now_ms: int) -> Job | None:
        """The waiting job a free slot on this node goes to, out of the queue."""
        entry = self.queue.take_for(state.node_id, state.caps)
        if entry is None:
            return None
        job = self.jobs.pop(entry.job_id)
        job.queue_order = entry.order  # its place, should its dispatch be refused
        self._left(job, now_ms)
        return job

    def ahead(self, state: NodeState, priority: int) -> bool:
        """Whether a waiting job of at least `priority` fits this node: a new job
        must not take the slot from it."""
        if not self.jobs:
            return False
        entry = self.queue.best_for(state.node_id, state.caps)
        return entry is not None and entry.priority >= priority

    def admits(self, fair_key: str, limit: int) -> bool:
        """Whether one more job of `fair_key` may wait: fewer than `limit` wait, and the
        key holds less than an equal share of `limit` among the keys waiting. A
        backlog that filled the queue alone makes room for a newcomer as its own jobs
        leave, instead of keeping every freed place by out-submitting it."""
        waiting = len(self.jobs)
        if waiting >= limit:
            return False
        held = self.per_key.get(fair_key, 0)
        keys = len(self.per_key) + (0 if held else 1)
        return held < max(1, limit // keys)

    def _left(self, job: Job, now_ms: int) -> None:
        held = self.per_key.get(job.fair_key, 0) - 1
        if held > 0:
            self.per_key[job.fair_key] = held
        else:
            self.per_key.pop(job.fair_key, None)
        if job.queued_since_ms is not None:
            self._metrics.queue_wait_seconds.observe((now_ms - job.queued_since_ms) / 1000)
            job.queued_since_ms = None
        if not self.jobs:
            self.dirty.clear()
            self._announce(False)

    # --- slots that free -------------------------------------------------------------------

    def _node_changed(self, node_id: str, state: NodeState | None) -> None:
        if (
            self.jobs and state is not None and state.status == ONLINE
            and state.running < state.caps.max_concurrency
        ):
            self.dirty.add(node_id)
            self._wake.set()

    def look_at(self, node_id: str) -> None:
        """Have the pump look at a node even if it did not change."""
        self.dirty.add(node_id)
        self._wake.set()

    def take_dirty(self) -> list[str]:
        dirty = list(self.dirty)
        self.dirty.clear()
        return dirty

    async def changed(self) -> None:
        """Until a node may have a slot for a waiting job."""
        while not self.dirty:
            self._wake.clear()
            await self._wake.wait()
