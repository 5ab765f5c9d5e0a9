"""`StrandedAttempts`: attempts whose node's hub went silent, not failed over at once.

When the hub that owns a node freezes (a long GC pause, a stalled VM, SIGSTOP)
or dies, the job's home loses sight of the attempt, but not necessarily the
attempt's work: the node may have finished it, its result sitting unread in
the silent hub's socket. Failing the attempt over at once ran such jobs a
second time. Nodes check their hub themselves (a ping every heartbeat,
`agent_sim`) and move to another hub when it stops answering, replaying the
results it did not pass on; so the home waits:

- an attempt is *stranded* when its node's hub is excluded (its beats stopped)
  or dead, or when this hub itself was out of touch (frozen: its own node's session
  dropped meanwhile, or a hub that declared it dead says it stopped its attempts):
  no deadline of the attempt fails it meanwhile;
- its node showing up on another hub starts a short grace (`replay_grace_ms`)
  for the replayed result; then, without one, the attempt fails over (the node
  dropped the unfinished job when it left: nothing runs it twice);
- its hub answering again (its nodes back in the view) releases it;
- neither within `wait_ms` (the node died with its hub): it fails over.

A result that arrives meanwhile (replayed, or from the hub that woke up) ends
the job as usual: the attempt was never failed. One that was archived instead
(its home was declared dead meanwhile) is looked up before the attempt fails
over (`fail_over` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hub.cluster.peers import Peers
from hub.core.fleet_view import FleetView
from hub.core.job_state import HUB_LOST, Job
from hub.core.snapshot import ONLINE, NodeState
from hub.jobs.home.table import JobTable
from hub.runtime.deadline_loop import Clock, DeadlineLoop

Item = tuple[str, int]
"""(job id, attempt) of a stranded attempt's deadline."""


class StrandedAttempts:
    __slots__ = (
        "_by_node", "_clock", "_fail_over", "_fleet", "_hub_id", "_jobs", "_peers", "_scan_due",
        "_table", "deadlines", "replay_grace_ms", "wait_ms",
    )

    def __init__(
        self, *, hub_id: str, fleet: FleetView, peers: Peers, table: JobTable, clock: Clock,
        wait_ms: int, replay_grace_ms: int,
        fail_over: Callable[[Job, str], Awaitable[None]],
    ) -> None:
        self._hub_id = hub_id
        self._peers = peers
        self._table = table
        self._clock = clock
        self._fail_over = fail_over
        self.wait_ms = wait_ms
        """How long a stranded attempt waits for its node or its hub to come back."""
        self.replay_grace_ms = replay_grace_ms
        """How long after its node registered elsewhere a replayed result may come."""
        self._fleet = fleet
        self._jobs: dict[str, tuple[str, int, str, bool]] = {}
        """Stranded attempts: job id -> (node id, attempt, the outcome if it fails,
        whether its node's hub answering again ends the wait)."""
        self._by_node: dict[str, set[str]] = {}
        self._scan_due = False
        self.deadlines: DeadlineLoop[Item] = DeadlineLoop(clock, self._due)
        fleet.subscribe(self._changed)

    def __repr__(self) -> str:
        return f"StrandedAttempts({len(self._jobs)})"

    def __len__(self) -> int:
        return len(self._jobs)

    def holds(self, job: Job) -> bool:
        """Whether the job's current attempt is stranded (its deadlines wait)."""
        held = self._jobs.get(job.job_id)
        return held is not None and held[1] == job.attempt

    def strand(
        self, job: Job, outcome: str, *, wait_ms: int | None = None, heals: bool = False
    ) -> None:
        """The job's attempt is on a node whose hub stopped answering or died; it fails
        with `outcome` unless its result shows up within `wait_ms` (default: the node's
        time to move, `wait_ms`). With `heals`, its hub's nodes back in the view (the
        hub answers again) end the wait: the attempt goes on."""
        if job.queued or job.finished or self.holds(job):
            return
        self._jobs[job.job_id] = (job.node_id, job.attempt, outcome, heals)
        self._by_node.setdefault(job.node_id, set()).add(job.job_id)
        state = self._fleet.snapshot.get(job.node_id)
        if state is not None and state.status == ONLINE and state.hub_id != job.node_hub:
            wait_ms = self.replay_grace_ms  # it moved already: its replay is under way
        elif wait_ms is None:
            wait_ms = self.wait_ms
        self.deadlines.push(self._clock.now_ms() + wait_ms, (job.job_id, job.attempt))

    def release(self, job_id: str) -> None:
        """The attempt ended (a result, a failure) or its hub answers again."""
        held = self._jobs.pop(job_id, None)
        if held is None:
            return
        node_jobs = self._by_node.get(held[0])
        if node_jobs is not None:
            node_jobs.discard(job_id)
            if not node_jobs:
                del self._by_node[held[0]]
        self.deadlines.discard((job_id, held[1]))

    def strand_hub(self, hub_id: str, outcome: str) -> None:
        """Every attempt of this hub's jobs on `hub_id`'s nodes (it died)."""
        for job in list(self._table.active.values()):
            if job.node_hub == hub_id and not job.queued and not job.finished:
                self.strand(job, outcome, heals=True)

    # --- what the fleet view says -------------------------------------------------------

    def _silent(self, hub_id: str) -> bool:
        return hub_id != self._hub_id and (
            self._peers.is_excluded(hub_id) or not self._peers.is_live(hub_id)
        )

    def _changed(self, node_id: str, state: NodeState | None) -> None:
        if state is None or state.status != ONLINE:
            if not self._scan_due:
                # A silent hub's nodes leave the view together: look at the jobs once.
                self._scan_due = True
                asyncio.get_running_loop().call_soon(self._scan)
            return
        waiting = self._by_node.get(node_id)
        if not waiting:
            return
        for job_id in list(waiting):
            job = self._table.get(job_id)
            if job is None:
                self.release(job_id)
            elif state.hub_id == job.node_hub and self._jobs[job_id][3]:
                self.release(job_id)  # its hub answers again: the attempt goes on
            else:
                # The node moved to a live hub: its results (replayed) come now or never.
                self.deadlines.push(
                    self._clock.now_ms() + self.replay_grace_ms, (job_id, job.attempt)
                )

    def _scan(self) -> None:
        self._scan_due = False
        for job in self._table.active.values():
            if (
                not job.queued and not job.finished and job.node_hub != self._hub_id
                and not self.holds(job) and self._silent(job.node_hub)
            ):
                self.strand(job, HUB_LOST, heals=True)

    async def _due(self, item: Item) -> None:
        job_id, attempt = item
        job = self._table.get(job_id)
        if job is None or job.attempt != attempt or not self.holds(job):
            return
        outcome = self._jobs[job_id][2]
        self.release(job_id)
        await self._fail_over(job, outcome)

    async def run(self) -> None:
        await self.deadlines.run()
