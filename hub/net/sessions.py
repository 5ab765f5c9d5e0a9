"""The session layer: what one node or client connection does with its decoded messages.

Transport-neutral: a session sees its peer as a `Link` and gets messages
already decoded (or the `ProtocolError` their frame raised) from whatever
carries them (`hub.net.server` over websockets). It owns the protocol rules
that belong to a connection rather than to a job:

- every session speaks for a `Principal` (hub/core/principal.py), admitted at
  the handshake (hub/net/auth.py), which decides what it may do (register
  which node ids, take a node over, whose queue share it takes); a session
  whose token has an `exp` is
  closed with 4004 (`token_expired`) at that instant (`SessionExpiry`);
- a node must `register` first; a `node_id_conflict` closes it with 4001; a
  node id its token does not allow is `forbidden` and closes it with 4003;
  an authenticated register for a node id with a live session takes it over
  (the old session is closed with 4005);
- a client's submits and cancels belong to its principal's tenant;
- every refused message is answered with `error` and counted
  (`RefusalCount`); `max_protocol_errors` refusals within any
  `REFUSAL_WINDOW_S` close the session with 1008;
- a client's submits run concurrently when the store waits on I/O (up to
  `MAX_SUBMITS_IN_FLIGHT`, after which the session stops taking frames until
  one finishes: backpressure on a client that floods);
- a stopping or draining hub answers a node's `register` with `error`
  `hub_shutdown` and close 1001 (and, in the job path, submits with `rejected`
  `hub_shutdown`; `max_jobs_per_session` is the job path's too);
- every submit gets one answer with its request id (`accepted` or `rejected`):
  the job path answers it through its `SubmitReply`, even when it fails on it;
- when the connection ends, or the hub starts closing it, the session ends
  (`end_soon`, once): a node is unregistered (its attempts fail over), even
  when that happens while the node's `register` is still being handled, and
  a client's submits in flight are let finish;
- node sessions that go silent for `node_timeout_ms` are closed
  (`NodeWatchdog`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from loguru import logger

from hub.core import close_codes, error_codes
from hub.core.config import HubConfig
from hub.core.errors import ProtocolError
from hub.core.messages import (
    Audio,
    Cancel,
    Error,
    Register,
    RoomJoin,
    RoomLeave,
    SessionClose,
    SessionOpen,
    Submit,
)
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, Principal
from hub.jobs.home.home import JobHome
from hub.jobs.links import Link, LinkCloser
from hub.jobs.owner.owner import NodeOwner
from hub.jobs.owner.registry import RegisteredNode
from hub.jobs.service import JobService
from hub.live.registry import LiveSessions
from hub.runtime.eager import eager_task

MAX_SUBMITS_IN_FLIGHT: Final = 256
"""Submits of one client session being handled at once."""
REFUSAL_WINDOW_S: Final = 10.0
"""`max_protocol_errors` counts the refusals within any window this long."""


_REGISTER_CLOSES: Final = {
    error_codes.NODE_ID_CONFLICT: close_codes.REGISTER_REFUSED,
    error_codes.FORBIDDEN: close_codes.FORBIDDEN,
    error_codes.HUB_SHUTDOWN: close_codes.GOING_AWAY,  # draining: go elsewhere
}
"""Registration refusals that end the session: the `error` is sent, then this close."""


class RefusalCount:
    """A session's refused messages, against `max_protocol_errors` in any
    `REFUSAL_WINDOW_S`: bad frames mixed with good ones add up, while a
    long-lived node's occasional race (a late message about a job that moved
    on) never does. Holds at most `limit` timestamps."""

    __slots__ = ("_clock", "_limit", "_times", "_window")

    def __init__(
        self, limit: int, *, window_s: float = REFUSAL_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._times: deque[float] | None = None
        """Made at the first refusal: most sessions never have one (and a deque with a
        bound costs about 760 bytes)."""

    def refused(self) -> bool:
        """Count one refusal; True when the session must now be closed."""
        now = self._clock()
        times = self._times
        if times is None:
            times = self._times = deque(maxlen=self._limit)
        times.append(now)
        return len(times) >= self._limit and now - times[0] <= self._window


class Refusals:
    """How a session refuses a message: `error` (counted by endpoint and code), and
    a close with 1008 past `max_protocol_errors` in the window (`RefusalCount`). One
    per session, node or client."""

    __slots__ = ("_count", "_endpoint", "_link", "_metrics")

    def __init__(self, link: Link, metrics: Metrics, endpoint: str, limit: int) -> None:
        self._link = link
        self._metrics = metrics
        self._endpoint = endpoint
        self._count = RefusalCount(limit)

    async def error(self, exc: ProtocolError, *, job_id: str | None = None) -> None:
        """Answer with `error` (counted), without counting against the limit."""
        self._metrics.protocol_errors.inc(self._endpoint, exc.code)
        await self._link.send(Error(
            code=exc.code, message=exc.message, path=exc.path, job_id=job_id,
            session_id=exc.session_id, reasons=exc.reasons, room=exc.room,
        ))

    async def refuse(self, exc: ProtocolError, *, job_id: str | None = None) -> bool:
        """Answer a refused message with `error`; close with 1008 past the limit (then
        True: the session is over)."""
        await self.error(exc, job_id=job_id)
        if self._count.refused():
            await self._link.close(close_codes.POLICY_VIOLATION, "too many protocol errors")
            return True
        return False

    async def internal_error(self) -> None:
        await self._link.send(Error(code=error_codes.INTERNAL_ERROR, message="the hub failed"))


class NodeWatchdog:
    """Closes node sessions that sent nothing for `node_timeout_ms`.

    A peer that does not answer the closing handshake (frozen, partitioned) is
    dropped after a short grace instead of waiting for the close timeout, so
    its jobs fail over after about `node_timeout_ms`. (Its session has ended
    already: a link ends its session when the hub starts closing it.)"""

    def __init__(self, config: HubConfig, closer: LinkCloser | None = None) -> None:
        self._config = config
        self._last_seen: dict[str, float] = {}
        self._links: dict[str, Link] = {}
        self._closer = closer if closer is not None else LinkCloser(close_grace_s(config))

    def watch(self, link: Link) -> None:
        self._links[link.peer_id] = link
        self._last_seen[link.peer_id] = time.monotonic()

    def seen(self, peer_id: str) -> None:
        self._last_seen[peer_id] = time.monotonic()

    def forget(self, link: Link) -> None:
        self._links.pop(link.peer_id, None)
        self._last_seen.pop(link.peer_id, None)

    async def run(self) -> None:
        """Check every `min(heartbeat_interval, node_timeout / 4)`; runs until cancelled."""
        config = self._config
        interval_s = min(config.heartbeat_interval_ms, config.node_timeout_ms / 4) / 1000
        timeout_s = config.node_timeout_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for peer_id, seen in list(self._last_seen.items()):
                link = self._links.get(peer_id)
                if link is not None and now - seen > timeout_s:
                    self._last_seen.pop(peer_id, None)
                    logger.info("node session {} silent for {:.1f}s: closing", peer_id, now - seen)
                    self._closer.close(link, close_codes.NODE_TIMEOUT, "node_timeout")

    async def wait_closed(self) -> None:
        """Wait for the closes under way (shutting down)."""
        await self._closer.wait_closed()


def close_grace_s(config: HubConfig) -> float:
    """How long a peer the hub closes gets for the closing handshake before it is dropped."""
    return min(config.heartbeat_interval_ms, 1000) / 1000


class SessionExpiry:
    """Closes a session with 4004 (`token_expired`) when its token's `exp` passes: one
    timer per session with an expiring token, cancelled when the session ends; nothing
    is checked per message."""

    __slots__ = ("_handle",)

    def __init__(self, link: Link, principal: Principal, closer: LinkCloser) -> None:
        self._handle: asyncio.TimerHandle | None = None
        if principal.exp is not None:
            delay_s = max(0.0, principal.exp - time.time())
            self._handle = asyncio.get_running_loop().call_later(
                delay_s, closer.close, link, close_codes.TOKEN_EXPIRED, "token_expired"
            )

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Sessions:
    """Opens node and client sessions with what they share (and knows whether the
    hub is stopping)."""

    def __init__(
        self, *, config: HubConfig, service: JobService, live: LiveSessions, metrics: Metrics,
        waits: bool, closer: LinkCloser | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.live = live
        self.metrics = metrics
        self.waits = waits
        """Whether the store waits on I/O (then submits run concurrently)."""
        self.closer = closer if closer is not None else service.closer
        """Closes sessions without waiting on their peers (expiry, takeover, silence)."""
        self.watchdog = NodeWatchdog(config, self.closer)
        self.stopping = False
        """The hub is stopping or draining (`/readyz` says so; the job path refuses
        submits `hub_shutdown` on its own)."""
        self.draining = False
        """Stopping by draining first (running jobs finish)."""
        self._ids = itertools.count(1)

    def peer_id(self, endpoint: str) -> str:
        """A hub-unique id for a new connection (`n<k>` for nodes, `c<k>` for clients)."""
        return f"{endpoint[0]}{next(self._ids)}"

    def node(self, link: Link, principal: Principal = ANONYMOUS) -> NodeSession:
        return NodeSession(link, self, principal)

    def client(self, link: Link, principal: Principal = ANONYMOUS) -> ClientSession:
        return ClientSession(link, self, principal)


class NodeSession:
    """One node agent's connection: register first, then its messages to the owner role."""

    def __init__(self, link: Link, sessions: Sessions, principal: Principal) -> None:
        self.link = link
        self.principal = principal
        self.closed = False
        """True once the session is over (closed by the hub, or its connection lost):
        stop feeding it."""
        self._peer_id = link.peer_id
        self._expiry = SessionExpiry(link, principal, sessions.closer)
        self._owner: NodeOwner = sessions.service.owner
        self._watchdog = sessions.watchdog
        self._refusals = Refusals(
            link, sessions.metrics, "node", sessions.config.max_protocol_errors
        )
        self._node: RegisteredNode | None = None
        self._ending: asyncio.Task[None] | None = None
        self._log = logger.bind(peer=link.peer_id)
        self._watchdog.watch(link)

    @property
    def node_id(self) -> str | None:
        return None if self._node is None else self._node.node_id

    async def received(self, message: Any, size: int = 0) -> None:
        """A decoded message from the node (`size`: its frame's bytes)."""
        self._watchdog.seen(self._peer_id)
        try:
            if self._node is None:
                if not isinstance(message, Register):
                    raise ProtocolError(error_codes.NOT_REGISTERED, "send `register` first")
                await self._register(message)
            else:
                await self._owner.handle(self._node, message)
        except ProtocolError as exc:
            close_code = _REGISTER_CLOSES.get(exc.code)
            if close_code is not None:
                await self._refusals.error(exc)
                await self.link.close(close_code, exc.code)
                self.closed = True
                return
            await self.refuse(exc, job_id=getattr(message, "job_id", None))
        except Exception:
            self._log.exception("internal error on a node message")
            await self._refusals.internal_error()

    async def undecodable(self, exc: ProtocolError) -> None:
        """A frame that did not decode (or broke an ingress rule)."""
        self._watchdog.seen(self._peer_id)
        await self.refuse(exc, job_id=exc.job_id)

    async def refuse(self, exc: ProtocolError, *, job_id: str | None = None) -> None:
        """Answer a refused message with `error`; close with 1008 past the limit."""
        if await self._refusals.refuse(exc, job_id=job_id):
            self.closed = True

    async def _register(self, message: Register) -> None:
        principal = self.principal
        if not principal.may_register(message.node_id):
            raise ProtocolError(
                error_codes.FORBIDDEN, f"this token may not register node {message.node_id}"
            )
        node = await self._owner.register(
            self.link, message, int(time.time() * 1000), take_over=principal.may_take_over
        )
        if self._ending is not None:
            # The connection ended while the registration was under way: the session's
            # end found no node to unregister, so this one must not stay behind.
            await self._owner.unregister(node)
            return
        self._node = node
        self._log = self._log.bind(node_id=node.node_id)
        self._log.info("node registered (pool {})", node.caps.pool)
        await self.link.send(self._owner.registered_reply(node))

    def end_soon(self) -> None:
        """The connection is lost, or the hub started closing it: end the session now
        (idempotent), whatever its loop is waiting on."""
        self.closed = True
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._end())

    async def ended(self, close_code: int | None) -> None:
        """The session's loop is over: wait for the session's end (`end_soon`)."""
        self.end_soon()
        assert self._ending is not None
        await asyncio.shield(self._ending)
        if self._node is not None:
            self._log.info("node session ended (close code {})", close_code)

    async def _end(self) -> None:
        """Unregister the node (its attempts fail over)."""
        self._expiry.cancel()
        self._watchdog.forget(self.link)
        if self._node is not None:
            await self._owner.unregister(self._node)


class ClientSession:
    """One client's connection: submits (concurrent when the store waits) and cancels,
    each one call to the job's home role."""

    def __init__(self, link: Link, sessions: Sessions, principal: Principal) -> None:
        self.link = link
        self.principal = principal
        self.closed = False
        """True once the session is over (closed by the hub, or its connection lost):
        stop feeding it."""
        self._expiry = SessionExpiry(link, principal, sessions.closer)
        self._home: JobHome = sessions.service.home
        self._live = sessions.live
        self._waits = sessions.waits
        self._refusals = Refusals(
            link, sessions.metrics, "client", sessions.config.max_protocol_errors
        )
        self._submits: set[asyncio.Task[None]] = set()
        self._ending: asyncio.Task[None] | None = None
        self._home.client_connected(link, principal)

    async def received(self, message: Any, size: int = 0) -> None:
        """A decoded message from the client (`size`: its frame's bytes); returns once
        the next may be read."""
        try:
            kind = type(message)
            if kind is Audio:
                self._live.audio(self.link, message)
            elif kind is Submit:
                await self._submit(message, size)
            elif kind is Cancel:
                await self._home.cancel(self.link, message, self.principal)
            elif kind is SessionOpen:
                await self._live.open(self.link, self.principal, message)
            elif kind is SessionClose:
                await self._live.close(self.link, message)
            elif kind is RoomJoin:
                await self._live.join_room(self.link, self.principal, message)
            elif kind is RoomLeave:
                await self._live.rooms.leave(self.link, message)
        except ProtocolError as exc:
            await self.refuse(exc, job_id=getattr(message, "job_id", None))
        except Exception:
            logger.exception("internal error on a client message")
            await self._refusals.internal_error()

    async def undecodable(self, exc: ProtocolError) -> None:
        await self.refuse(exc, job_id=exc.job_id)

    async def refuse(self, exc: ProtocolError, *, job_id: str | None = None) -> None:
        """Answer a refused message with `error`; close with 1008 past the limit."""
        if await self._refusals.refuse(exc, job_id=job_id):
            self.closed = True

    async def _submit(self, message: Submit, size: int) -> None:
        submit = self._home.submit(self.link, message, self.principal, size or None)
        if not self._waits:
            # Nothing to overlap: a task would only add a loop turn.
            await submit
            return
        # Eager: the binding is written in this step, not a loop turn later.
        task = eager_task(submit)
        self._submits.add(task)
        task.add_done_callback(self._submits.discard)
        if len(self._submits) >= MAX_SUBMITS_IN_FLIGHT:
            await asyncio.wait(self._submits, return_when=asyncio.FIRST_COMPLETED)

    def end_soon(self) -> None:
        """The connection is lost, or the hub started closing it (idempotent)."""
        self.closed = True
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._end())

    async def ended(self, close_code: int | None) -> None:
        """The session's loop is over: wait for the session's end (`end_soon`)."""
        self.end_soon()
        assert self._ending is not None
        await asyncio.shield(self._ending)

    async def _end(self) -> None:
        """Let submits in flight finish (a half-made job must not be left behind); the
        client's jobs go on (a resubmit of a request_id gets its result)."""
        self._expiry.cancel()
        self._live.connection_lost(self.link)  # its live sessions wait for a resume
        if self._submits:
            await asyncio.wait(self._submits)
        self._home.client_disconnected(self.link)
