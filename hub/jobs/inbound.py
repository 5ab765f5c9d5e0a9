"""`InboundRouter`: what a hub does with an envelope from another hub.

Envelopes addressed to this hub go to the node owner role (`NodeOwner`:
dispatch, revoke) or the home role (`JobHome`: node events, refusals,
watchers, client deliveries). Envelopes claimed from a dead hub's inbox
(`reaped_from`) are handled on its behalf: a dispatch to its nodes is
refused back to the job's home, a result meant for it is archived for the
client's resubmit, everything else is moot and dropped.
"""

from __future__ import annotations

from functools import partial

from loguru import logger

from hub.cluster.peers import Peers
from hub.core.envelopes import (
    AdminReply,
    AdminRequest,
    Deliver,
    Dispatch,
    Envelope,
    Handoff,
    Held,
    NodeEvent,
    NodeLost,
    NodeReplaced,
    Reconcile,
    Refused,
    Revoke,
    Unknown,
    Watch,
)
from hub.core.errors import ProtocolError
from hub.core.job_state import HUB_LOST, Watcher
from hub.core.messages import JobResult
from hub.jobs.admin import Admin
from hub.jobs.home.home import JobHome
from hub.jobs.owner.deadlines import OwnerDeadlines
from hub.jobs.owner.owner import NodeOwner
from hub.store.base import Binding, Store


class InboundRouter:
    """The cluster's `LocalHub`: envelopes to the owner role or the home role; a dead
    hub's work failed over; this hub's node leases renewed."""

    def __init__(
        self, *, home: JobHome, owner: NodeOwner, owner_deadlines: OwnerDeadlines,
        admin: Admin, peers: Peers, store: Store,
    ) -> None:
        self.hub_id = home.hub_id
        self.boot = home.table.boot
        self.table = home.table
        self.previous = home.previous
        self.events = home.events
        self.resubmits = home.resubmits
        self.attempts = home.attempts
        self.delivery = home.delivery
        self.archive = home.archive
        self.owner = owner
        self.nodes = owner.registry
        self.owner_deadlines = owner_deadlines
        self.store = store
        self.admin = admin
        self.peers = peers

    async def handle_envelope(self, envelope: Envelope, *, reaped_from: str | None) -> None:
        if reaped_from is not None:
            await self._reaped(envelope)
            return
        self.peers.heard_from(envelope.sender)
        match envelope:
            case Dispatch():
                assign = envelope.assign
                refused = self.nodes.reserve(
                    envelope.node_id, assign.job_id, assign.attempt, envelope.sender,
                    envelope.request_id, envelope.tenant,
                )
                if refused is None:
                    self.nodes.deliver(envelope.node_id, assign)
                    self.owner_deadlines.watch(envelope.node_id, assign.job_id, assign.attempt)
                else:
                    self.peers.send(
                        envelope.sender,
                        Refused(
                            self.hub_id, node_id=envelope.node_id, job_id=assign.job_id,
                            attempt=assign.attempt, reason=refused,
                        ),
                    )
            case Refused():
                await self.events.attempt_failed(
                    envelope.job_id, envelope.attempt, envelope.reason, node_id=envelope.node_id
                )
            case Revoke():
                await self.nodes.revoke(
                    envelope.node_id, envelope.job_id, envelope.attempt, envelope.reason
                )
            case NodeEvent():
                try:
                    await self.events.node_event(
                        envelope.node_id, envelope.message, home_hub=self.hub_id,
                        request_id=envelope.request_id, tenant=envelope.tenant,
                    )
                except ProtocolError as exc:
                    # The node already passed its owner's fence; the job moved on here.
                    logger.debug("late node event for {}: {}", envelope.message.job_id, exc)
            case NodeLost():
                await self.events.attempt_failed(
                    envelope.job_id, envelope.attempt, envelope.outcome, node_id=envelope.node_id
                )
            case Watch() if self.previous.owns(envelope.job_id):
                # An earlier run's job: answered once this run knows what still runs.
                ready = self.previous.when_ready(partial(self._watch_previous, envelope))
                if ready is not None:
                    await ready
            case Watch():
                watcher = Watcher(envelope.sender, envelope.client_id, envelope.submit.request_id)
                if not await self.resubmits.add_watcher(
                    envelope.job_id, watcher, again=envelope.again, tenant=envelope.tenant
                ):
                    # Never recorded here, its binding was released (or it is another
                    # tenant's): the client's hub resolves the request again (takes it
                    # over, or binds it afresh).
                    self.peers.send(envelope.sender, _unknown(self.hub_id, envelope))
            case Unknown():
                await self.resubmits.home_unknown(
                    envelope.client_id, envelope.job_id, envelope.submit
                )
            case Reconcile():
                await self._reconciled(envelope)
            case Handoff():
                await self.resubmits.take_handed(envelope.sender, envelope.jobs)
            case Deliver():
                if self.resubmits.deliverable(envelope.client_id, envelope.message):
                    self.delivery.to_client(envelope.client_id, envelope.message)
            case NodeReplaced():
                await self.owner.replaced_elsewhere(envelope.node_id, envelope.epoch)
            case AdminRequest() | AdminReply():
                await self.admin.handle(envelope)

    async def _watch_previous(self, watch: Watch) -> None:
        watcher = Watcher(watch.sender, watch.client_id, watch.submit.request_id)
        if await self.previous.watch(watch.job_id, watcher, watch.submit, watch.tenant):
            return
        if not await self.resubmits.add_watcher(
            watch.job_id, watcher, again=watch.again, tenant=watch.tenant
        ):
            self.peers.send(watch.sender, _unknown(self.hub_id, watch))  # run it there

    async def _reconciled(self, envelope: Reconcile) -> None:
        if envelope.boot != self.boot:
            return  # meant for another run of this hub id
        for held in envelope.attempts:
            # The sender's jobs on nodes of this hub id: those this run does not hold
            # died with the run that did (dispatches sent to this run came before this
            # envelope in the inbox, so they are held by now if they were taken).
            node = self.nodes.registered.get(held.node_id)
            assignment = None if node is None else node.assignments.get(held.job_id)
            if assignment is None or assignment.attempt != held.attempt:
                self.peers.send(envelope.sender, Refused(
                    self.hub_id, node_id=held.node_id, job_id=held.job_id,
                    attempt=held.attempt, reason=HUB_LOST,
                ))
        if envelope.buried:
            self.events.home_revived(
                envelope.sender, {(held.job_id, held.attempt) for held in envelope.running}
            )
            return
        await self.previous.reconciled(envelope.sender, envelope.running)

    async def _reaped(self, envelope: Envelope) -> None:
        match envelope:
            case Dispatch():
                # The dead hub owned the node; the job's home must look elsewhere.
                refused = Refused(
                    self.hub_id, node_id=envelope.node_id, job_id=envelope.assign.job_id,
                    attempt=envelope.assign.attempt, reason=HUB_LOST,
                )
                if envelope.sender == self.hub_id:
                    await self.events.attempt_failed(
                        refused.job_id, refused.attempt, refused.reason, node_id=refused.node_id
                    )
                elif self.peers.is_live(envelope.sender):
                    self.peers.send(envelope.sender, refused)
            case NodeEvent() if isinstance(envelope.message, JobResult):
                await self.archive.put_orphan(
                    envelope.node_id, envelope.request_id, envelope.message,
                    tenant=envelope.tenant,
                )
            case Watch() if envelope.sender == self.hub_id:
                # Our own client asked the dead hub about its job: resolve it here (the
                # results this inbox held are archived by now: node events go first).
                await self.resubmits.home_lost_watch(
                    envelope.client_id, envelope.job_id, envelope.submit
                )
            case Watch() if self.peers.is_live(envelope.sender):
                self.peers.send(envelope.sender, _unknown(self.hub_id, envelope))
            case _:
                pass  # revokes, losses and deliveries for a dead hub change nothing

    async def hub_lost(self, hub_id: str) -> None:
        await self.owner.home_lost(hub_id)
        await self.events.node_hub_lost(hub_id)
        await self.resubmits.home_lost(hub_id)

    async def renew_leases(self) -> None:
        await self.owner.renew_leases()

    async def hub_restarted(self, hub_id: str, *, buried: bool = False) -> None:
        """Tell a hub's new run what this hub holds of its earlier runs: attempts of its
        jobs on our nodes, and our jobs' attempts on its nodes (`buried`: the same run,
        back after this hub declared it dead)."""
        boot = self.peers.boot_of(hub_id)
        running = [
            Held(
                job_id, assignment.attempt, node.node_id, assignment.request_id,
                assignment.tenant,
            )
            for node in self.nodes.registered.values()
            for job_id, assignment in node.assignments.items()
            if assignment.home_hub == hub_id
        ]
        attempts = [
            Held(job.job_id, job.attempt, job.node_id)
            for job in self.table.active.values()
            if job.node_hub == hub_id and not job.finished
        ]
        self.peers.send(
            hub_id, Reconcile(
                self.hub_id, boot=boot, running=running, attempts=attempts, buried=buried
            )
        )
        if not buried:
            self.resubmits.home_restarted(hub_id)

    async def hub_revived(self, hub_id: str) -> None:
        await self.hub_restarted(hub_id, buried=True)

    async def peers_at_start(self, hub_ids: list[str]) -> None:
        self.previous.expect(hub_ids)

    async def housekeeping(self) -> None:
        for job_id, stranded in (await self.previous.sweep()).items():
            await self.resubmits.resolve_stranded(job_id, stranded)

    async def store_restarted(self) -> None:
        """Bind again the request ids of this hub's active jobs and of the jobs whose
        records are written again (a resubmit must find them, not start a new job), and
        ask the homes of this hub's waiting clients again. Not those of unconfirmed jobs
        (`Admission.keep_unconfirmed`): whether their binding was ever made is unknown,
        and binding one now would tie its request to a dispatch that may never have
        left."""
        config = self.resubmits.config
        now_ms = self.attempts.clock.now_ms()
        bindings = [
            Binding(job.request_id, job.job_id,
                    config.idempotency_ttl_ms + max(0, job.deadline_ms - now_ms),
                    tenant=job.tenant)
            for job in self.table.active.values() if not job.unconfirmed
        ]
        bindings += [
            Binding(record.request_id, record.job_id, config.idempotency_ttl_ms,
                    tenant=record.tenant)
            for record in self.archive.rewrite_recent() if record.request_id
        ]
        for start in range(0, len(bindings), 512):
            await self.store.bind_requests(bindings[start : start + 512])
        self.resubmits.resend_watches()


def _unknown(hub_id: str, watch: Watch) -> Unknown:
    return Unknown(
        hub_id, job_id=watch.job_id, client_id=watch.client_id, submit=watch.submit,
        tenant=watch.tenant,
    )
