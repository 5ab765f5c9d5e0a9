"""`NodeRegistry`: the node owner's side of the job path.

The hub a node is connected to owns it: it validates registration, keeps the
node's entry in the fleet view, and is the authority on the node's slots. A
job reaches a node only through `reserve`, which refuses when the node is
gone, draining or full, so a node never holds more than `max_concurrency`
jobs whoever submitted them. Node messages about jobs are fenced here first
(the node must hold that job at that attempt), then handed to the job's home
(`JobEvents`: the home role's `NodeEvents`) with the slot already released for terminal ones.

Takeover (only when the session layer allows it: `auth = "jwt"`):
a `register` for a node id that has a live session replaces that session
(its attempts fail over as if it dropped, it is closed with 4005); when
another hub owned the node, that hub is told with a `NodeReplaced` envelope.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from hub.core import close_codes, error_codes
from hub.core.capabilities import AT_CAPACITY, NodeCapabilities
from hub.core.config import HubConfig
from hub.core.envelopes import Envelope, NodeReplaced
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.job_state import ACCEPT_TIMEOUT, HOME_LOST, NODE_GONE, NODE_LOST
from hub.core.messages import (
    CapabilitiesUpdate,
    Drain,
    Heartbeat,
    JobAccept,
    JobAssign,
    JobCancel,
    JobProgress,
    JobReject,
    JobResult,
    NodeInbound,
    Register,
    Registered,
)
from hub.core.principal import DEFAULT_TENANT
from hub.core.snapshot import DRAINING, ONLINE
from hub.jobs.links import Link, LinkCloser
from hub.jobs.table import job_home
from hub.runtime.turn_batch import TurnBatch
from hub.store.base import OwnershipConflict, Store

CLAIM_BATCH = 500
"""Node claims per store call (a reconnect storm's registrations of one loop turn)."""

JobMessage = JobAccept | JobReject | JobProgress | JobResult



class JobEvents(Protocol):
    """The jobs' home hubs, as the node owner sees them (implemented by `JobService`,
    which handles its own jobs and forwards the others' to their home)."""

    async def node_event(
        self, node_id: str, message: JobMessage, *, home_hub: str, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> None: ...

    async def node_lost(
        self, node_id: str, job_id: str, attempt: int, *, home_hub: str, outcome: str = NODE_LOST
    ) -> None: ...

    async def slot_freed(self) -> None:
        """A result or reject freed a slot on one of this hub's nodes: give it to a
        waiting job now, before the message that freed it is passed on."""


class _Unattached:
    """The `JobEvents` of a registry nobody called `report_to` on."""

    async def node_event(
        self, node_id: str, message: JobMessage, *, home_hub: str, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        raise RuntimeError("NodeRegistry.report_to was never called")

    async def node_lost(
        self, node_id: str, job_id: str, attempt: int, *, home_hub: str, outcome: str = NODE_LOST
    ) -> None:
        raise RuntimeError("NodeRegistry.report_to was never called")

    async def slot_freed(self) -> None:
        raise RuntimeError("NodeRegistry.report_to was never called")


@dataclass(slots=True)
class Assignment:
    attempt: int
    home_hub: str
    request_id: str
    tenant: str = DEFAULT_TENANT
    accepted: bool = False
    """The node sent `job_accept` (or progress) for it."""


@dataclass(slots=True)
class RegisteredNode:
    """A node registered on this hub (this hub owns it), over its connection's `Link`."""

    node_id: str
    link: Link
    caps: NodeCapabilities
    epoch: int
    version: str | None
    connected_ms: int
    assignments: dict[str, Assignment] = field(default_factory=dict)
    draining: bool = False
    load: dict[str, float] = field(default_factory=dict)
    """The last heartbeat's self-reported figures (running, cpu, gpu, mem)."""
    gone: bool = False
    """Unregistered (the session ended, or was replaced): its messages change nothing."""
    self_drained: bool = False
    """The node sent `drain` itself (an operator's undrain says so in the log)."""


class NodeRegistry:
    def __init__(
        self,
        *,
        config: HubConfig,
        fleet: FleetView,
        store: Store,
        published: Callable[[str], None] = lambda node_id: None,
        send: Callable[[str, Envelope], None] | None = None,
        closer: LinkCloser | None = None,
    ) -> None:
        """`published` is told of every join and capability or status change; `send`
        carries an envelope to another hub (a takeover's `NodeReplaced`); `closer`
        closes replaced sessions."""
        self._config = config
        self._send = send
        self.closer = closer if closer is not None else LinkCloser(1.0)
        self._published = published
        self._hub_id = config.hub_id
        self._fleet = fleet
        self._store = store
        self.events: JobEvents = _Unattached()
        """Where node messages about jobs go (the jobs' home role); see `report_to`."""
        self.registered: dict[str, RegisteredNode] = {}
        """The nodes registered here, by node id."""
        self._claims: TurnBatch[str, tuple[int, str]] = TurnBatch(
            self._claim_many, waits=store.waits, max_batch=CLAIM_BATCH
        )
        self.draining = False
        """The hub is draining: no node takes a new job; each leaves once idle."""

    async def _claim_many(self, node_ids: Sequence[str]) -> list[tuple[int, str]]:
        return await self._store.claim_nodes(node_ids, self._config.node_timeout_ms)

    def report_to(self, events: JobEvents) -> None:
        """Report node messages about jobs to `events` (the jobs' home role)."""
        self.events = events

    def __repr__(self) -> str:
        busy = sum(len(s.assignments) for s in self.registered.values())
        return f"NodeRegistry({len(self.registered)} nodes, {busy} jobs running)"

    # --- registration ---------------------------------------------------------

    async def register(
        self, link: Link, message: Register, now_ms: int, *, take_over: bool = False
    ) -> RegisteredNode:
        """Admit a node; `ProtocolError` `node_id_conflict` if it has a live session,
        unless `take_over`: then that session is replaced (see the module docstring);
        `hub_shutdown` while the hub drains."""
        node_id = message.node_id
        if self.draining:
            raise ProtocolError(error_codes.HUB_SHUTDOWN, "the hub is shutting down")
        current = self.registered.get(node_id)
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
        if self.draining:  # the drain began while the claim was on its way
            try:
                await self._store.release_node(node_id, epoch)
            except StoreUnavailable as exc:  # the lease lapses by itself
                logger.warning("releasing node {} failed: {}", node_id, exc)
            raise ProtocolError(error_codes.HUB_SHUTDOWN, "the hub is shutting down")
        current = self.registered.get(node_id)
        if current is not None:  # a concurrent register won while we awaited
            if not take_over:
                raise ProtocolError(
                    error_codes.NODE_ID_CONFLICT, f"node {node_id} already has a live session"
                )
            await self._replace(current)
        if owner is not None and owner[0] != self._hub_id and self._send is not None:
            self._send(owner[0], NodeReplaced(self._hub_id, node_id=node_id, epoch=epoch))
        caps = NodeCapabilities.from_wire(
            message.capabilities, default_pool=self._config.default_pool
        )
        node = RegisteredNode(node_id, link, caps, epoch, message.version, now_ms)
        self.registered[node_id] = node
        self._fleet.join(node_id, caps, hub_id=self._hub_id)
        self._published(node_id)
        return node

    def registered_reply(self, node: RegisteredNode) -> Registered:
        return Registered(
            node_id=node.node_id,
            hub_id=self._hub_id,
            pool=node.caps.pool,
            heartbeat_interval_ms=self._config.heartbeat_interval_ms,
        )

    async def _replace(self, node: RegisteredNode) -> None:
        """Takeover: the older session goes as if it dropped, and is closed with 4005."""
        await self.unregister(node)
        self.closer.close(node.link, close_codes.REPLACED, "replaced")

    async def replaced_elsewhere(self, node_id: str, epoch: int) -> None:
        """Another hub took the node over with ownership `epoch` (`NodeReplaced`)."""
        node = self.registered.get(node_id)
        if node is not None and node.epoch < epoch:
            await self._replace(node)

    async def unregister(self, node: RegisteredNode) -> None:
        """The node's connection ended: withdraw it and fail over what it held."""
        if self.registered.get(node.node_id) is not node:
            return
        node.gone = True
        del self.registered[node.node_id]
        self._fleet.leave(node.node_id)
        lost = list(node.assignments.items())
        node.assignments.clear()
        for job_id, assignment in lost:
            await self.events.node_lost(
                node.node_id, job_id, assignment.attempt, home_hub=assignment.home_hub
            )
        try:
            await self._store.release_node(node.node_id, node.epoch)
        except StoreUnavailable as exc:  # the lease lapses by itself (node_timeout_ms)
            logger.warning("releasing node {} failed: {}", node.node_id, exc)

    # --- messages from the node ------------------------------------------------------

    async def handle(self, node: RegisteredNode, message: NodeInbound) -> None:
        """Act on one message from a registered node; raises `ProtocolError` to refuse it."""
        if node.gone:
            return  # replaced: its session is being closed
        match message:
            case JobAccept() | JobProgress():
                assignment = self._fence(node, message.job_id, message.attempt)
                assignment.accepted = True
                await self.events.node_event(
                    node.node_id, message, home_hub=assignment.home_hub,
                    request_id=assignment.request_id, tenant=assignment.tenant,
                )
            case JobResult() if message.replayed and message.job_id not in node.assignments:
                # A result the node sent to a hub that dropped it (maybe dying before
                # passing it on). The job's home decides: it takes it only if that
                # attempt on this node is still the job's current one.
                try:
                    await self.events.node_event(
                        node.node_id, message, home_hub=job_home(message.job_id), request_id=""
                    )
                except ProtocolError as exc:  # it had reached the home: nothing to do
                    logger.debug("replayed result for {}: {}", message.job_id, exc.message)
            case JobResult() | JobReject():
                assignment = self._fence(node, message.job_id, message.attempt)
                self._release(node, message.job_id)
                # The next job first: the slot idles until it arrives, while the
                # result's client (or home hub) can wait the few microseconds.
                await self.events.slot_freed()
                await self.events.node_event(
                    node.node_id, message, home_hub=assignment.home_hub,
                    request_id=assignment.request_id, tenant=assignment.tenant,
                )
                if self.draining and not node.assignments:
                    await self._leave(node)
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
                caps = NodeCapabilities.from_wire(
                    message.capabilities, default_pool=self._config.default_pool
                )
                node.caps = caps
                self._fleet.set_capabilities(node.node_id, caps)
                if node.draining:
                    self._fleet.drain(node.node_id)
                self._published(node.node_id)
            case Drain():
                node.draining = node.self_drained = True
                self._fleet.drain(node.node_id)
                self._published(node.node_id)
            case Register():
                raise ProtocolError(
                    error_codes.ALREADY_REGISTERED, "this session is already registered"
                )

    def _fence(self, node: RegisteredNode, job_id: str, attempt: int) -> Assignment:
        assignment = node.assignments.get(job_id)
        if assignment is None:
            raise ProtocolError(
                error_codes.NOT_YOUR_JOB, f"job {job_id} is not assigned to this node"
            )
        if assignment.attempt != attempt:
            raise ProtocolError(
                error_codes.STALE_ATTEMPT,
                f"job {job_id} is at attempt {assignment.attempt}, not {attempt}"
            )
        return assignment

    def _release(self, node: RegisteredNode, job_id: str) -> None:
        if node.assignments.pop(job_id, None) is not None:
            self._fleet.set_running(node.node_id, len(node.assignments))

    # --- the admin surface --------------------------------------------------

    def set_draining(self, node_id: str, draining: bool) -> RegisteredNode | None:
        """An operator drains or undrains a node this hub owns; None when it is not
        registered here. Undrain also undoes a `drain` the node sent itself (its session
        is offered jobs again; docs/protocol.md, "Drain"), except while the hub itself
        drains (its nodes take no new job until they leave)."""
        node = self.registered.get(node_id)
        if node is None or node.gone:
            return None
        draining = draining or self.draining
        if node.draining != draining:
            node.draining = draining
            self._fleet.set_status(node_id, DRAINING if draining else ONLINE)
            self._published(node_id)
        return node

    # --- commands from jobs' home hubs -------------------------------------------------

    def reserve(
        self, node_id: str, job_id: str, attempt: int, home_hub: str, request_id: str,
        tenant: str = DEFAULT_TENANT,
    ) -> str | None:
        """Take one of a node's slots for a job's attempt; None when taken, else why not.

        Synchronous, so that the slot is held before the caller's next await.
        """
        node = self.registered.get(node_id)
        if node is None:
            return NODE_GONE
        if node.draining:
            return DRAINING
        if len(node.assignments) >= node.caps.max_concurrency:
            return AT_CAPACITY
        node.assignments[job_id] = Assignment(attempt, home_hub, request_id, tenant)
        self._fleet.set_running(node_id, len(node.assignments))
        return None

    def deliver(self, node_id: str, message: JobAssign) -> None:
        """Send a reserved assignment to its node, without waiting (a node holds at
        most `max_concurrency` of them; a lost node is handled by `unregister`). Written
        at once, not at the end of the loop turn: until it arrives the slot idles."""
        node = self.registered.get(node_id)
        assignment = None if node is None else node.assignments.get(message.job_id)
        if node is not None and assignment is not None and assignment.attempt == message.attempt:
            node.link.queue(message, flush=True)

    async def revoke(self, node_id: str, job_id: str, attempt: int, reason: str) -> None:
        """Take a job back from a node (timeout, cancel): free the slot, tell the node."""
        node = self.registered.get(node_id)
        if node is None:
            return
        assignment = node.assignments.get(job_id)
        if assignment is None or assignment.attempt != attempt:
            return
        self._release(node, job_id)
        await node.link.send(JobCancel(job_id=job_id, attempt=attempt, reason=reason))
        if self.draining and not node.assignments:
            await self._leave(node)

    async def accept_overdue(self, node_id: str, job_id: str, attempt: int) -> None:
        """Another hub's attempt reached its node `accept_timeout_ms` ago (`OwnerDeadlines`):
        unless the node accepted it, take it back and fail it at its home."""
        node = self.registered.get(node_id)
        assignment = None if node is None else node.assignments.get(job_id)
        if assignment is None or assignment.attempt != attempt or assignment.accepted:
            return
        await self.revoke(node_id, job_id, attempt, ACCEPT_TIMEOUT)
        await self.events.node_lost(
            node_id, job_id, attempt, home_hub=assignment.home_hub, outcome=ACCEPT_TIMEOUT
        )

    # --- draining ---------------------------------------------------------------------

    async def drain(self) -> None:
        """The hub drains: every node takes no new job (here, and on every hub that
        selects it), and leaves as soon as it is idle (released and closed with 1001,
        so that it reconnects to another hub at once); busy ones leave when their last
        job ends."""
        self.draining = True
        for node in list(self.registered.values()):
            if not node.draining:
                node.draining = True
                self._fleet.drain(node.node_id)
                self._published(node.node_id)
            if not node.assignments:
                await self._leave(node)

    @property
    def busy(self) -> int:
        """Jobs running on the nodes registered here."""
        return sum(len(node.assignments) for node in self.registered.values())

    async def _leave(self, node: RegisteredNode) -> None:
        """A draining hub lets an idle node go: its lease first (so the next hub takes it
        at once), then its session (1001)."""
        await self.unregister(node)
        await node.link.close(close_codes.GOING_AWAY, error_codes.HUB_SHUTDOWN)

    async def home_lost(self, hub_id: str) -> None:
        """A hub died: stop the attempts it was the home of (nobody awaits their results)."""
        for node in list(self.registered.values()):
            for job_id, assignment in list(node.assignments.items()):
                if assignment.home_hub == hub_id:
                    await self.revoke(node.node_id, job_id, assignment.attempt, HOME_LOST)

    async def renew_leases(self) -> None:
        """Keep ownership of every connected node (called every heartbeat interval).

        A node another hub owns now (this hub's lease lapsed, say through a
        network partition, and the node re-registered there) is no longer
        served here: its session is closed and its jobs fail over."""
        registered = list(self.registered.values())
        claims = await self._store.renew_claims(
            [s.node_id for s in registered], self._config.node_timeout_ms
        )
        for node in registered:
            if self.registered.get(node.node_id) is not node:
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
