"""`Admin`: what an operator does to the job path (protocol-v1.1 "Admin surface").

- **drain / undrain a node**: the node's *owner* hub acts (`NodeOwner.set_draining`,
  which publishes the new status like any other change). Asked on another hub, an
  `AdminRequest` envelope travels to the owner the fleet view names, and the
  `AdminReply` comes back to the asking hub.
- **cancel a job**: the job's *home* hub acts (the job id names it, `job_home`): the
  current attempt is revoked at its node and the job ends with `cancelled`, as a
  client's cancel does. Asked elsewhere, the request travels to the home.
- **list jobs**: this hub's unfinished jobs (it is their home), oldest first.

Every action answers an outcome: `ok`, or an error code (`unknown_node`,
`unknown_job`, `job_finished`, `hub_unreachable` when another hub did not answer
within `REPLY_TIMEOUT_S`). The HTTP layer turns them into status codes.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Final

from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.envelopes import AdminReply, AdminRequest
from hub.core.errors import StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.job_state import CANCELLED, Job, JobRecord, job_home
from hub.core.messages import ErrorInfo
from hub.jobs.home.attempts import Attempts
from hub.jobs.home.table import JobTable
from hub.jobs.owner.owner import NodeOwner
from hub.store.archive import JobArchive

OK: Final = "ok"
DRAIN: Final = "drain"
UNDRAIN: Final = "undrain"
CANCEL: Final = "cancel"
ACTIVE: Final = "active"
QUEUED: Final = "queued"
JOB_STATES: Final = (ACTIVE, QUEUED)
"""`GET /v1/jobs?state=`: `active` is every unfinished job (queued ones included, as
`/v1/stats` counts them), `queued` the ones waiting for a slot."""
REPLY_TIMEOUT_S: Final = 5.0
"""How long an action forwarded to another hub may take before `hub_unreachable`."""


class Admin:
    def __init__(
        self,
        *,
        hub_id: str,
        fleet: FleetView,
        owner: NodeOwner,
        table: JobTable,
        attempts: Attempts,
        archive: JobArchive,
        peers: Peers,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
    ) -> None:
        self.hub_id = hub_id
        self.fleet = fleet
        self.owner = owner
        self.table = table
        self.attempts = attempts
        self.archive = archive
        self.peers = peers
        self.reply_timeout_s = reply_timeout_s
        self._tickets = itertools.count(1)
        self._replies: dict[int, asyncio.Future[str]] = {}
        self._log = logger.bind(hub_id=hub_id, event="admin")

    # --- nodes --------------------------------------------------------------------------

    async def set_draining(self, node_id: str, draining: bool) -> str:
        """Drain (`draining`) or undrain a node of the fleet, on whichever hub owns it."""
        state = self.fleet.snapshot.get(node_id)
        if state is None:
            return error_codes.UNKNOWN_NODE
        if state.hub_id == self.hub_id:
            return self._set_draining_here(node_id, draining)
        return await self._ask(state.hub_id, DRAIN if draining else UNDRAIN, node_id)

    def _set_draining_here(self, node_id: str, draining: bool) -> str:
        node = self.owner.registry.registered.get(node_id)
        self_drained = node is not None and node.self_drained
        node = self.owner.set_draining(node_id, draining)
        if node is None:
            return error_codes.UNKNOWN_NODE
        log = self._log.bind(node_id=node_id)
        if draining:
            log.info("node {} drained by an operator: it takes no new jobs", node_id)
        elif self_drained:
            node.self_drained = False
            log.info(
                "node {} had sent drain itself; undrained by an operator, it is offered jobs "
                "again (an agent still shutting down rejects them, and they fail over)",
                node_id,
            )
        else:
            log.info("node {} undrained by an operator: it takes jobs again", node_id)
        return OK

    # --- jobs ---------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> str:
        """Cancel an unfinished job, on its home hub."""
        home = job_home(job_id)
        if home == self.hub_id:
            return await self._cancel_here(job_id)
        if self.peers.is_live(home):
            return await self._ask(home, CANCEL, job_id)
        # No live home: the job is not running anywhere; its record may say how it ended.
        record = await self.archive.load(job_id)
        return error_codes.UNKNOWN_JOB if record is None else error_codes.JOB_FINISHED

    async def _cancel_here(self, job_id: str) -> str:
        job = self.table.get(job_id)
        if job is None:
            record = await self.archive.load(job_id)
            return error_codes.UNKNOWN_JOB if record is None else error_codes.JOB_FINISHED
        self._log.bind(job_id=job_id, request_id=job.request_id, node_id=job.node_id).info(
            "job {} cancelled by an operator", job_id
        )
        await self.attempts.revoke(job, CANCELLED)
        await self.attempts.finish(
            job, ok=False, error=ErrorInfo(error_codes.CANCELLED, "cancelled by an operator")
        )
        return OK

    def jobs(self, state: str = ACTIVE, limit: int = 100) -> list[JobRecord]:
        """Up to `limit` unfinished jobs of this hub, oldest first; `queued`: only those
        waiting for a slot."""
        records: list[JobRecord] = []
        if limit < 1:
            return records
        job: Job
        for job in self.table.active.values():
            if state == QUEUED and not job.queued:
                continue
            records.append(job.to_record())
            if len(records) >= limit:
                break
        return records

    # --- between hubs -----------------------------------------------------------------

    async def _ask(self, hub_id: str, action: str, target: str) -> str:
        """Have `hub_id` do `action` on `target`; its outcome."""
        if not self.peers.is_live(hub_id):
            return error_codes.HUB_UNREACHABLE
        ticket = next(self._tickets)
        reply = self._replies[ticket] = asyncio.get_running_loop().create_future()
        self.peers.send(
            hub_id, AdminRequest(self.hub_id, ticket=ticket, action=action, target=target)
        )
        try:
            return await asyncio.wait_for(reply, self.reply_timeout_s)
        except TimeoutError:
            return error_codes.HUB_UNREACHABLE
        finally:
            self._replies.pop(ticket, None)

    async def handle(self, envelope: AdminRequest | AdminReply) -> None:
        """An envelope of the admin surface from another hub."""
        if isinstance(envelope, AdminReply):
            reply = self._replies.get(envelope.ticket)
            if reply is not None and not reply.done():
                reply.set_result(envelope.outcome)
            return
        if envelope.action in (DRAIN, UNDRAIN):
            outcome = self._set_draining_here(envelope.target, envelope.action == DRAIN)
        elif envelope.action == CANCEL and job_home(envelope.target) == self.hub_id:
            try:
                outcome = await self._cancel_here(envelope.target)
            except StoreUnavailable:
                outcome = error_codes.STORE_UNAVAILABLE
        elif envelope.action == CANCEL:
            outcome = error_codes.UNKNOWN_JOB
        else:
            outcome = error_codes.INVALID_FIELD  # a newer hub's action: say so, do nothing
        self.peers.send(
            envelope.sender, AdminReply(self.hub_id, ticket=envelope.ticket, outcome=outcome)
        )
