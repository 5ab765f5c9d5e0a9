"""`WsServer`: the hub's one port, over the websockets asyncio server.

It accepts connections, routes `/v1/node` and `/v1/client` to a session of
the session layer (hub/net/sessions.py) and every other path to the HTTP
endpoints (hub/net/http.py), decodes each frame with its endpoint's codec
and feeds the session. With `wslink.py` (the `Link` over a connection), the
only module importing websockets. An oversized frame is closed with 1009 by
websockets itself (`max_frame_bytes`).

Every request passes the `Gate` (hub/net/auth.py) in `process_request`,
during the handshake: a refused one is answered with its 401 or 403 and no
session is made; an admitted WebSocket's `Principal` is handed to its
session. With `tls_cert_file` and `tls_key_file` the port speaks TLS only.

A session ends when its connection does, whatever ended it and whatever the
session's loop is doing: the connection's loss, and the hub starting to close
it, both end the session at once (`end_soon`), so a node is unregistered
even if its loop is stuck on something else. Past `max_connections` open
WebSocket sessions a handshake is answered with HTTP 503; the HTTP endpoints
are not counted and keep answering.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from http import HTTPStatus
from time import perf_counter, thread_time
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from hub.core import close_codes, error_codes
from hub.core.config import HubConfig
from hub.core.errors import ProtocolError
from hub.core.fair_time import HEAVY_FRAME_BYTES, TURN_SLICE_S, FairTime
from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Codec,
    client_codec,
    node_codec,
)
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, Principal
from hub.net.auth import Gate, Refusal
from hub.net.http import JSON, HttpApi, HttpResponse
from hub.net.sessions import ClientSession, NodeSession, Sessions
from hub.net.slow_peers import SlowPeers
from hub.net.tls import server_context
from hub.net.wslink import CLOSE_GRACE_S, WRITE_HIGH_WATER, WsLink
from hub.runtime.loop_turn import LoopTurn

ENDPOINTS = ("/v1/node", "/v1/client")


def _decoder(codec: Codec[Any]) -> Callable[[str | bytes], Any]:
    """The session's frame decoder; a text frame on a MessagePack session is `bad_message`
    (msgspec's MessagePack decoder raises TypeError on `str`)."""
    if not codec.binary:
        return codec.decode

    def decode(frame: str | bytes) -> Any:
        if isinstance(frame, str):
            raise ProtocolError(
                error_codes.BAD_MESSAGE, "a MessagePack session takes binary frames"
            )
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


class _Connection(ServerConnection):
    """websockets' connection, leaving no reference cycle behind once lost: it is freed
    by reference counting when its handler returns, not by a full collection (which the
    GC pacer, hub/runtime/gc_pacer.py, may put off for minutes)."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        protocol = self.protocol
        # websockets binds the `select_subprotocol` callback to the protocol as a
        # closure over this connection (connection -> protocol -> closure ->
        # connection); the handshake is long over.
        vars(protocol).pop("select_subprotocol", None)
        # The parser keeps the exception that ended it (EOFError when the peer went
        # away without a close frame, a handshake cut short): its traceback holds the
        # parser's frame, which holds the protocol. The exceptions stay (websockets
        # chains them), their tracebacks go: nothing logs them after this.
        _drop_tracebacks(protocol.parser_exc)
        _drop_tracebacks(protocol.handshake_exc)
        # The parser is a generator whose frame holds the protocol (protocol -> parser ->
        # frame -> protocol): once closed it has no frame. Nothing steps it any more:
        # the protocol has seen EOF (`receive_eof` returns at once, `receive_data`
        # raises before stepping it).
        protocol.parser.close()


def _drop_tracebacks(exc: BaseException | None) -> None:
    """Clear the traceback of `exc` and of every exception it chains to."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += (exc.__cause__, exc.__context__)


class WsServer:
    def __init__(
        self,
        *,
        config: HubConfig,
        sessions: Sessions,
        http: HttpApi,
        slow_peers: SlowPeers,
        metrics: Metrics,
        gate: Gate | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.http = http
        self.slow_peers = slow_peers
        self.metrics = metrics
        self._turn = LoopTurn()
        self._fair = FairTime()
        """Who began the last frames, and what an expensive frame costs its sender."""
        self._server: Server | None = None
        # Codecs are stateless: one per endpoint and encoding, shared by every session
        # (building msgspec decoders per connection cost ~13 us and ~0.4 KB per session).
        self._node_codecs = {
            binary: node_codec(
                binary=binary, max_capability_entries=config.max_capability_entries
            )
            for binary in (False, True)
        }
        self._client_codecs = {binary: client_codec(binary=binary) for binary in (False, True)}
        self.open_sessions = 0
        """WebSocket connections past `process_request` and not yet lost."""
        self.gate = gate if gate is not None else Gate.from_config(config)
        self._ssl = server_context(config)  # ConfigError now, not at start
        self._principals: weakref.WeakKeyDictionary[ServerConnection, Principal] = (
            weakref.WeakKeyDictionary()
        )
        """Who each admitted WebSocket handshake speaks for, until its session starts
        (weak: a handshake that fails after admission leaves nothing behind)."""

    @property
    def port(self) -> int:
        """The port served (the one bound, when the configuration said 0)."""
        if self._server is None:
            return self.config.port
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            create_connection=_Connection,
            max_size=self.config.max_frame_bytes,
            ping_interval=None,  # liveness is the protocol's heartbeat (node_timeout_ms)
            compression=None,
            ssl=self._ssl,
            # A peer gets this long to complete a closing handshake websockets starts
            # (shutting down), like the ones the hub starts itself (`WsLink.start_close`).
            close_timeout=CLOSE_GRACE_S,
            # The transport's high-water mark: past it frames wait in the link's backlog.
            write_limit=min(WRITE_HIGH_WATER, self.config.max_outbound_bytes),
        )

    def stop_accepting(self) -> None:
        # Not `self._server.close(close_connections=False)`: websockets' close is
        # idempotent, so `close` below would then do nothing, no session would get 1001,
        # and `wait_closed` would wait forever.
        if self._server is not None:
            self._server.server.close()

    async def close(self) -> None:
        """Close every session with 1001 and wait until the server is closed."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    # --- WebSocket sessions -----------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        # The handshake's headers (about 3.6 KB, request and response) are not read again
        # once admitted; a connection that idles for hours need not hold them. (The
        # request itself stays: websockets takes a connection without one for one whose
        # handshake has not come yet.)
        if ws.request is not None:
            ws.request.headers.clear()
        ws.response = None
        binary = ws.subprotocol == MSGPACK_SUBPROTOCOL
        principal = self._principals.pop(ws, ANONYMOUS)
        session: NodeSession | ClientSession
        if path.startswith("/v1/node"):
            codec: Codec[Any] = self._node_codecs[binary]
            link = WsLink(ws, codec, self.sessions.peer_id("node"), self._turn,
                          self.slow_peers, "node")
            session = self.sessions.node(link, principal)
        elif path.startswith("/v1/client"):
            codec = self._client_codecs[binary]
            link = WsLink(ws, codec, self.sessions.peer_id("client"), self._turn,
                          self.slow_peers, "client")
            session = self.sessions.client(link, principal)
        else:
            await ws.close(close_codes.POLICY_VIOLATION, "unknown endpoint")
            return
        # The session ends when the connection is lost or the hub starts closing it,
        # even while its loop below waits on something else (no ghost session).
        link.on_close = session.end_soon
        ws.connection_lost_waiter.add_done_callback(lambda _: session.end_soon())
        decode = _decoder(codec)
        fair = self._fair
        party = principal.party(link)
        paused = self.metrics.peer_pauses
        worked_s = 0.0
        first: object = party
        try:
            async for frame in ws:
                if session.closed:
                    break
                started = perf_counter()
                if wait_s := fair.wait_s(link, started, party=first):
                    # Its last expensive frame (on this connection or another of its
                    # token) is not paid for yet.
                    paused.inc(link.endpoint, amount=wait_s)
                    await asyncio.sleep(wait_s)
                    if session.closed:
                        break
                    started = perf_counter()
                    worked_s = 0.0
                first = None
                mark = fair.begin(party, started)
                heavy = len(frame) >= HEAVY_FRAME_BYTES
                cpu = thread_time() if heavy else 0.0
                try:
                    message = decode(frame)
                except ProtocolError as exc:
                    decoded = perf_counter()
                    await session.undecodable(exc)
                else:
                    decoded = perf_counter()
                    await session.received(message, len(frame))
                if session.closed:
                    break
                # A peer whose frames keep coming is handled frame after frame without
                # the loop turning (`recv` returns a queued frame at once): after each
                # slice of hub time, or after an expensive frame (FairTime), the others
                # go first. Its unread frames wait in the connection's queue, then in
                # the socket (TCP backpressure): a flood costs the flooder latency.
                ended = perf_counter()
                if heavy:
                    fair.end(
                        link, party, mark, cpu_s=thread_time() - cpu,
                        decode_s=decoded - started, started_s=started, now_s=ended,
                    )
                worked_s += ended - started
                if worked_s >= TURN_SLICE_S:
                    worked_s = 0.0
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            fair.forget(link)
            try:
                await session.ended(ws.close_code)
            finally:
                # The link calls back into its session (session -> link -> bound
                # method -> session): without the cycle an ended session, its
                # registration and capabilities are freed by reference counting at
                # once, not by a full collection (which the GC pacer may put off).
                link.on_close = None

    # --- HTTP ---------------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        try:
            principal = self.gate.admit(path, query, request.headers, method=request.method)
        except Refusal as refusal:
            self.metrics.auth_refusals.inc(str(int(refusal.status)))
            return self._respond(ws, HttpResponse(refusal.status, refusal.body, JSON))
        if path in ENDPOINTS and request.method == "GET":
            if self.open_sessions >= self.config.max_connections:
                self.metrics.refused_connections.inc()
                return self._respond(ws, HttpResponse.json(HTTPStatus.SERVICE_UNAVAILABLE, {
                    "error": error_codes.OVERLOADED,
                    "message": f"{self.open_sessions} WebSocket sessions are open "
                               f"(max_connections); try again later",
                }))
            self.open_sessions += 1
            ws.connection_lost_waiter.add_done_callback(self._session_lost)
            self._principals[ws] = principal
            return None
        return self._respond(
            ws, await self.http.respond(path, query, principal, request.method)
        )

    def _session_lost(self, _: object) -> None:
        self.open_sessions -= 1

    @staticmethod
    def _respond(ws: ServerConnection, answer: HttpResponse) -> Response:
        response = ws.respond(answer.status, "")
        response.body = answer.body
        headers: list[tuple[str, str]] = [
            ("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
        ]
        if answer.status is HTTPStatus.NO_CONTENT:  # RFC 9110: neither header on a 204
            headers = []
            for name in ("Content-Type", "Content-Length"):
                if name in response.headers:
                    del response.headers[name]
        # websockets' Headers is a multi-dict: replace, don't append.
        for name, value in (*headers, *answer.headers.items()):
            if name in response.headers:
                del response.headers[name]
            response.headers[name] = value
        return response
