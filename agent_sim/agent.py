"""The node agent: the client SDK a GPU node embeds to serve jobs from a hub.

`NodeAgent` keeps one WebSocket session to `/v1/node` alive (docs/protocol.md,
"Node endpoint"): it registers, heartbeats, accepts or rejects `job_assign`,
runs the caller's handler for each accepted job and reports `job_progress` and
`job_result`. When the connection drops it cancels the jobs it was running
(the hub fails them over), then reconnects with exponential backoff and full
jitter, cycling through its hub URLs. Every task it starts is owned: the
session's tasks live in a `TaskGroup`, the run loop is cancelled and awaited
by `aclose()`.

A `FaultPolicy` (see `agent_sim.behaviour`) may be consulted on every
`job_assign` to inject faults: reject, delay the accept, or crash mid-job by
aborting the TCP connection without a close frame.

`NodeAgent` owns the public lifecycle and holds its parts, each built here
and handed what it needs:

- `agent_sim.connection.ConnectionLoop`: connect, register, heartbeat,
  serve, reconnect; the registration state and connection counters;
- `agent_sim.jobs.JobRunner`: accept or reject, run and report jobs; the job
  counters;
- `agent_sim.frames.Frames`: send and receive on the current link, abort it;
- `agent_sim.wslink.WsConnector`: opens each connection, a `HubLink`
  (agent_sim.link) over websockets;
- `agent_sim.state.AgentState`: what they share (node id, capabilities,
  logger, the draining and stopping flags).

`agent_sim.job` is what handlers and fault policies see. The public names are
importable from this module; the parts' state is exposed as read-only
properties of `NodeAgent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from loguru import logger

from agent_sim.connection import NODE_PATH, ConnectionLoop, Token, node_url
from agent_sim.frames import Frames
from agent_sim.job import (
    FaultPolicy,
    JobContext,
    JobFailed,
    JobHandler,
    JobRejected,
    Utterance,
)
from agent_sim.jobs import JobRunner
from agent_sim.state import AgentState
from agent_sim.wslink import WsConnector
from hub.core.messages import Capabilities, CapabilitiesUpdate, Drain, JobResult

__all__ = [
    "NODE_PATH",
    "FaultPolicy",
    "JobContext",
    "JobFailed",
    "JobHandler",
    "JobRejected",
    "NodeAgent",
    "Token",
    "Utterance",
    "node_url",
]


class NodeAgent:
    """A node's connection to its hubs. Use as `async with NodeAgent(...) as agent:`.

    Observable state: `registered` (an Event, set while registered), `hub_id`,
    `pool`, `heartbeat_interval_ms`, `connected_url`, `running` and the
    counters `accepted`, `rejected`, `completed`, `failed`, `cancelled` (by
    `job_cancel`), `lost` (cancelled because the connection dropped or the
    agent closed), `connects`, `disconnects`, `conflicts`; `replaced` once a hub
    closed the session with 4005 (the agent then stops reconnecting).

    `token` is a bearer token, or a callable returning a fresh one (or an
    awaitable of one), called for every connect; `ssl_context` is used for
    `wss://` hub URLs (the system's default trust when None).
    """

    def __init__(
        self,
        *,
        node_id: str,
        capabilities: Capabilities,
        hub_urls: Sequence[str],
        handler: JobHandler,
        binary: bool = False,
        token: Token | None = None,
        ssl_context: ssl.SSLContext | None = None,
        version: str = "agent_sim/0.1",
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 5.0,
        rng: random.Random | None = None,
        faults: FaultPolicy | None = None,
        open_timeout_s: float = 10.0,
        register_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = 20.0,
        on_result: Callable[[JobResult], None] | None = None,
    ) -> None:
        """`on_result` is called with each `job_result` once it was handed to the hub's
        connection (observability: a ledger of what left the node)."""
        log = logger.bind(node_id=node_id)
        self._state = AgentState(node_id=node_id, capabilities=capabilities, log=log)
        self._frames = Frames(node_id=node_id, log=log)
        self._jobs = JobRunner(
            self._state, self._frames, handler=handler, faults=faults, on_result=on_result
        )
        self._connector = WsConnector(
            binary=binary,
            open_timeout_s=open_timeout_s,
            close_timeout_s=close_timeout_s,
            ping_interval_s=ping_interval_s,
            ssl_context=ssl_context,
        )
        self._connection = ConnectionLoop(
            self._state,
            self._frames,
            self._jobs,
            self._connector,
            hub_urls=hub_urls,
            version=version,
            token=token,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            rng=rng if rng is not None else random.Random(),
            register_timeout_s=register_timeout_s,
        )
        self._run_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "registered" if self.registered.is_set() else "connecting"
        if self._state.stopping:
            state = "closed"
        elif self._state.draining:
            state = "draining"
        return (
            f"NodeAgent(node_id={self.node_id!r}, {state}, url={self.connected_url!r}, "
            f"running={self.running}, accepted={self.accepted}, completed={self.completed}, "
            f"failed={self.failed}, connects={self.connects})"
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start connecting in the background; see `wait_registered`."""
        if self._run_task is not None:
            raise RuntimeError("NodeAgent already started")
        self._run_task = asyncio.create_task(self._connection.run(), name=f"agent:{self.node_id}")

    async def aclose(self) -> None:
        """Close the connection (code 1000), cancel running jobs and stop reconnecting."""
        self._state.stopping = True
        link = self._frames.current
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close()
        task, self._run_task = self._run_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self.registered.clear()

    async def drain(self, *, timeout_s: float | None = None) -> bool:
        """Send `drain`, wait for running jobs to finish, then close.

        Returns False when `timeout_s` passed first; the remaining jobs are then
        cancelled by the close. New job_assigns are rejected ("draining")
        meanwhile, and the agent does not reconnect after a drop.
        """
        self._state.draining = True
        link = self._frames.current
        if link is not None and self.registered.is_set():
            await self._frames.send(link, Drain())
        drained = True
        try:
            await asyncio.wait_for(self._jobs.wait_idle(), timeout_s)
        except TimeoutError:
            drained = False
        await self.aclose()
        return drained

    async def wait_registered(self, timeout_s: float | None = None) -> None:
        """Wait until the agent is registered; raise `TimeoutError` after `timeout_s`."""
        await asyncio.wait_for(self.registered.wait(), timeout_s)

    async def update_capabilities(self, capabilities: Capabilities) -> None:
        """Advertise new capabilities (kept for re-registration too)."""
        self._state.capabilities = capabilities
        link = self._frames.current
        if link is not None and self.registered.is_set():
            await self._frames.send(link, CapabilitiesUpdate(capabilities=capabilities))

    def abort_connection(self) -> bool:
        """Fault injection: drop the TCP connection without a close frame; it reconnects.

        Returns whether there was a connection to drop.
        """
        link = self._frames.current
        if link is None:
            return False
        self._frames.abort(link)
        return True

    def stats(self) -> dict[str, int]:
        return {
            "registered": int(self.registered.is_set()),
            "running": self.running,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "lost": self.lost,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "conflicts": self.conflicts,
        }

    # --- identity and configuration ------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._state.node_id

    @property
    def capabilities(self) -> Capabilities:
        """What the agent advertises; change it with `update_capabilities`."""
        return self._state.capabilities

    @property
    def hub_urls(self) -> tuple[str, ...]:
        """The hubs' node endpoints, tried in this order."""
        return self._connection.hub_urls

    @property
    def binary(self) -> bool:
        """Whether the agent asks for MessagePack (`True`) or JSON frames."""
        return self._connector.binary

    @property
    def version(self) -> str:
        return self._connection.version

    @property
    def draining(self) -> bool:
        return self._state.draining

    # --- the connection ------------------------------------------------------------------

    @property
    def registered(self) -> asyncio.Event:
        """Set while registered with a hub."""
        return self._connection.registered

    @property
    def hub_id(self) -> str | None:
        return self._connection.hub_id

    @property
    def pool(self) -> int | None:
        return self._connection.pool

    @property
    def heartbeat_interval_ms(self) -> int | None:
        return self._connection.heartbeat_interval_ms

    @property
    def connected_url(self) -> str | None:
        return self._connection.connected_url

    @property
    def connects(self) -> int:
        return self._connection.connects

    @property
    def disconnects(self) -> int:
        return self._connection.disconnects

    @property
    def replaced(self) -> bool:
        """A hub closed the session with 4005: another agent took this node id over."""
        return self._connection.replaced

    @property
    def conflicts(self) -> int:
        """Registrations refused with `node_id_conflict`."""
        return self._connection.conflicts

    # --- the jobs ------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Jobs held: assigned and not finished, minus those the hub cancelled."""
        return self._jobs.running

    @property
    def accepted(self) -> int:
        return self._jobs.accepted

    @property
    def rejected(self) -> int:
        return self._jobs.rejected

    @property
    def completed(self) -> int:
        return self._jobs.completed

    @property
    def failed(self) -> int:
        return self._jobs.failed

    @property
    def cancelled(self) -> int:
        """Jobs cancelled by the hub's `job_cancel`."""
        return self._jobs.cancelled

    @property
    def lost(self) -> int:
        """Jobs cancelled because the connection dropped or the agent closed."""
        return self._jobs.lost
