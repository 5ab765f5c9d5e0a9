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
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

import msgspec
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from agent_sim.behaviour import NO_FAULT, FaultDecision
from hub.errors import ProtocolError
from hub.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Capabilities,
    CapabilitiesUpdate,
    Codec,
    Drain,
    Error,
    ErrorInfo,
    Heartbeat,
    JobAccept,
    JobAssign,
    JobCancel,
    JobProgress,
    JobReject,
    JobResult,
    NodeOutbound,
    Pipeline,
    Register,
    Registered,
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

NODE_PATH: Final = "/v1/node"
STABLE_SESSION_S: Final = 1.0
"""A session that lasted this long resets the reconnect backoff."""

_JobKey = tuple[str, int]


def node_url(url: str) -> str:
    """`ws://host:port` -> `ws://host:port/v1/node`; a URL with a path is kept as is."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=NODE_PATH)
    return urlunsplit(parts)


class JobFailed(Exception):
    """Raise from a handler to report `job_result` with `ok: false` and this error."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class JobContext:
    """One accepted job attempt, as the handler sees it."""

    __slots__ = (
        "_progress",
        "attempt",
        "deadline_ms",
        "features",
        "job_id",
        "node_id",
        "payload",
        "pipeline",
        "session_id",
        "src_lang",
        "tgt_lang",
    )

    def __init__(
        self,
        *,
        node_id: str,
        assign: JobAssign,
        progress: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.node_id: str = node_id
        self.job_id: str = assign.job_id
        self.attempt: int = assign.attempt
        self.session_id: str = assign.session_id
        self.src_lang: str = assign.src_lang
        self.tgt_lang: str = assign.tgt_lang
        self.features: list[str] = assign.features
        self.pipeline: Pipeline = assign.pipeline
        self.payload: Any = assign.payload
        self.deadline_ms: int = assign.deadline_ms
        self._progress = progress

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, attempt={self.attempt}, "
            f"{self.src_lang}->{self.tgt_lang}, node_id={self.node_id!r})"
        )

    async def progress(self, data: Any) -> None:
        """Send `job_progress`; a no-op once the connection is gone (the job is cancelled)."""
        await self._progress(data)


JobHandler = Callable[[JobContext], Awaitable[Any]]


class FaultPolicy(Protocol):
    """Consulted on each job_assign the agent could accept (not when busy or draining)."""

    def on_assign(self, assign: JobAssign) -> FaultDecision: ...


class _RegistrationRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class NodeAgent:
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
    def running(self) -> int:
        """Jobs this agent holds: assigned and not yet finished (pending accepts included).

        A job the hub cancelled no longer counts, even while its task winds down:
        the hub freed that slot when it sent `job_cancel` and may fill it at once."""
        return len(self._jobs) - len(self._cancel_requested & self._jobs.keys())

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

    def _abort(self, ws: ClientConnection) -> None:
        # Forget the connection first so that nothing more is written to the
        # aborted transport (asyncio logs a warning for repeated writes).
        if ws is self._ws:
            self._ws = None
        ws.transport.abort()

    # --- connection loop ------------------------------------------------------------

    def _backoff_s(self, failures: int) -> float:
        """Exponential backoff with full jitter, in [reconnect_min_s, reconnect_max_s]."""
        cap = min(self._reconnect_max_s, self._reconnect_min_s * 2.0 ** min(failures + 1, 30))
        return self._rng.uniform(self._reconnect_min_s, cap)

    async def _run(self) -> None:
        index = 0
        failures = 0
        while not self._stopping:
            url = self.hub_urls[index]
            started = time.monotonic()
            try:
                registered = await self._connect_once(url)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                # Unreachable or refused at the handshake: try the next hub.
                next_url = self.hub_urls[(index + 1) % len(self.hub_urls)]
                self._log.log(
                    "INFO" if failures == 0 else "DEBUG",
                    "{} cannot connect to {}: {!r}; next {}",
                    self.node_id,
                    url,
                    exc,
                    next_url,
                )
                index = (index + 1) % len(self.hub_urls)
                failures += 1
            except _RegistrationRefused as exc:
                if exc.code == "node_id_conflict":
                    self.conflicts += 1
                self._log.log(
                    "INFO" if failures == 0 else "DEBUG",
                    "{} registration refused by {}: {}",
                    self.node_id,
                    url,
                    exc,
                )
                failures += 1
            except Exception:  # a bug or an unexpected library error: never die silently
                self._log.opt(exception=True).error("{} connection to {} failed", self.node_id, url)
                failures += 1
            else:
                if registered and time.monotonic() - started >= STABLE_SESSION_S:
                    failures = 0
                else:
                    failures += 1
                if not registered:  # closed before `registered`: that hub is not serving
                    index = (index + 1) % len(self.hub_urls)
            if self._stopping or self._draining:
                break
            await asyncio.sleep(self._backoff_s(failures))

    async def _connect_once(self, url: str) -> bool:
        """One connection: handshake, register, serve until it closes.

        Returns whether the session got registered; raises when it could not
        connect or the hub refused the registration.
        """
        protocol = MSGPACK_SUBPROTOCOL if self.binary else JSON_SUBPROTOCOL
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        async with connect(
            url,
            subprotocols=[Subprotocol(protocol)],
            additional_headers=headers,
            open_timeout=self._open_timeout_s,
            close_timeout=self._close_timeout_s,
            ping_interval=self._ping_interval_s,
            compression=None,
            proxy=None,
        ) as ws:
            self.connects += 1
            self._ws = ws
            registered = False
            try:
                try:
                    await self._register(ws, url)
                except (_RegistrationRefused, TimeoutError):
                    # Hang up cleanly (1000, not websockets' 1011 for an exception).
                    await ws.close(reason="registration failed")
                    raise
                registered = True
                await self._serve(ws)
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                if self.registered.is_set():
                    self.registered.clear()
                    if not self._stopping:  # not our own close
                        self.disconnects += 1
                        self._log.info("{} disconnected from {}", self.node_id, url)
            return registered

    async def _register(self, ws: ClientConnection, url: str) -> None:
        self.hub_id = self.connected_url = None
        await ws.send(self._encode(ws, Register(self.node_id, self.capabilities, self.version)))
        registered: Registered | None = None
        async with asyncio.timeout(self._register_timeout_s):
            while registered is None:
                message = self._decode(ws, await ws.recv())
                match message:
                    case Registered():
                        registered = message
                    case Error(code=code, message=text):
                        raise _RegistrationRefused(code, text)
                    case None:
                        pass
                    case _:
                        self._log.debug("{} ignored {!r} before registered", self.node_id, message)
        self.hub_id = registered.hub_id
        self.pool = registered.pool
        self.heartbeat_interval_ms = registered.heartbeat_interval_ms
        self.connected_url = url
        self.registered.set()
        level = "DEBUG" if self.connects == 1 else "INFO"
        self._log.log(
            level,
            "{} registered with {} at {} (pool {})",
            self.node_id,
            self.hub_id,
            url,
            self.pool,
        )

    async def _serve(self, ws: ClientConnection) -> None:
        """Heartbeat and handle hub messages until the connection closes."""
        aux: set[asyncio.Task[None]] = set()
        try:
            async with asyncio.TaskGroup() as tg:
                aux.add(tg.create_task(self._heartbeat_loop(ws)))
                try:
                    async for frame in ws:
                        message = self._decode(ws, frame)
                        if message is not None:
                            await self._dispatch(ws, tg, aux, message)
                except ConnectionClosed:
                    pass
                finally:
                    # The hub fails these attempts over; nothing is sent for them.
                    for task in (*aux, *self._jobs.values()):
                        task.cancel()
        finally:
            self._cancel_requested.clear()

    async def _heartbeat_loop(self, ws: ClientConnection) -> None:
        interval_ms = self.heartbeat_interval_ms or 0
        if interval_ms <= 0:
            return
        while True:
            await asyncio.sleep(interval_ms / 1000.0)
            if not await self._send(ws, Heartbeat(running=self.running)):
                return

    async def _dispatch(
        self,
        ws: ClientConnection,
        tg: asyncio.TaskGroup,
        aux: set[asyncio.Task[None]],
        message: NodeOutbound,
    ) -> None:
        match message:
            case JobAssign():
                await self._on_assign(ws, tg, aux, message)
            case JobCancel(job_id=job_id, attempt=attempt):
                key = (job_id, attempt)
                task = self._jobs.get(key)
                if task is None:
                    self._log.debug("{} job_cancel for unknown {}", self.node_id, key)
                    return
                self._cancel_requested.add(key)
                task.cancel()
            case Error():
                self._log.debug(
                    "{} hub error {}: {} (job {})",
                    self.node_id,
                    message.code,
                    message.message,
                    message.job_id,
                )
            case Registered():
                self._log.debug("{} unexpected registered while registered", self.node_id)

    async def _on_assign(
        self,
        ws: ClientConnection,
        tg: asyncio.TaskGroup,
        aux: set[asyncio.Task[None]],
        assign: JobAssign,
    ) -> None:
        key = (assign.job_id, assign.attempt)
        if key in self._jobs:
            self._log.debug("{} duplicate job_assign {}", self.node_id, key)
            return
        reason: str | None = None
        decision = NO_FAULT
        if self._draining:
            reason = "draining"
        elif self.running >= self.capabilities.max_concurrency:
            reason = "busy"
        else:
            if self._faults is not None:
                decision = self._faults.on_assign(assign)
            reason = decision.reject_reason
        if reason is not None:
            self.rejected += 1
            await self._send(ws, JobReject(assign.job_id, assign.attempt, reason))
            return
        self._idle.clear()
        self._jobs[key] = tg.create_task(self._run_job(ws, assign, decision))
        if decision.crash_after_s is not None:
            crash = tg.create_task(self._crash_later(ws, key, decision.crash_after_s))
            aux.add(crash)
            crash.add_done_callback(aux.discard)

    async def _crash_later(self, ws: ClientConnection, key: _JobKey, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if key in self._jobs and ws is self._ws:
            self._log.debug("{} simulated crash during {}", self.node_id, key)
            self._abort(ws)

    async def _run_job(
        self, ws: ClientConnection, assign: JobAssign, decision: FaultDecision
    ) -> None:
        key = (assign.job_id, assign.attempt)
        try:
            if decision.accept_delay_s > 0:
                await asyncio.sleep(decision.accept_delay_s)
            if not await self._send(ws, JobAccept(assign.job_id, assign.attempt)):
                return
            self.accepted += 1

            async def progress(data: Any) -> None:
                await self._send(ws, JobProgress(assign.job_id, assign.attempt, data))

            ctx = JobContext(node_id=self.node_id, assign=assign, progress=progress)
            result = await self._call_handler(ws, ctx)
            if key in self._cancel_requested:  # the handler swallowed our cancellation
                self.cancelled += 1
                return
            if result.ok:
                self.completed += 1
            else:
                self.failed += 1
            if not await self._send(ws, result):
                return
        except asyncio.CancelledError:
            if key in self._cancel_requested:
                self.cancelled += 1
            else:
                self.lost += 1
            raise
        finally:
            self._cancel_requested.discard(key)
            self._jobs.pop(key, None)
            if not self._jobs:
                self._idle.set()

    async def _call_handler(self, ws: ClientConnection, ctx: JobContext) -> JobResult:
        try:
            output = await self._handler(ctx)
        except JobFailed as exc:
            error = ErrorInfo(code=exc.code, message=exc.message)
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        except Exception as exc:
            self._log.opt(exception=True).debug("{} handler raised in {!r}", self.node_id, ctx)
            error = ErrorInfo(code="handler_error", message=f"{type(exc).__name__}: {exc}")
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        result = JobResult(ctx.job_id, ctx.attempt, ok=True, output=output)
        try:
            self._encode(ws, result)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            error = ErrorInfo(code="handler_error", message=f"output not encodable: {exc}")
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        return result

    # --- frames -----------------------------------------------------------------------

    def _codec(self, ws: ClientConnection) -> Codec[NodeOutbound]:
        # A hub that selected no subprotocol speaks JSON (docs/protocol.md, "Transport").
        return self._codecs[ws.subprotocol == MSGPACK_SUBPROTOCOL]

    def _encode(self, ws: ClientConnection, message: msgspec.Struct) -> str | bytes:
        return self._codec(ws).encode_frame(message)

    def _decode(self, ws: ClientConnection, frame: str | bytes) -> NodeOutbound | None:
        try:
            return self._codec(ws).decode(frame)
        except ProtocolError as exc:
            self._log.debug("{} undecodable frame from hub: {!r}", self.node_id, exc)
            return None

    async def _send(self, ws: ClientConnection, message: msgspec.Struct) -> bool:
        """Send one message on `ws`; False when that connection is gone."""
        if ws is not self._ws:
            return False
        try:
            await ws.send(self._encode(ws, message))
        except ConnectionClosed:
            return False
        return True
