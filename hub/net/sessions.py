"""The session layer: what one node or client connection does with its decoded messages.

Transport-neutral: a session sees its peer as a `Link` and gets messages
already decoded (or the `ProtocolError` their frame raised) from whatever
carries them (`hub.net.server` over websockets). It owns the protocol rules
that belong to a connection rather than to a job:

- a node must `register` first; a `node_id_conflict` closes it with 4001;
- every refused message is answered with `error` and counted
  (`RefusalCount`); past `max_protocol_errors` the session is closed with 1008;
- a client's submits run concurrently when the store waits on I/O (up to
  `MAX_SUBMITS_IN_FLIGHT`, after which the session stops taking frames until
  one finishes: backpressure on a client that floods);
- a stopping or draining hub answers submits with `rejected` `hub_shutdown`, and
  a node's `register` with `error` `hub_shutdown` and close 1001;
- when the connection ends, a node is unregistered (its attempts fail over)
  and a client's submits in flight are let finish;
- node sessions that go silent for `node_timeout_ms` are closed
  (`NodeWatchdog`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Final

import msgspec
from loguru import logger

from hub.core import close_codes, error_codes
from hub.core.config import HubConfig
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.messages import Accepted, Cancel, Error, Register, Rejected, Submit
from hub.core.metrics import Metrics
from hub.jobs.links import Link
from hub.jobs.node_registry import NodeRegistry, RegisteredNode
from hub.jobs.service import JobService
from hub.runtime.eager import eager_task

MAX_SUBMITS_IN_FLIGHT: Final = 256
"""Submits of one client session being handled at once."""


class RefusalCount:
    """A session's refused messages, against `max_protocol_errors`.

    The limit is on consecutive refusals: a long-lived node's occasional race
    (a late message about a job that moved on) never adds up."""

    __slots__ = ("_count", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0

    def refused(self) -> bool:
        """Count one refusal; True when the session must now be closed."""
        self._count += 1
        return self._count >= self._limit

    def accepted(self) -> None:
        self._count = 0


class NodeWatchdog:
    """Closes node sessions that sent nothing for `node_timeout_ms`.

    A peer that does not answer the closing handshake (frozen, partitioned) is
    dropped after a short grace instead of waiting for the close timeout, so
    its jobs fail over after about `node_timeout_ms`."""

    def __init__(self, config: HubConfig) -> None:
        self._config = config
        self._last_seen: dict[str, float] = {}
        self._links: dict[str, Link] = {}
        self._closing: set[asyncio.Task[None]] = set()

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
                    task = asyncio.create_task(self._close_silent(link))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    async def _close_silent(self, link: Link) -> None:
        grace_s = min(self._config.heartbeat_interval_ms, 1000) / 1000
        try:
            await asyncio.wait_for(link.close(close_codes.NODE_TIMEOUT, "node_timeout"), grace_s)
        except TimeoutError:
            link.abort()

    async def wait_closed(self) -> None:
        """Wait for the closes under way (shutting down)."""
        for closing in list(self._closing):
            try:
                await closing
            except Exception:
                logger.debug("closing a silent node failed")


class Sessions:
    """Opens node and client sessions with what they share (and knows whether the
    hub is stopping)."""

    def __init__(
        self, *, config: HubConfig, service: JobService, metrics: Metrics, waits: bool
    ) -> None:
        self.config = config
        self.service = service
        self.metrics = metrics
        self.waits = waits
        """Whether the store waits on I/O (then submits run concurrently)."""
        self.watchdog = NodeWatchdog(config)
        self.stopping = False
        """The hub is stopping or draining: submits are refused `hub_shutdown`."""
        self.draining = False
        """Stopping by draining first (running jobs finish)."""
        self._ids = itertools.count(1)

    def peer_id(self, endpoint: str) -> str:
        """A hub-unique id for a new connection (`n<k>` for nodes, `c<k>` for clients)."""
        return f"{endpoint[0]}{next(self._ids)}"

    def node(self, link: Link) -> NodeSession:
        return NodeSession(link, self)

    def client(self, link: Link) -> ClientSession:
        return ClientSession(link, self)


class NodeSession:
    """One node agent's connection: register first, then its messages to the registry."""

    def __init__(self, link: Link, sessions: Sessions) -> None:
        self.link = link
        self.closed = False
        """True once the session closed itself: stop feeding it."""
        self._peer_id = link.peer_id
        self._registry: NodeRegistry = sessions.service.nodes
        self._metrics = sessions.metrics
        self._watchdog = sessions.watchdog
        self._refusals = RefusalCount(sessions.config.max_protocol_errors)
        self._node: RegisteredNode | None = None
        self._log = logger.bind(peer=link.peer_id)
        self._watchdog.watch(link)

    @property
    def node_id(self) -> str | None:
        return None if self._node is None else self._node.node_id

    async def received(self, message: Any) -> None:
        """A decoded message from the node."""
        self._watchdog.seen(self._peer_id)
        try:
            if self._node is None:
                if not isinstance(message, Register):
                    raise ProtocolError(error_codes.NOT_REGISTERED, "send `register` first")
                await self._register(message)
            else:
                await self._registry.handle(self._node, message)
            self._refusals.accepted()
        except ProtocolError as exc:
            if exc.code == error_codes.NODE_ID_CONFLICT:
                await self._send_error(exc)
                await self.link.close(close_codes.REGISTER_REFUSED, error_codes.NODE_ID_CONFLICT)
                self.closed = True
                return
            if exc.code == error_codes.HUB_SHUTDOWN:  # draining: go to another hub
                await self._send_error(exc)
                await self.link.close(close_codes.GOING_AWAY, error_codes.HUB_SHUTDOWN)
                self.closed = True
                return
            await self.refuse(exc, job_id=getattr(message, "job_id", None))
        except Exception:
            self._log.exception("internal error on a node message")
            await self.link.send(
                Error(code=error_codes.INTERNAL_ERROR, message="the hub failed")
            )

    async def undecodable(self, exc: ProtocolError) -> None:
        """A frame that did not decode."""
        self._watchdog.seen(self._peer_id)
        await self.refuse(exc)

    async def refuse(self, exc: ProtocolError, *, job_id: str | None = None) -> None:
        """Answer a refused message with `error`; close with 1008 past the limit."""
        await self._send_error(exc, job_id=job_id)
        if self._refusals.refused():
            await self.link.close(close_codes.POLICY_VIOLATION, "too many protocol errors")
            self.closed = True

    async def _send_error(self, exc: ProtocolError, *, job_id: str | None = None) -> None:
        self._metrics.protocol_errors.inc("node", exc.code)
        await self.link.send(
            Error(code=exc.code, message=exc.message, path=exc.path, job_id=job_id)
        )

    async def _register(self, message: Register) -> None:
        node = await self._registry.register(self.link, message, int(time.time() * 1000))
        self._node = node
        self._log = self._log.bind(node_id=node.node_id)
        self._log.info("node registered (pool {})", node.caps.pool)
        await self.link.send(self._registry.registered_reply(node))

    async def ended(self, close_code: int | None) -> None:
        """The connection is gone: unregister the node (its attempts fail over)."""
        self._watchdog.forget(self.link)
        if self._node is not None:
            self._log.info("node session ended (close code {})", close_code)
            await self._registry.unregister(self._node)


class ClientLink:
    """A client's `Link` as the job path sees it: it counts the submits still owed an
    answer (`accepted` or `rejected` with their request id), so that a submit whose
    handling fails before it was answered still gets one (`ClientSession`)."""

    __slots__ = ("_link", "owed", "peer_id")

    def __init__(self, link: Link) -> None:
        self._link = link
        self.peer_id = link.peer_id
        self.owed: dict[str, int] = {}

    def _answered(self, message: msgspec.Struct) -> None:
        if type(message) is Accepted or type(message) is Rejected:
            request_id = message.request_id
            left = self.owed.get(request_id, 0) - 1
            if left > 0:
                self.owed[request_id] = left
            elif left == 0:
                del self.owed[request_id]

    def queue(self, message: msgspec.Struct) -> None:
        if self.owed:
            self._answered(message)
        self._link.queue(message)

    async def send(self, message: msgspec.Struct) -> None:
        if self.owed:
            self._answered(message)
        await self._link.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self._link.close(code, reason)

    def abort(self) -> None:
        self._link.abort()


class ClientSession:
    """One client's connection: submits (concurrent when the store waits) and cancels."""

    def __init__(self, link: Link, sessions: Sessions) -> None:
        self.link = ClientLink(link)
        self.closed = False
        """True once the session closed itself: stop feeding it."""
        self._sessions = sessions
        self._service = sessions.service
        self._metrics = sessions.metrics
        self._refusals = RefusalCount(sessions.config.max_protocol_errors)
        self._submits: set[asyncio.Task[None]] = set()
        self._service.client_connected(self.link)

    async def received(self, message: Any) -> None:
        """A decoded message from the client; returns once the next may be read."""
        try:
            if isinstance(message, Submit):
                await self._submit(message)
            elif isinstance(message, Cancel):
                await self._service.cancel(self.link, message)
            self._refusals.accepted()
        except ProtocolError as exc:
            await self.refuse(exc, job_id=getattr(message, "job_id", None))
        except Exception:
            logger.exception("internal error on a client message")
            await self.link.send(
                Error(code=error_codes.INTERNAL_ERROR, message="the hub failed")
            )

    async def undecodable(self, exc: ProtocolError) -> None:
        await self.refuse(exc)

    async def refuse(self, exc: ProtocolError, *, job_id: str | None = None) -> None:
        """Answer a refused message with `error`; close with 1008 past the limit."""
        self._metrics.protocol_errors.inc("client", exc.code)
        await self.link.send(
            Error(code=exc.code, message=exc.message, path=exc.path, job_id=job_id)
        )
        if self._refusals.refused():
            await self.link.close(close_codes.POLICY_VIOLATION, "too many protocol errors")
            self.closed = True

    async def _submit(self, message: Submit) -> None:
        if self._sessions.stopping:
            await self.link.send(Rejected(
                request_id=message.request_id, code=error_codes.HUB_SHUTDOWN,
                message="the hub is shutting down",
            ))
            return
        if not self._sessions.waits:
            # Nothing to overlap: a task would only add a loop turn.
            await self._run_submit(message)
            return
        # Eager: the binding is written in this step, not a loop turn later.
        task = eager_task(self._run_submit(message))
        self._submits.add(task)
        task.add_done_callback(self._submits.discard)
        if len(self._submits) >= MAX_SUBMITS_IN_FLIGHT:
            await asyncio.wait(self._submits, return_when=asyncio.FIRST_COMPLETED)

    async def _run_submit(self, message: Submit) -> None:
        """Hand a submit to the job path; if that fails before the submit was answered,
        answer it (`rejected` with its request id), else report the `error` with it."""
        link = self.link
        request_id = message.request_id
        owed = link.owed
        owed[request_id] = owed.get(request_id, 0) + 1
        try:
            await self._service.submit(link, message)
        except Exception as exc:
            code, text = error_codes.INTERNAL_ERROR, "the hub failed"
            if isinstance(exc, ProtocolError):
                self._metrics.protocol_errors.inc("client", exc.code)
                code, text = exc.code, exc.message
            elif isinstance(exc, StoreUnavailable):
                code, text = error_codes.STORE_UNAVAILABLE, str(exc)
            else:
                logger.exception("internal error on a submit")
            if link.owed.get(request_id, 0) > 0:
                await link.send(Rejected(request_id=request_id, code=code, message=text))
            else:
                await link.send(Error(code=code, message=text, request_id=request_id))
        finally:
            left = link.owed.get(request_id, 0) - 1
            if left > 0:
                link.owed[request_id] = left
            else:
                link.owed.pop(request_id, None)

    async def ended(self, close_code: int | None) -> None:
        """The connection is gone: let submits in flight finish (a half-made job must not
        be left behind); the client's jobs go on."""
        if self._submits:
            await asyncio.wait(self._submits)
        self._service.client_disconnected(self.link)
