"""The agent's session: connect, register, heartbeat, serve, reconnect.

`node_url` normalises hub URLs. `_AgentSession` is a base class of
`agent_sim.agent.NodeAgent`: its run loop keeps one WebSocket session to
`/v1/node` alive, cycling through the hub URLs with exponential backoff and
full jitter, and cancels the running jobs when a connection drops.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from agent_sim.agent_jobs import _AgentJobs
from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Capabilities,
    Error,
    Heartbeat,
    Register,
    Registered,
)

NODE_PATH: Final = "/v1/node"
STABLE_SESSION_S: Final = 1.0
"""A session that lasted this long resets the reconnect backoff."""


def node_url(url: str) -> str:
    """`ws://host:port` -> `ws://host:port/v1/node`; a URL with a path is kept as is."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=NODE_PATH)
    return urlunsplit(parts)


class _RegistrationRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class _AgentSession(_AgentJobs):
    """The connection loop of `NodeAgent`; the attributes are set by `NodeAgent.__init__`."""

    capabilities: Capabilities
    hub_urls: tuple[str, ...]
    binary: bool
    version: str
    registered: asyncio.Event
    hub_id: str | None
    pool: int | None
    heartbeat_interval_ms: int | None
    connected_url: str | None
    connects: int
    disconnects: int
    conflicts: int
    _token: str | None
    _reconnect_min_s: float
    _reconnect_max_s: float
    _rng: random.Random
    _open_timeout_s: float
    _register_timeout_s: float
    _close_timeout_s: float
    _ping_interval_s: float | None
    _stopping: bool

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
