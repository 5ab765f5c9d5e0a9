"""`NodeRegistry`: the node owner's side of the job path.

The hub a node is connected to owns it: it validates registration, keeps the
node's entry in the directory, and is the authority on the node's slots. A
job reaches a node only through `assign`, which refuses when the node is
gone, draining or full, so a node never holds more than `max_concurrency`
jobs whoever submitted them. Node messages about jobs are fenced here first
(the node must hold that job at that attempt), then handed to the job's home
(`JobEvents`, the service) with the slot already released for terminal ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hub.capabilities import NodeCapabilities
from hub.config import HubConfig
from hub.directory import NodeDirectory
from hub.errors import ProtocolError
from hub.links import Link
from hub.messages import (
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
from hub.snapshot import DRAINING
from hub.store.base import OwnershipConflict, Store

JobMessage = JobAccept | JobReject | JobProgress | JobResult

CLOSE_OWNERSHIP_LOST = 4002
"""Close code for a node session whose ownership moved to another hub."""


class JobEvents(Protocol):
    """The jobs' home hubs, as the node owner sees them (implemented by `JobService`,
    which handles its own jobs and forwards the others' to their home)."""

    async def node_event(
        self, node_id: str, message: JobMessage, *, home_hub: str, request_id: str
    ) -> None: ...

    async def node_lost(self, node_id: str, job_id: str, attempt: int, *, home_hub: str) -> None:
        ...


@dataclass(slots=True)
class Assignment:
    attempt: int
    home_hub: str
    request_id: str


@dataclass(slots=True)
class NodeSession:
    """A registered node on this hub."""

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


class NodeRegistry:
    def __init__(
        self,
        *,
        config: HubConfig,
        directory: NodeDirectory,
        store: Store,
        events: JobEvents,
        published: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        """`published` is told of every join and capability or status change."""
        self._config = config
        self._published = published
        self._hub_id = config.hub_id
        self._directory = directory
        self._store = store
        self._events = events
        self.sessions: dict[str, NodeSession] = {}

    def __repr__(self) -> str:
        busy = sum(len(s.assignments) for s in self.sessions.values())
        return f"NodeRegistry({len(self.sessions)} nodes, {busy} jobs running)"

    # --- session lifecycle ---------------------------------------------------------

    async def register(self, link: Link, message: Register, now_ms: int) -> NodeSession:
        """Admit a node; raises `ProtocolError("node_id_conflict")` if it has a live session."""
        node_id = message.node_id
        if node_id in self.sessions:
            raise ProtocolError("node_id_conflict", f"node {node_id} already has a live session")
        try:
            epoch = await self._store.claim_node(node_id, self._config.node_timeout_ms)
        except OwnershipConflict as exc:
            raise ProtocolError(
                "node_id_conflict", f"node {node_id} is connected to hub {exc.owner}"
            ) from None
        if node_id in self.sessions:  # a concurrent register won while we awaited
            raise ProtocolError("node_id_conflict", f"node {node_id} already has a live session")
        caps = NodeCapabilities.from_wire(
            message.capabilities, default_pool=self._config.default_pool
        )
        session = NodeSession(node_id, link, caps, epoch, message.version, now_ms)
        self.sessions[node_id] = session
        self._directory.join(node_id, caps, hub_id=self._hub_id)
        self._published(node_id)
        return session

    def registered_reply(self, session: NodeSession) -> Registered:
        return Registered(
            node_id=session.node_id,
            hub_id=self._hub_id,
            pool=session.caps.pool,
            heartbeat_interval_ms=self._config.heartbeat_interval_ms,
        )

    async def unregister(self, session: NodeSession) -> None:
        """The node's connection ended: withdraw it and fail over what it held."""
        if self.sessions.get(session.node_id) is not session:
            return
        del self.sessions[session.node_id]
        self._directory.leave(session.node_id)
        lost = list(session.assignments.items())
        session.assignments.clear()
        for job_id, assignment in lost:
            await self._events.node_lost(
                session.node_id, job_id, assignment.attempt, home_hub=assignment.home_hub
            )
        await self._store.release_node(session.node_id, session.epoch)

    # --- messages from the node ------------------------------------------------------

    async def handle(self, session: NodeSession, message: NodeInbound) -> None:
        """Act on one message from a registered node; raises `ProtocolError` to refuse it."""
        match message:
            case JobAccept() | JobProgress():
                assignment = self._fence(session, message.job_id, message.attempt)
                await self._events.node_event(
                    session.node_id, message,
                    home_hub=assignment.home_hub, request_id=assignment.request_id,
                )
            case JobResult() | JobReject():
                assignment = self._fence(session, message.job_id, message.attempt)
                self._release(session, message.job_id)
                await self._events.node_event(
                    session.node_id, message,
                    home_hub=assignment.home_hub, request_id=assignment.request_id,
                )
            case Heartbeat():
                session.load = {
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
                session.caps = caps
                self._directory.set_capabilities(session.node_id, caps)
                if session.draining:
                    self._directory.drain(session.node_id)
                self._published(session.node_id)
            case Drain():
                session.draining = True
                self._directory.drain(session.node_id)
                self._published(session.node_id)
            case Register():
                raise ProtocolError("already_registered", "this session is already registered")

    def _fence(self, session: NodeSession, job_id: str, attempt: int) -> Assignment:
        assignment = session.assignments.get(job_id)
        if assignment is None:
            raise ProtocolError("not_your_job", f"job {job_id} is not assigned to this node")
        if assignment.attempt != attempt:
            raise ProtocolError(
                "stale_attempt", f"job {job_id} is at attempt {assignment.attempt}, not {attempt}"
            )
        return assignment

    def _release(self, session: NodeSession, job_id: str) -> None:
        if session.assignments.pop(job_id, None) is not None:
            self._directory.set_running(session.node_id, len(session.assignments))

    # --- commands from jobs' home hubs -------------------------------------------------

    def reserve(
        self, node_id: str, job_id: str, attempt: int, home_hub: str, request_id: str
    ) -> str | None:
        """Take one of a node's slots for a job's attempt; None when taken, else why not.

        Synchronous, so that the slot is held before the caller's next await.
        """
        session = self.sessions.get(node_id)
        if session is None:
            return "node_gone"
        if session.draining:
            return DRAINING
        if len(session.assignments) >= session.caps.max_concurrency:
            return "at_capacity"
        session.assignments[job_id] = Assignment(attempt, home_hub, request_id)
        self._directory.set_running(node_id, len(session.assignments))
        return None

    def deliver(self, node_id: str, message: JobAssign) -> None:
        """Queue a reserved assignment for its node, without waiting (a node holds at
        most `max_concurrency` of them; a lost node is handled by `unregister`)."""
        session = self.sessions.get(node_id)
        assignment = None if session is None else session.assignments.get(message.job_id)
        if session is not None and assignment is not None and assignment.attempt == message.attempt:
            session.link.queue(message)

    async def revoke(self, node_id: str, job_id: str, attempt: int, reason: str) -> None:
        """Take a job back from a node (timeout, cancel): free the slot, tell the node."""
        session = self.sessions.get(node_id)
        if session is None:
            return
        assignment = session.assignments.get(job_id)
        if assignment is None or assignment.attempt != attempt:
            return
        self._release(session, job_id)
        await session.link.send(JobCancel(job_id=job_id, attempt=attempt, reason=reason))

    async def home_lost(self, hub_id: str) -> None:
        """A hub died: stop the attempts it was the home of (nobody awaits their results)."""
        for session in list(self.sessions.values()):
            for job_id, assignment in list(session.assignments.items()):
                if assignment.home_hub == hub_id:
                    await self.revoke(session.node_id, job_id, assignment.attempt, "home_lost")

    async def renew_leases(self) -> None:
        """Keep ownership of every connected node (called every heartbeat interval).

        A node another hub owns now (this hub's lease lapsed, say through a
        network partition, and the node re-registered there) is no longer
        served here: its session is closed and its jobs fail over."""
        sessions = list(self.sessions.values())
        lost = set(
            await self._store.renew_nodes(
                [s.node_id for s in sessions], self._config.node_timeout_ms
            )
        )
        for session in sessions:
            if session.node_id in lost and self.sessions.get(session.node_id) is session:
                await self.unregister(session)
                await session.link.close(CLOSE_OWNERSHIP_LOST, "ownership_lost")
