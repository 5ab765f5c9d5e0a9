"""An agent's connection loop: connect, register, heartbeat, serve, reconnect.

`node_url` normalises hub URLs. `ConnectionLoop.run` keeps one session to
`/v1/node` alive, cycling through the hub URLs with exponential backoff and
full jitter; a session that stayed registered for `STABLE_SESSION_S` resets
the backoff. Each connection is a `HubLink` opened by the agent's `Connector`
(agent_sim.link; `agent_sim.wslink` over websockets): it registers, then
heartbeats and hands the hub's `job_assign` / `job_cancel` to the agent's
`JobRunner` (agent_sim.jobs), which it tells to cancel every job when the
connection drops. The loop stops when the agent is stopping or draining, or
when the hub closed the session with 4005 (`replaced`: another agent took
this node id over; reconnecting would only take it back).

Authentication: the token is a string, or a callable returning a
fresh token (or an awaitable of one) for every connect, which the connector
sends as `Authorization: Bearer`. A hub closing the session with 4004
(`token_expired`) is simply reconnected to, with a fresh token.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from agent_sim.frames import Frames
from agent_sim.jobs import JobRunner
from agent_sim.link import Connector, HubLink, LinkClosed, LinkRefused
from agent_sim.state import AgentState
from hub.core import close_codes
from hub.core.messages import (
    Error,
    Heartbeat,
    JobAssign,
    JobCancel,
    NodeOutbound,
    Register,
    Registered,
    hub_silence_ms,
)

__all__ = ["NODE_PATH", "STABLE_SESSION_S", "ConnectionLoop", "Token", "node_url"]

Token = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a callable returning a fresh one (or an awaitable of one)."""


async def resolve_token(token: Token | None) -> str | None:
    """The token to send on this connect (a callable is called every time)."""
    if token is None or isinstance(token, str):
        return token
    value = token()
    if inspect.isawaitable(value):
        value = await value
    return value

NODE_PATH: Final = "/v1/node"
GOING_AWAY: Final = 1001
"""The close code of a hub that shuts down (or drains): reconnect to the next hub."""
HUB_SHUTDOWN: Final = "hub_shutdown"
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


CONFLICT_RETRY_MAX_S: Final = 0.5
"""The longest wait between registrations refused `node_id_conflict`: the node's
previous hub died or froze holding its lease, which ends when the other hubs exclude
it (within `hub_timeout_ms`); backing off further would only idle the node after."""
"""Never less: a hub's garbage collection or a busy loop turn may take a few hundred ms."""


class ConnectionLoop:
    """The connection of one `NodeAgent` to its hubs.

    Observable state: `registered` (an Event, set while registered), `hub_id`,
    `pool`, `heartbeat_interval_ms`, `connected_url` (of the last
    registration) and the counters `connects`, `disconnects`, `conflicts`.

    A hub that closes the session with 1001 or refuses `register` with
    `hub_shutdown` is draining or stopping: the loop moves to the next hub URL at
    once (no backoff).
    """

    __slots__ = (
        "_close_code",
        "_connector",
        "_dropped",
        "_frames",
        "_hub_silent",
        "_jobs",
        "_reconnect_max_s",
        "_reconnect_min_s",
        "_register_timeout_s",
        "_rng",
        "_state",
        "_token",
        "conflicts",
        "connected_url",
        "connects",
        "disconnects",
        "heartbeat_interval_ms",
        "hub_id",
        "hub_urls",
        "pool",
        "registered",
        "replaced",
        "version",
    )

    def __init__(
        self,
        state: AgentState,
        frames: Frames,
        jobs: JobRunner,
        connector: Connector,
        *,
        hub_urls: Sequence[str],
        version: str,
        token: Token | None,
        reconnect_min_s: float,
        reconnect_max_s: float,
        rng: random.Random,
        register_timeout_s: float,
    ) -> None:
        if not hub_urls:
            raise ValueError("hub_urls must not be empty")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        self._state = state
        self._frames = frames
        self._jobs = jobs
        self._connector = connector
        self.hub_urls: tuple[str, ...] = tuple(node_url(u) for u in hub_urls)
        self.version = version
        self._token = token
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._rng = rng
        self._register_timeout_s = register_timeout_s

        self.registered = asyncio.Event()
        self.hub_id: str | None = None
        self.pool: int | None = None
        self.heartbeat_interval_ms: int | None = None
        self.connected_url: str | None = None
        self.connects = 0
        self.disconnects = 0
        self.conflicts = 0
        self.replaced = False
        """The hub closed the session with 4005: another agent took this node id over."""
        self._close_code: int | None = None
        """How the last connection was closed (1001: the hub is going away)."""
        self._dropped = False
        """A registered connection ended without a clean close: replay recent results."""
        self._hub_silent = False
        """The last hub stopped answering pings: reconnecting to it would hang (a frozen
        process's kernel still accepts connections), so the next hub is tried first."""

    def _backoff_s(self, failures: int) -> float:
        """Exponential backoff with full jitter, in [reconnect_min_s, reconnect_max_s]."""
        cap = min(self._reconnect_max_s, self._reconnect_min_s * 2.0 ** min(failures + 1, 30))
        return self._rng.uniform(self._reconnect_min_s, cap)

    def _retry_delay_s(self, failures: int, *, conflicted: bool) -> float:
        """How long to wait before the next connection attempt."""
        delay_s = self._backoff_s(failures)
        return min(delay_s, CONFLICT_RETRY_MAX_S) if conflicted else delay_s

    async def run(self) -> None:
        """Connect, serve and reconnect until the agent is stopping or draining."""
        state = self._state
        index = 0
        failures = 0
        conflicted = False
        while not state.stopping:
            url = self.hub_urls[index]
            started = time.monotonic()
            try:
                registered = await self._connect_once(url)
            except (OSError, TimeoutError, LinkRefused) as exc:
                # Unreachable or refused at the handshake: try the next hub.
                next_url = self.hub_urls[(index + 1) % len(self.hub_urls)]
                state.log.log(
                    "INFO" if failures == 0 else "DEBUG",
                    "{} cannot connect to {}: {!r}; next {}",
                    state.node_id,
                    url,
                    exc,
                    next_url,
                )
                index = (index + 1) % len(self.hub_urls)
                failures += 1
            except _RegistrationRefused as exc:
                if exc.code == "node_id_conflict":
                    self.conflicts += 1
                    conflicted = True
                if exc.code == HUB_SHUTDOWN:  # that hub is draining: the next one
                    index = (index + 1) % len(self.hub_urls)
                state.log.log(
                    "INFO" if failures == 0 else "DEBUG",
                    "{} registration refused by {}: {}",
                    state.node_id,
                    url,
                    exc,
                )
                failures += 1
            except Exception:  # a bug or an unexpected library error: never die silently
                state.log.opt(exception=True).error(
                    "{} connection to {} failed", state.node_id, url
                )
                failures += 1
            else:
                going_away = self._close_code == GOING_AWAY or self._hub_silent
                self._hub_silent = False
                if going_away or (registered and time.monotonic() - started >= STABLE_SESSION_S):
                    failures = 0  # the hub is shutting down: move on at once
                else:
                    failures += 1
                if not registered or going_away:
                    # Closed before `registered` (that hub is not serving), the hub is
                    # shutting down (1001) or stopped answering: the next hub.
                    index = (index + 1) % len(self.hub_urls)
            if state.stopping or state.draining or self.replaced:
                break
            await asyncio.sleep(self._retry_delay_s(failures, conflicted=conflicted))
            conflicted = False

    async def _connect_once(self, url: str) -> bool:
        """One connection: handshake, register, serve until it closes.

        Returns whether the session got registered; raises when it could not
        connect or the hub refused the registration.
        """
        token = await resolve_token(self._token)
        async with self._connector.open(url, token) as link:
            self.connects += 1
            self._frames.current = link
            self._close_code = None
            registered = False
            try:
                try:
                    await self._register(link, url)
                except (_RegistrationRefused, TimeoutError):
                    # Hang up cleanly: a link left by an exception closes with 1011.
                    await link.close(reason="registration failed")
                    raise
                registered = True
                if self._dropped:
                    # The last connection dropped (no clean close): its hub may have died
                    # holding results not yet passed on to their jobs' homes.
                    self._dropped = False
                    await self._jobs.replay(link)
                await self._serve(link)
            except LinkClosed:
                pass
            finally:
                self._frames.current = None
                if link.close_code == close_codes.REPLACED:
                    self.replaced = True
                    self._state.log.warning(
                        "{} was replaced at {} by another session with its node id: "
                        "not reconnecting", self._state.node_id, url,
                    )
                self._close_code = link.close_code
                if registered and link.close_code not in (1000, GOING_AWAY):
                    self._dropped = True
                if self.registered.is_set():
                    self.registered.clear()
                    if not self._state.stopping:  # not our own close
                        self.disconnects += 1
                        self._state.log.info("{} disconnected from {}", self._state.node_id, url)
            return registered

    async def _register(self, link: HubLink, url: str) -> None:
        state = self._state
        self.hub_id = self.connected_url = None
        register = Register(state.node_id, state.capabilities, self.version)
        if not await link.send(register):
            raise LinkClosed
        registered: Registered | None = None
        async with asyncio.timeout(self._register_timeout_s):
            while registered is None:
                message = await self._frames.receive(link)
                match message:
                    case Registered():
                        registered = message
                    case Error(code=code, message=text):
                        raise _RegistrationRefused(code, text)
                    case None:
                        pass
                    case _:
                        state.log.debug("{} ignored {!r} before registered", state.node_id, message)
        self.hub_id = registered.hub_id
        self.pool = registered.pool
        self.heartbeat_interval_ms = registered.heartbeat_interval_ms
        self.connected_url = url
        self.registered.set()
        level = "DEBUG" if self.connects == 1 else "INFO"
        state.log.log(
            level,
            "{} registered with {} at {} (pool {})",
            state.node_id,
            self.hub_id,
            url,
            self.pool,
        )

    async def _serve(self, link: HubLink) -> None:
        """Heartbeat and handle hub messages until the connection closes."""
        try:
            async with asyncio.TaskGroup() as tg:
                heartbeat = tg.create_task(self._heartbeat_loop(link))
                watch = tg.create_task(self._watch_hub(link))
                try:
                    while True:
                        message = await self._frames.receive(link)
                        if message is not None:
                            await self._dispatch(link, tg, message)
                except LinkClosed:
                    pass
                finally:
                    # The hub fails these attempts over; nothing is sent for them.
                    heartbeat.cancel()
                    watch.cancel()
                    self._jobs.cancel_all()
        finally:
            self._jobs.forget_cancels()

    async def _dispatch(
        self, link: HubLink, tg: asyncio.TaskGroup, message: NodeOutbound
    ) -> None:
        state = self._state
        match message:
            case JobAssign():
                await self._jobs.assign(link, tg, message)
            case JobCancel(job_id=job_id, attempt=attempt):
                self._jobs.cancel(job_id, attempt)
            case Error():
                state.log.debug(
                    "{} hub error {}: {} (job {})",
                    state.node_id,
                    message.code,
                    message.message,
                    message.job_id,
                )
            case Registered():
                state.log.debug("{} unexpected registered while registered", state.node_id)

    async def _watch_hub(self, link: HubLink) -> None:
        """The node's own liveness check on its hub: a ping every heartbeat interval. A
        hub that answers none for `hub_silence_s` (frozen: SIGSTOP, a stalled VM, a
        half-open connection) is left as if the connection had dropped: the node
        reconnects to the next hub and replays its recent results there, instead of
        holding them in a socket nobody reads."""
        interval_s = (self.heartbeat_interval_ms or 0) / 1000
        if interval_s <= 0:
            return
        silence_s = hub_silence_ms(self.heartbeat_interval_ms or 0) / 1000
        while True:
            await asyncio.sleep(interval_s)
            if link.close_code is not None:
                return
            pinged_s = self._jobs.now_s()
            if await link.answers(silence_s):
                self._jobs.confirmed(pinged_s)
            else:
                if link.close_code is None:
                    self._state.log.warning(
                        "{}: hub {} answered no ping for {:.1f}s: moving to another hub",
                        self._state.node_id, self.hub_id, silence_s,
                    )
                    self._hub_silent = True
                    link.abort()
                return

    async def _heartbeat_loop(self, link: HubLink) -> None:
        interval_ms = self.heartbeat_interval_ms or 0
        if interval_ms <= 0:
            return
        while True:
            await asyncio.sleep(interval_ms / 1000.0)
            if not await self._frames.send(link, Heartbeat(running=self._jobs.running)):
                return
