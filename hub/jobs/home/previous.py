"""`PreviousRuns`: the jobs this hub's earlier runs were home to (same hub id, restarted).

Job ids carry the boot token of the run that made them, so a restarted hub
recognises its predecessors' jobs although their state died with that run's
memory. What it needs to answer for them lives elsewhere and is collected
here, at no cost per job:

- their **results**: a node on another hub that finishes one sends it home as
  usual; it is archived here (and delivered to whoever resubmitted meanwhile);
  results the previous run had read but not acknowledged are read again from
  this hub's inbox at start (`Inbox.recover`);
- which are **still running**: every other hub, when it sees this hub's new
  boot token in the liveness beats, sends a `Reconcile` listing the attempts
  on its nodes of jobs homed here (and asking about its own jobs' attempts on
  this hub's former nodes, which this run refuses: they died with it).

Until every hub that was answering at start has reconciled (or
`hub_timeout_ms` passed), a resubmit of such a job waits (`ready`), so that a
job still running elsewhere is watched, not run again. Then: a job still
running is *inherited* (its resubmitters watch it; its result is delivered
and archived); one with an archived result is answered from it; any other is
taken over (run again under a new job id). An inherited job whose attempt is
lost (its node dropped, or it ran past its attempt budget) is resolved again
for each of its watchers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from loguru import logger

from hub.cluster.peers import Peers
from hub.core.config import HubConfig
from hub.core.envelopes import Held, Revoke
from hub.core.job_state import ATTEMPT_TIMEOUT, Watcher
from hub.core.messages import JobAccept, JobProgress, JobReject, JobResult, Progress, Submit
from hub.core.principal import DEFAULT_TENANT
from hub.jobs.home.answers import SubmitReply
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.table import JobTable
from hub.jobs.roles import JobMessage
from hub.store.archive import JobArchive

MIN_READY_WAIT_S: Final = 0.5


Stranded = list[tuple[Watcher, Submit, str]]
"""The resubmits (watcher, submit, tenant) of an inherited job that runs nowhere now:
each is resolved again (`Resubmits.resolve_again`) by whoever learnt of it."""


@dataclass(slots=True)
class Inherited:
    """A job of an earlier run, still running on another hub's node."""

    job_id: str
    request_id: str
    node_id: str
    node_hub: str
    attempt: int
    expires_s: float
    """When its attempt budget is spent (monotonic seconds)."""
    tenant: str = DEFAULT_TENANT
    """The job's tenant: only its resubmits watch it."""
    watchers: list[tuple[Watcher, Submit]] = field(default_factory=list)


class PreviousRuns:
    def __init__(
        self,
        *,
        config: HubConfig,
        table: JobTable,
        delivery: ClientDelivery,
        archive: JobArchive,
        peers: Peers,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.table = table
        self.delivery = delivery
        self.archive = archive
        self.peers = peers
        self.inherited: dict[str, Inherited] = {}
        self._expected: set[str] = set()
        """Hubs whose `Reconcile` this run still waits for."""
        self._deadline_s = 0.0
        self._ready = asyncio.Event()
        self._ready.set()  # nothing to wait for until `expect` says otherwise
        self._deferred: list[Callable[[], Awaitable[None]]] = []

    def __repr__(self) -> str:
        state = "ready" if self._ready.is_set() else f"waiting for {sorted(self._expected)}"
        return f"PreviousRuns({len(self.inherited)} inherited, {state})"

    def owns(self, job_id: str) -> bool:
        """Whether `job_id` belongs to an earlier run of this hub."""
        return self.table.is_previous_run(job_id)

    # --- reconciliation ---------------------------------------------------------------

    def expect(self, hub_ids: Iterable[str]) -> None:
        """At start: these hubs were answering; wait (a bounded time) for their word."""
        self._expected = set(hub_ids) - {self.hub_id}
        self._deadline_s = time.monotonic() + max(
            MIN_READY_WAIT_S, self.config.hub_timeout_ms / 1000
        )
        if self._expected:
            self._ready.clear()

    async def ready(self) -> None:
        """Return once this run knows what of its predecessors still runs (bounded)."""
        if self._ready.is_set():
            return
        remaining = self._deadline_s - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining) + 0.1):
                await self._ready.wait()
        except TimeoutError:
            await self._release()

    def when_ready(self, action: Callable[[], Awaitable[None]]) -> Awaitable[None] | None:
        """Run `action` now (returned, to await) or once ready (kept; None returned)."""
        if self._ready.is_set():
            return action()
        self._deferred.append(action)
        return None

    async def reconciled(self, sender: str, running: list[Held]) -> None:
        """A hub told this run which attempts of earlier runs' jobs run on its nodes."""
        expires_s = time.monotonic() + (
            self.config.accept_timeout_ms + self.config.job_timeout_ms
        ) / 1000
        for held in running:
            if self.owns(held.job_id) and held.job_id not in self.inherited:
                self.inherited[held.job_id] = Inherited(
                    held.job_id, held.request_id, held.node_id, sender, held.attempt, expires_s,
                    held.tenant,
                )
        if running:
            logger.info("{} jobs of an earlier run still run on hub {}", len(running), sender)
        self._expected.discard(sender)
        if not self._expected:
            await self._release()

    async def _release(self) -> None:
        """Ready: run what waited for it."""
        self._expected.clear()
        self._ready.set()
        deferred, self._deferred = self._deferred, []
        for action in deferred:
            try:
                await action()
            except Exception:
                logger.exception("a deferred resubmit of an earlier run's job failed")

    async def sweep(self) -> dict[str, Stranded]:
        """Periodic: stop waiting past the deadline; give up inherited jobs whose attempt
        ran past its budget (revoked at their node); their watchers, by job, to resolve
        again."""
        stranded: dict[str, Stranded] = {}
        now = time.monotonic()
        if not self._ready.is_set() and now > self._deadline_s:
            if self._expected:
                logger.warning("no word from hubs {} about earlier runs' jobs", self._expected)
            await self._release()
        for job in [j for j in self.inherited.values() if j.expires_s < now]:
            if self.peers.is_live(job.node_hub):
                self.peers.send(job.node_hub, Revoke(
                    self.hub_id, node_id=job.node_id, job_id=job.job_id, attempt=job.attempt,
                    reason=ATTEMPT_TIMEOUT,
                ))
            stranded[job.job_id] = self.attempt_lost(job.job_id, job.attempt)
        return stranded

    # --- resubmits ---------------------------------------------------------------------

    async def watch(
        self, job_id: str, watcher: Watcher, submit: Submit, tenant: str = DEFAULT_TENANT,
        *, reply: SubmitReply | None = None,
    ) -> bool:
        """Attach a resubmit of `tenant` to an inherited job (its `accepted` now, its
        result later; through `reply` when it is the watcher's own submit, here);
        False when the job is not running anywhere this run knows of (or is another
        tenant's)."""
        job = self.inherited.get(job_id)
        if job is None or job.tenant != tenant:
            return False
        if not any(w == watcher for w, _ in job.watchers):
            job.watchers.append((watcher, submit))
            if reply is not None:
                reply.accepted(job_id, job.node_id)
            else:
                self.delivery.accepted(watcher, job_id, job.node_id)
        return True

    # --- node events ------------------------------------------------------------------

    async def node_event(
        self, node_id: str, message: JobMessage, *, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> Stranded:
        """A node's message about an earlier run's job (passed its owner's fence) of
        `tenant` (as its Dispatch said); the watchers to resolve again when it ended the
        job's attempt without a result."""
        job = self.inherited.get(message.job_id)
        if job is not None and (job.node_id != node_id or job.attempt != message.attempt):
            job = None  # not the attempt inherited: only a result is worth keeping
        match message:
            case JobResult():
                await self._finished(job, node_id, request_id, message, tenant)
            case JobProgress() if job is not None:
                progress = Progress(job_id=message.job_id, data=message.data)
                told: set[tuple[str, str]] = set()
                for watcher, _ in job.watchers:
                    if (watcher.hub_id, watcher.client_id) not in told:
                        told.add((watcher.hub_id, watcher.client_id))
                        self.delivery.to_watcher(watcher, progress)
            case JobReject() if job is not None:
                return self.attempt_lost(message.job_id, message.attempt)
            case JobAccept() | JobProgress() | JobReject():
                pass
        return []

    async def _finished(
        self, job: Inherited | None, node_id: str, request_id: str, message: JobResult,
        tenant: str,
    ) -> None:
        await self.archive.put_orphan(node_id, request_id, message, tenant=tenant)
        if job is None:
            return
        del self.inherited[job.job_id]
        record = await self.archive.load(job.job_id)
        if record is None or record.result is None:
            return
        for watcher, _ in job.watchers:
            self.delivery.result(watcher, record.result)
        logger.bind(job_id=job.job_id).debug("inherited job finished")

    def attempt_lost(self, job_id: str, attempt: int) -> Stranded:
        """An inherited job's attempt ended without a result: its resubmits, to resolve
        again (nothing runs it now: it is taken over)."""
        job = self.inherited.get(job_id)
        if job is None or job.attempt != attempt:
            return []
        del self.inherited[job_id]
        return [(watcher, submit, job.tenant) for watcher, submit in job.watchers]

