"""`NodeRegistry`: the nodes this hub owns, their slots, and the fence on their messages.

The hub a node is connected to owns it and is the authority on its slots. A
job reaches a node only through `reserve`, which refuses when the node is
gone, draining or full, so a node never holds more than `max_concurrency`
jobs whoever submitted them. This is the state of the owner role and the
`Slots` a home uses; what the node's messages do, and what the jobs' homes
are told, is `NodeOwner`'s (owner.py). Nothing here reports to a home: an
operation that ends attempts (`withdraw`) returns them to its caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from hub.core import close_codes, error_codes
from hub.core.capabilities import AT_CAPACITY, NodeCapabilities
from hub.core.config import HubConfig
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.job_state import NODE_GONE
from hub.core.messages import JobAssign, JobCancel, Registered
from hub.core.principal import DEFAULT_TENANT
from hub.core.snapshot import DRAINING, ONLINE
from hub.jobs.links import Link
from hub.store.base import Store


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


Lost = list[tuple[str, Assignment]]
"""Attempts a node held when it was withdrawn: (job_id, assignment)."""


class NodeRegistry:
    def __init__(
        self,
        *,
        config: HubConfig,
        fleet: FleetView,
        store: Store,
        published: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        """`published` is told of every join and capability or status change."""
        self._config = config
        self._hub_id = config.hub_id
        self._fleet = fleet
        self._store = store
        self.published = published
        self.registered: dict[str, RegisteredNode] = {}
        """The nodes registered here, by node id."""
        self.draining = False
        """The hub is draining: no node takes a new job; each leaves once idle."""

    def __repr__(self) -> str:
        return f"NodeRegistry({len(self.registered)} nodes, {self.busy} jobs running)"

    @property
    def busy(self) -> int:
        """Jobs running on the nodes registered here."""
        return sum(len(node.assignments) for node in self.registered.values())

    # --- joining and leaving ----------------------------------------------------------

    def add(self, link: Link, node_id: str, caps: NodeCapabilities, epoch: int,
            version: str | None, now_ms: int) -> RegisteredNode:
        """A node whose claim succeeded joins the fleet."""
        node = RegisteredNode(node_id, link, caps, epoch, version, now_ms)
        self.registered[node_id] = node
        self._fleet.join(node_id, caps, hub_id=self._hub_id)
        self.published(node_id)
        return node

    def registered_reply(self, node: RegisteredNode) -> Registered:
        return Registered(
            node_id=node.node_id,
            hub_id=self._hub_id,
            pool=node.caps.pool,
            heartbeat_interval_ms=self._config.heartbeat_interval_ms,
        )

    async def withdraw(self, node: RegisteredNode) -> Lost:
        """The node leaves this hub (its session ended, was replaced, or its lease is
        gone): out of the fleet, its claim released; the attempts it held, for the
        caller to fail over (empty if it had left already)."""
        if self.registered.get(node.node_id) is not node:
            return []
        node.gone = True
        del self.registered[node.node_id]
        self._fleet.leave(node.node_id)
        lost = list(node.assignments.items())
        node.assignments.clear()
        try:
            await self._store.release_node(node.node_id, node.epoch)
        except StoreUnavailable as exc:  # the lease lapses by itself (node_timeout_ms)
            logger.warning("releasing node {} failed: {}", node.node_id, exc)
        return lost

    async def leave_if_idle(self, node: RegisteredNode) -> None:
        """While the hub drains, a node leaves once its last job ended: its lease first
        (so the next hub takes it at once), then its session (1001). It holds nothing,
        so nobody is told of anything."""
        if not (self.draining and not node.assignments):
            return
        await self.withdraw(node)
        await node.link.close(close_codes.GOING_AWAY, error_codes.HUB_SHUTDOWN)

    # --- slots (the `Slots` of this hub's home role) -----------------------------------

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
        most `max_concurrency` of them; a lost node is handled when it is withdrawn).
        Written at once, not at the end of the loop turn: until it arrives the slot
        idles."""
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
        self.release(node, job_id)
        await node.link.send(JobCancel(job_id=job_id, attempt=attempt, reason=reason))
        await self.leave_if_idle(node)

    def release(self, node: RegisteredNode, job_id: str) -> None:
        if node.assignments.pop(job_id, None) is not None:
            self._fleet.set_running(node.node_id, len(node.assignments))

    def fence(self, node: RegisteredNode, job_id: str, attempt: int) -> Assignment:
        """The node's assignment its message names; `ProtocolError` unless it holds
        that job at that attempt."""
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

    # --- status ------------------------------------------------------------------------

    def set_status(self, node: RegisteredNode, *, draining: bool) -> None:
        """Mark a node draining (it takes no new job here, nor on any hub that selects
        it) or online again, and publish it."""
        if node.draining != draining:
            node.draining = draining
            self._fleet.set_status(node.node_id, DRAINING if draining else ONLINE)
            self.published(node.node_id)

    def set_capabilities(self, node: RegisteredNode, caps: NodeCapabilities) -> None:
        node.caps = caps
        self._fleet.set_capabilities(node.node_id, caps)
        if node.draining:
            self._fleet.drain(node.node_id)
        self.published(node.node_id)
