"""`NodeOwner`: the node owner role: what a node's session and other hubs ask of it.

It validates a node's registration (claiming the node in the store, so that
one hub at a time owns it), acts on the node's messages, and tells each
job's home (`JobEvents`, given at construction) what happened to its
attempts: node messages about jobs are fenced first (the node must hold that
job at that attempt), then reported, with the slot already released for
terminal ones. Its state is the `NodeRegistry` (registry.py), which is also
the `Slots` this hub's home role reserves through.

Takeover (only when the session's principal allows it): a `register` for a
node id that has a live session replaces that session (its attempts fail
over as if it dropped, it is closed with 4005); when another hub owned the
node, that hub is told with a `NodeReplaced` envelope.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from loguru import logger

from hub.core import close_codes, error_codes
from hub.core.capabilities import NodeCapabilities
from hub.core.config import HubConfig
from hub.core.envelopes import Envelope, NodeReplaced
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.job_state import ACCEPT_TIMEOUT, HOME_LOST, NODE_LOST, job_home
from hub.core.messages import (
    CapabilitiesUpdate,
    Drain,
    Heartbeat,
    JobAccept,
    JobProgress,
    JobReject,
    JobResult,
    NodeInbound,
    Register,
    Registered,
)
from hub.jobs.links import Link, LinkCloser
from hub.jobs.owner.capability_updates import CapabilityUpdates
from hub.jobs.owner.registry import Assignment, Lost, NodeRegistry, RegisteredNode
from hub.jobs.roles import JobEvents
from hub.runtime.turn_batch import TurnBatch
from hub.store.base import OwnershipConflict, Store

CLAIM_BATCH = 500
"""Node claims per store call (a reconnect storm's registrations of one loop turn)."""


ORPHANED_KEPT: Final = 10_000
"""Attempts stopped for a dead home whose late result is still archived."""


class NodeOwner:
    def __init__(
        self,
        *,
        config: HubConfig,
        registry: NodeRegistry,
        store: Store,
        events: JobEvents,
        send: Callable[[str, Envelope], None],
        closer: LinkCloser,
    ) -> None:
        """`events` is the jobs' home role; `send` carries an envelope to another hub
        (a takeover's `NodeReplaced`); `closer` closes replaced sessions."""
        self._config = config
        self._hub_id = config.hub_id
        self._orphaned: OrderedDict[tuple[str, str, int], Assignment] = OrderedDict()
        """(node id, job id, attempt) of attempts stopped because their home died, the
        latest `ORPHANED_KEPT`: a node that finished one before its cancel arrived sends
        a result nobody may lose (it is archived for the client's resubmit)."""
        self.registry = registry
        self._store = store
        self._events = events
        self._send = send
        self.closer = closer
        self._claims: TurnBatch[str, tuple[int, str]] = TurnBatch(
            self._claim_many, waits=store.waits, max_batch=CLAIM_BATCH
        )
        self.capability_updates = CapabilityUpdates(
            registry=registry, default_pool=config.default_pool,
            interval_s=config.capabilities_interval_ms / 1000,
        )

    def __repr__(self) -> str:
        return f"NodeOwner({self.registry!r})"

    async def _claim_many(self, node_ids: Sequence[str]) -> list[tuple[int, str]]:
        return await self._store.claim_nodes(node_ids, self._config.node_timeout_ms)

    # --- registration ---------------------------------------------------------

    async def register(
        self, link: Link, message: Register, now_ms: int, *, take_over: bool = False
    ) -> RegisteredNode:
        """Admit a node; `ProtocolError` `node_id_conflict` if it has a live session,
        unless `take_over`: then that session is replaced (see the module docstring);
        `hub_shutdown` while the hub drains."""
        node_id = message.node_id
        registry = self.registry
        if registry.draining:
            raise ProtocolError(error_codes.HUB_SHUTDOWN, "the hub is shutting down")
        current = registry.registered.get(node_id)
        if current is not None:
            if not take_over:
                raise ProtocolError(
                    error_codes.NODE_ID_CONFLICT, f"node {node_id} already has a live session"
                )
            await self._replace(current)
        owner: tuple[str, int] | None = None
        if take_over:
            # A takeover is rare: its own store calls (who owned the node, then the
            # forced claim). Ordinary registrations batch their claims per loop turn.
            owner = await self._store.node_owner(node_id)
            try:
                epoch = await self._store.claim_node(
                    node_id, self._config.node_timeout_ms, take_over=True
                )
            except OwnershipConflict as exc:
                raise ProtocolError(
                    error_codes.NODE_ID_CONFLICT,
                    f"node {node_id} is connected to hub {exc.owner}"
                ) from None
        else:
            epoch, holder = await self._claims.call(node_id)
            if epoch < 0:
                raise ProtocolError(
                    error_codes.NODE_ID_CONFLICT, f"node {node_id} is connected to hub {holder}"
                )
        if registry.draining:  # the drain began while the claim was on its way
            try:
                await self._store.release_node(node_id, epoch)
            except StoreUnavailable as exc:  # the lease lapses by itself
                logger.warning("releasing node {} failed: {}", node_id, exc)
            raise ProtocolError(error_codes.HUB_SHUTDOWN, "the hub is shutting down")
        current = registry.registered.get(node_id)
        if current is not None:  # a concurrent register won while we awaited
            if not take_over:
                raise ProtocolError(
                    error_codes.NODE_ID_CONFLICT, f"node {node_id} already has a live session"
                )
            await self._replace(current)
        if owner is not None and owner[0] != self._hub_id:
            self._send(owner[0], NodeReplaced(self._hub_id, node_id=node_id, epoch=epoch))
        caps = NodeCapabilities.from_wire(
            message.capabilities, default_pool=self._config.default_pool
        )
        return registry.add(link, node_id, caps, epoch, message.version, now_ms)

    def registered_reply(self, node: RegisteredNode) -> Registered:
        """The `registered` answer to a node's successful `register`."""
        return self.registry.registered_reply(node)

    async def _replace(self, node: RegisteredNode) -> None:
        """Takeover: the older session goes as if it dropped, and is closed with 4005."""
        await self.unregister(node)
        self.closer.close(node.link, close_codes.REPLACED, "replaced")

    async def replaced_elsewhere(self, node_id: str, epoch: int) -> None:
        """Another hub took the node over with ownership `epoch` (`NodeReplaced`)."""
        node = self.registry.registered.get(node_id)
        if node is not None and node.epoch < epoch:
            await self._replace(node)

    async def unregister(self, node: RegisteredNode) -> None:
        """The node's connection ended: withdraw it and fail over what it held."""
        lost = await self.registry.withdraw(node)
        self.capability_updates.forget(node)
        await self._lost(node.node_id, lost)

    async def _lost(self, node_id: str, lost: Lost, outcome: str = NODE_LOST) -> None:
        for job_id, assignment in lost:
            await self._events.node_lost(
                node_id, job_id, assignment.attempt, home_hub=assignment.home_hub,
                outcome=outcome,
            )

    # --- messages from the node ------------------------------------------------------

    async def handle(self, node: RegisteredNode, message: NodeInbound) -> None:
        """Act on one message from a registered node; raises `ProtocolError` to refuse it."""
        if node.gone:
            return  # replaced: its session is being closed
        registry = self.registry
        match message:
            case JobAccept() | JobProgress():
                assignment = registry.fence(node, message.job_id, message.attempt)
                assignment.accepted = True
                await self._events.node_event(
                    node.node_id, message, home_hub=assignment.home_hub,
                    request_id=assignment.request_id, tenant=assignment.tenant,
                )
            case JobResult() if message.replayed and message.job_id not in node.assignments:
                # A result the node sent to a hub that dropped it (maybe dying before
                # passing it on). The job's home decides: it takes it only if that
                # attempt on this node is still the job's current one.
                try:
                    await self._events.node_event(
                        node.node_id, message, home_hub=job_home(message.job_id), request_id=""
                    )
                except ProtocolError as exc:  # it had reached the home: nothing to do
                    logger.debug("replayed result for {}: {}", message.job_id, exc.message)
            case JobResult() | JobReject():
                # Empty but after a home hub died: nothing to look up for nearly every result.
                orphan = None if not self._orphaned else self._orphaned.pop(
                    (node.node_id, message.job_id, message.attempt), None
                )
                if orphan is not None:
                    if isinstance(message, JobResult):  # its dead home's inbox: archived
                        await self._events.node_event(
                            node.node_id, message, home_hub=orphan.home_hub,
                            request_id=orphan.request_id, tenant=orphan.tenant,
                        )
                    return
                assignment = registry.fence(node, message.job_id, message.attempt)
                registry.release(node, message.job_id)
                # The next job first: the slot idles until it arrives, while the
                # result's client (or home hub) can wait the few microseconds.
                await self._events.slot_freed()
                await self._events.node_event(
                    node.node_id, message, home_hub=assignment.home_hub,
                    request_id=assignment.request_id, tenant=assignment.tenant,
                )
                await registry.leave_if_idle(node)
            case Heartbeat():
                node.load = {
                    k: float(v)
                    for k, v in (
                        ("running", message.running),
                        ("cpu", message.cpu),
                        ("gpu", message.gpu),
                        ("mem", message.mem),
                    )
                    if v is not None
                }
            case CapabilitiesUpdate():
                self.capability_updates.update(node, message)
            case Drain():
                node.self_drained = True
                registry.set_status(node, draining=True)
            case Register():
                raise ProtocolError(
                    error_codes.ALREADY_REGISTERED, "this session is already registered"
                )

    # --- an operator's drain and undrain ----------------------------------------------

    def set_draining(self, node_id: str, draining: bool) -> RegisteredNode | None:
        """An operator drains or undrains a node this hub owns; None when it is not
        registered here. Undrain also undoes a `drain` the node sent itself (its session
        is offered jobs again; docs/protocol.md, "Drain"), except while the hub itself
        drains (its nodes take no new job until they leave)."""
        node = self.registry.registered.get(node_id)
        if node is None or node.gone:
            return None
        self.registry.set_status(node, draining=draining or self.registry.draining)
        return node

    # --- what other hubs and the owner's deadlines ask -----------------------------------

    async def accept_overdue(self, node_id: str, job_id: str, attempt: int) -> None:
        """Another hub's attempt reached its node `accept_timeout_ms` ago (`OwnerDeadlines`):
        unless the node accepted it, take it back and fail it at its home."""
        node = self.registry.registered.get(node_id)
        assignment = None if node is None else node.assignments.get(job_id)
        if assignment is None or assignment.attempt != attempt or assignment.accepted:
            return
        await self.registry.revoke(node_id, job_id, attempt, ACCEPT_TIMEOUT)
        await self._events.node_lost(
            node_id, job_id, attempt, home_hub=assignment.home_hub, outcome=ACCEPT_TIMEOUT
        )

    async def home_lost(self, hub_id: str) -> None:
        """A hub died: stop the attempts it was the home of (nobody awaits their results)."""
        for node in list(self.registry.registered.values()):
            for job_id, assignment in list(node.assignments.items()):
                if assignment.home_hub == hub_id:
                    orphaned = self._orphaned
                    orphaned[(node.node_id, job_id, assignment.attempt)] = assignment
                    while len(orphaned) > ORPHANED_KEPT:
                        orphaned.popitem(last=False)
                    await self.registry.revoke(
                        node.node_id, job_id, assignment.attempt, HOME_LOST
                    )

    # --- draining and leases ------------------------------------------------------------

    async def drain(self) -> None:
        """The hub drains: every node takes no new job (here, and on every hub that
        selects it), and leaves as soon as it is idle (released and closed with 1001,
        so that it reconnects to another hub at once); busy ones leave when their last
        job ends."""
        registry = self.registry
        registry.draining = True
        for node in list(registry.registered.values()):
            registry.set_status(node, draining=True)
            await registry.leave_if_idle(node)

    async def renew_leases(self) -> None:
        """Keep ownership of every connected node (called every heartbeat interval).

        A node another hub owns now (this hub's lease lapsed, say through a
        network partition, and the node re-registered there) is no longer
        served here: its session is closed and its jobs fail over."""
        registered = list(self.registry.registered.values())
        claims = await self._store.renew_claims(
            [s.node_id for s in registered], self._config.node_timeout_ms
        )
        for node in registered:
            if self.registry.registered.get(node.node_id) is not node:
                continue
            epoch = claims.get(node.node_id)
            if epoch is not None:
                # A lapsed lease (a Redis restart) is claimed anew with a new epoch: keep
                # it, or the release when the node leaves would not match and the next
                # hub would wait the lease out.
                node.epoch = epoch
            elif node.node_id in claims:
                await self.unregister(node)
                await node.link.close(close_codes.OWNERSHIP_LOST, "ownership_lost")
