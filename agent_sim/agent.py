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

The code is split by what it does: `agent_sim.job` (what handlers and fault
policies see), `agent_sim.agent_session` (connect, register, serve,
reconnect), `agent_sim.agent_jobs` (accept, run, report jobs) and
`agent_sim.agent_frames` (encode, decode, send). `NodeAgent` here owns the
state and the public lifecycle; every name is importable from this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from loguru import logger
from websockets.asyncio.client import ClientConnection

from agent_sim.agent_jobs import _JobKey as _JobKey
from agent_sim.agent_session import NODE_PATH, _AgentSession, node_url
from agent_sim.agent_session import STABLE_SESSION_S as STABLE_SESSION_S
from agent_sim.agent_session import _RegistrationRefused as _RegistrationRefused
from agent_sim.job import FaultPolicy, JobContext, JobFailed, JobHandler
from hub.core.messages import (
    Capabilities,
    CapabilitiesUpdate,
    Codec,
    Drain,
    NodeOutbound,
    agent_codec,
)

__all__ = [
    "NODE_PATH",
    "FaultPolicy",
    "JobContext",
    "JobFailed",
    "JobHandler",
    "NodeAgent",
    "node_url",
]


class NodeAgent(_AgentSession):
    """A node's connection to its hubs. Use as `async with NodeAgent(...) as agent:`.

    Observable state: `registered` (an Event, set while registered), `hub_id`,
    `pool`, `heartbeat_interval_ms`, `connected_url`, `running` and the
    counters `accepted`, `rejected`, `completed`, `failed`, `cancelled` (by
    `job_cancel`), `lost` (cancelled because the connection dropped or the
    agent closed), `connects`, `disconnects`, `conflicts`.
    """

    def __init__(
        self,
        *,
        node_id: str,
        capabilities: Capabilities,
        hub_urls: Sequence[str],
        handler: JobHandler,
        binary: bool = False,
        token: str | None = None,
        version: str = "agent_sim/0.1",
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 5.0,
        rng: random.Random | None = None,
        faults: FaultPolicy | None = None,
        open_timeout_s: float = 10.0,
        register_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = 20.0,
    ) -> None:
        if not hub_urls:
            raise ValueError("hub_urls must not be empty")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        self.node_id = node_id
        self.capabilities = capabilities
        self.hub_urls: tuple[str, ...] = tuple(node_url(u) for u in hub_urls)
        self.binary = binary
        self.version = version
        self._handler = handler
        self._token = token
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._rng = rng if rng is not None else random.Random()
        self._faults = faults
        self._open_timeout_s = open_timeout_s
        self._register_timeout_s = register_timeout_s
        self._close_timeout_s = close_timeout_s
        self._ping_interval_s = ping_interval_s

        self.registered = asyncio.Event()
        self.hub_id: str | None = None
        self.pool: int | None = None
        self.heartbeat_interval_ms: int | None = None
        self.connected_url: str | None = None
        self.accepted = 0
        self.rejected = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.lost = 0
        self.connects = 0
        self.disconnects = 0
        self.conflicts = 0

        self._ws: ClientConnection | None = None
        self._codecs: dict[bool, Codec[NodeOutbound]] = {
            False: agent_codec(binary=False),
            True: agent_codec(binary=True),
        }
        self._jobs: dict[_JobKey, asyncio.Task[None]] = {}
        self._cancel_requested: set[_JobKey] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._stopping = False
        self._run_task: asyncio.Task[None] | None = None
        self._log = logger.bind(node_id=node_id)

    # --- lifecycle ------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "registered" if self.registered.is_set() else "connecting"
        if self._stopping:
            state = "closed"
        elif self._draining:
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
        self._run_task = asyncio.create_task(self._run(), name=f"agent:{self.node_id}")

    async def aclose(self) -> None:
        """Close the connection (code 1000), cancel running jobs and stop reconnecting."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
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
        self._draining = True
        if self._ws is not None and self.registered.is_set():
            await self._send(self._ws, Drain())
        drained = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            drained = False
        await self.aclose()
        return drained

    async def wait_registered(self, timeout_s: float | None = None) -> None:
        """Wait until the agent is registered; raise `TimeoutError` after `timeout_s`."""
        await asyncio.wait_for(self.registered.wait(), timeout_s)

    @property
    def draining(self) -> bool:
        return self._draining

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

    async def update_capabilities(self, capabilities: Capabilities) -> None:
        """Advertise new capabilities (kept for re-registration too)."""
        self.capabilities = capabilities
        if self._ws is not None and self.registered.is_set():
            await self._send(self._ws, CapabilitiesUpdate(capabilities=capabilities))

    def abort_connection(self) -> bool:
        """Fault injection: drop the TCP connection without a close frame; it reconnects.

        Returns whether there was a connection to drop.
        """
        ws = self._ws
        if ws is None:
            return False
        self._abort(ws)
        return True
