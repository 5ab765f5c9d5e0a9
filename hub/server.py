"""The hub's I/O shell: one port serving `/v1/node`, `/v1/client` and the HTTP GETs.

`Hub` wires the parts together (store, directory, metrics, `JobService`)
and runs the websockets asyncio server plus its maintenance loop. With
`wslink.py` (the `Link` over a connection), the only module importing
websockets. Each WebSocket session decodes frames with its endpoint's codec,
hands messages to the service or the node registry, and turns every
`ProtocolError` into an `error` message; a session that keeps sending bad
frames is closed with 1008, an oversized frame with 1009 (by websockets,
from `max_frame_bytes`). Nothing one peer sends can stop the others being
served.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

import msgspec
from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from hub.cluster import Cluster
from hub.config import HubConfig
from hub.directory import NodeDirectory
from hub.eager import eager_task
from hub.errors import ProtocolError
from hub.inbound import InboundRouter
from hub.loop_turn import LoopTurn
from hub.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Cancel,
    Codec,
    Error,
    Register,
    Rejected,
    Submit,
    client_codec,
    node_codec,
)
from hub.metrics import Metrics
from hub.node_registry import NodeSession
from hub.service import JobService
from hub.snapshot import NodeState
from hub.store.base import Store
from hub.store.factory import make_store
from hub.wslink import WsLink

# Close codes beyond RFC 6455's (docs/protocol.md, "Close codes").
MAX_SUBMITS_IN_FLIGHT = 256
"""Submits of one client session being handled at once."""

CLOSE_NODE_TIMEOUT = 4000
CLOSE_REGISTER_REFUSED = 4001

_json = msgspec.json.Encoder()
# Codecs are stateless: one per endpoint and encoding, shared by every session
# (building msgspec decoders per connection cost ~13 us and ~0.4 KB per session).
_NODE_CODECS = {binary: node_codec(binary=binary) for binary in (False, True)}
_CLIENT_CODECS = {binary: client_codec(binary=binary) for binary in (False, True)}


def _decoder(codec: Codec[Any]) -> Any:
    """The session's frame decoder; a text frame on a MessagePack session is `bad_message`
    (msgspec's MessagePack decoder raises TypeError on `str`)."""
    if not codec.binary:
        return codec.decode

    def decode(frame: str | bytes) -> Any:
        if isinstance(frame, str):
            raise ProtocolError("bad_message", "a MessagePack session takes binary frames")
        return codec.decode(frame)

    return decode


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # A peer offering nothing gets JSON without a subprotocol (docs/protocol.md).
    if MSGPACK_SUBPROTOCOL in offered:
        return Subprotocol(MSGPACK_SUBPROTOCOL)
    if JSON_SUBPROTOCOL in offered:
        return Subprotocol(JSON_SUBPROTOCOL)
    return None


class Hub:
    """One hub: `async with Hub(config) as hub:` serves until the block ends."""

    def __init__(self, config: HubConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else make_store(config)
        self.metrics = Metrics()
        self.directory = NodeDirectory()
        self.cluster = Cluster(config=config, store=self.store, directory=self.directory)
        self.service = JobService(
            config=config, store=self.store, directory=self.directory, metrics=self.metrics,
            cluster=self.cluster,
        )
        self.cluster.handler = InboundRouter(service=self.service, cluster=self.cluster)
        self.cluster.renew_leases = self.service.nodes.renew_leases
        self.cluster.archive = self.service.archive
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._turn = LoopTurn()
        self._last_seen: dict[str, float] = {}
        self._node_links: dict[str, WsLink] = {}
        self._stopping = False
        self._register_gauges()

    def __repr__(self) -> str:
        return f"Hub({self.config.hub_id!r}, port={self.port}, {self.service!r})"

    @property
    def port(self) -> int:
        if self._server is None:
            return self.config.port
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    @property
    def url(self) -> str:
        """The base URL (`ws://host:port`); endpoints are `/v1/node` and `/v1/client`."""
        return f"ws://{self.config.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        await self.store.start()
        await self.cluster.start()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            max_size=self.config.max_frame_bytes,
            ping_interval=None,  # liveness is the protocol's heartbeat (node_timeout_ms)
            compression=None,
        )
        self._tasks.append(asyncio.create_task(self.service.run_deadlines(), name="deadlines"))
        self._tasks.append(asyncio.create_task(self.service.archive.run(), name="archiver"))
        self._tasks.append(asyncio.create_task(self._maintain(), name="maintenance"))
        logger.bind(hub_id=self.config.hub_id).info(
            "hub serving on {} ({} mode)", self.url, self.config.deployment_mode
        )

    async def aclose(self) -> None:
        """Stop accepting, fail unfinished jobs with `hub_shutdown`, close sessions with 1001."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            # Stop accepting. Not `self._server.close(close_connections=False)`: websockets'
            # close is idempotent, so the `close(close_connections=True)` below would then
            # do nothing, no session would get 1001, and `wait_closed` would wait forever.
            self._server.server.close()
        await self.service.shutdown()
        for closing in list(self._closing):
            with contextlib.suppress(Exception):
                await closing
        await self.cluster.aclose()
        await self.service.archive.flush()  # records the inbox's last read carried
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        await self.store.aclose()
        logger.bind(hub_id=self.config.hub_id).info("hub stopped")

    async def _maintain(self) -> None:
        """Close node sessions that went silent for `node_timeout_ms`."""
        interval_s = min(self.config.heartbeat_interval_ms, self.config.node_timeout_ms / 4) / 1000
        timeout_s = self.config.node_timeout_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for peer_id, seen in list(self._last_seen.items()):
                link = self._node_links.get(peer_id)
                if link is not None and now - seen > timeout_s:
                    self._last_seen.pop(peer_id, None)
                    logger.info("node session {} silent for {:.1f}s: closing", peer_id, now - seen)
                    task = asyncio.create_task(self._close_silent(link))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    async def _close_silent(self, link: WsLink) -> None:
        """Close a silent node's session. A peer that does not answer the closing
        handshake (frozen, partitioned) is dropped after a short grace instead of the
        websockets close timeout, so its jobs fail over after about node_timeout_ms."""
        grace_s = min(self.config.heartbeat_interval_ms, 1000) / 1000
        try:
            await asyncio.wait_for(link.close(CLOSE_NODE_TIMEOUT, "node_timeout"), grace_s)
        except TimeoutError:
            link.ws.transport.abort()

    # --- WebSocket sessions -----------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        binary = ws.subprotocol == MSGPACK_SUBPROTOCOL
        if path.startswith("/v1/node"):
            link = WsLink(ws, _NODE_CODECS[binary], f"n{next(self._ids)}", self._turn)
            await self._node_session(link)
        elif path.startswith("/v1/client"):
            await self._client_session(
                WsLink(ws, _CLIENT_CODECS[binary], f"c{next(self._ids)}", self._turn)
            )
        else:
            await ws.close(1008, "unknown endpoint")

    async def _refuse(
        self, link: WsLink, endpoint: str, exc: ProtocolError, errors: int,
        *, job_id: str | None = None,
    ) -> int:
        """Send `error` for a refused message; close with 1008 past the limit.

        Returns the session's new error count."""
        self.metrics.protocol_errors.inc(endpoint, exc.code)
        await link.send(Error(code=exc.code, message=exc.message, path=exc.path, job_id=job_id))
        errors += 1
        if errors >= self.config.max_protocol_errors:
            await link.close(1008, "too many protocol errors")
        return errors

    async def _node_session(self, link: WsLink) -> None:
        ws, decode = link.ws, _decoder(link.codec)
        registry = self.service.nodes
        session: NodeSession | None = None
        errors = 0
        self._node_links[link.peer_id] = link
        self._last_seen[link.peer_id] = time.monotonic()
        log = logger.bind(peer=link.peer_id)
        try:
            async for frame in ws:
                self._last_seen[link.peer_id] = time.monotonic()
                message: Any = None
                try:
                    message = decode(frame)
                    if session is None:
                        if not isinstance(message, Register):
                            raise ProtocolError("not_registered", "send `register` first")
                        session = await registry.register(link, message, int(time.time() * 1000))
                        log = log.bind(node_id=session.node_id)
                        log.info("node registered (pool {})", session.caps.pool)
                        await link.send(registry.registered_reply(session))
                    else:
                        await registry.handle(session, message)
                    # The limit is on consecutive refusals: a long-lived node's occasional
                    # race (a late message about a job that moved on) never adds up.
                    errors = 0
                except ProtocolError as exc:
                    if exc.code == "node_id_conflict":
                        await self._refuse(link, "node", exc, 0)
                        await link.close(CLOSE_REGISTER_REFUSED, "node_id_conflict")
                        break
                    errors = await self._refuse(
                        link, "node", exc, errors, job_id=getattr(message, "job_id", None)
                    )
                    if errors >= self.config.max_protocol_errors:
                        break
                except Exception:
                    log.exception("internal error on a node message")
                    await link.send(Error(code="internal_error", message="the hub failed"))
        except ConnectionClosed:
            pass
        finally:
            self._node_links.pop(link.peer_id, None)
            self._last_seen.pop(link.peer_id, None)
            if session is not None:
                log.info("node session ended (close code {})", ws.close_code)
                await registry.unregister(session)

    async def _client_session(self, link: WsLink) -> None:
        ws, decode = link.ws, _decoder(link.codec)
        service = self.service
        service.client_connected(link)
        errors = 0
        # Submits run concurrently when the store waits on I/O (a Redis bind must not
        # hold up the next frame); at most MAX_SUBMITS_IN_FLIGHT per session, after
        # which reading pauses.
        submits: set[asyncio.Task[None]] = set()
        try:
            async for frame in ws:
                message: Any = None
                try:
                    message = decode(frame)
                    if isinstance(message, Submit):
                        if self._stopping:
                            await link.send(Rejected(
                                request_id=message.request_id, code="hub_shutdown",
                                message="the hub is shutting down",
                            ))
                            continue
                        if not self.store.waits:
                            # Nothing to overlap: a task would only add a loop turn.
                            await self._submit(link, message)
                        else:
                            # Eager: the binding is written in this step, not a
                            # loop turn later.
                            task = eager_task(self._submit(link, message))
                            submits.add(task)
                            task.add_done_callback(submits.discard)
                            if len(submits) >= MAX_SUBMITS_IN_FLIGHT:
                                await asyncio.wait(
                                    submits, return_when=asyncio.FIRST_COMPLETED
                                )
                    elif isinstance(message, Cancel):
                        await service.cancel(link, message)
                    errors = 0  # the limit is on consecutive refusals
                except ProtocolError as exc:
                    errors = await self._refuse(
                        link, "client", exc, errors, job_id=getattr(message, "job_id", None)
                    )
                    if errors >= self.config.max_protocol_errors:
                        break
                except Exception:
                    logger.exception("internal error on a client message")
                    await link.send(Error(code="internal_error", message="the hub failed"))
        except ConnectionClosed:
            pass
        finally:
            if submits:  # let them finish: a half-made job must not be left behind
                await asyncio.wait(submits)
            service.client_disconnected(link)

    async def _submit(self, link: WsLink, message: Submit) -> None:
        try:
            await self.service.submit(link, message)
        except ProtocolError as exc:
            self.metrics.protocol_errors.inc("client", exc.code)
            await link.send(Error(code=exc.code, message=exc.message, path=exc.path))
        except Exception:
            logger.exception("internal error on a submit")
            await link.send(Error(code="internal_error", message="the hub failed"))

    # --- HTTP ---------------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in ("/v1/node", "/v1/client"):
            return None
        if path == "/healthz":
            status = HTTPStatus.SERVICE_UNAVAILABLE if self._stopping else HTTPStatus.OK
            return _respond(ws, status, {"status": "stopping" if self._stopping else "ok",
                                         "hub_id": self.config.hub_id})
        if path == "/metrics":
            response = ws.respond(HTTPStatus.OK, self.metrics.render())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        if path == "/v1/nodes":
            nodes = [self._node_view(state) for state in self.directory.snapshot]
            return _respond(ws, HTTPStatus.OK, nodes)
        if path.startswith("/v1/jobs/"):
            record = await self.service.job_record(path[len("/v1/jobs/"):])
            if record is None:
                return _respond(ws, HTTPStatus.NOT_FOUND, {"error": "unknown_job"})
            return _respond(ws, HTTPStatus.OK, msgspec.to_builtins(record))
        return _respond(ws, HTTPStatus.NOT_FOUND, {"error": "not_found", "path": path})

    def _node_view(self, state: NodeState) -> dict[str, Any]:
        session = self.service.nodes.sessions.get(state.node_id)
        return {
            "node_id": state.node_id,
            "hub_id": state.hub_id,
            "pool": state.caps.pool,
            "status": state.status,
            "running": state.running,
            "max_concurrency": state.caps.max_concurrency,
            "capabilities": msgspec.to_builtins(state.caps.to_wire()),
            "reported": session.load if session is not None else None,
            "version": session.version if session is not None else None,
        }

    def _register_gauges(self) -> None:
        def nodes_by_status() -> dict[tuple[str, ...], float]:
            counts: dict[tuple[str, ...], float] = {
                ("online",): 0, ("draining",): 0, ("offline",): 0
            }
            for state in self.directory.snapshot:
                counts[(state.status,)] = counts.get((state.status,), 0) + 1
            return counts

        self.metrics.gauge(
            "nodehub_nodes", "Nodes this hub can select from, by status.", ("status",),
            nodes_by_status,
        )
        self.metrics.gauge(
            "nodehub_local_node_sessions", "Node sessions connected to this hub.", (),
            lambda: {(): len(self.service.nodes.sessions)},
        )
        self.metrics.gauge(
            "nodehub_client_sessions", "Client sessions connected to this hub.", (),
            lambda: {(): len(self.service.clients)},
        )
        self.metrics.gauge(
            "nodehub_active_jobs", "Jobs submitted here and not finished.", (),
            lambda: {(): len(self.service.jobs)},
        )
        self.metrics.gauge(
            "nodehub_busy_slots", "Assigned jobs on nodes this hub owns.", (),
            lambda: {(): sum(len(s.assignments) for s in self.service.nodes.sessions.values())},
        )


def _respond(ws: ServerConnection, status: HTTPStatus, body: Any) -> Response:
    response = ws.respond(status, "")
    response.body = _json.encode(body)
    # websockets' Headers is a multi-dict: replace, don't append.
    for name, value in (
        ("Content-Type", "application/json"), ("Content-Length", str(len(response.body)))
    ):
        del response.headers[name]
        response.headers[name] = value
    return response
