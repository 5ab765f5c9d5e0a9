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
import contextlib
import weakref
from collections.abc import Sequence
from http import HTTPStatus
from time import perf_counter, thread_time
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State
from websockets.typing import BytesLike, Subprotocol
from websockets.utils import apply_mask

with contextlib.suppress(ImportError):  # websockets' C unmasking, as its parser uses
    from websockets.speedups import apply_mask

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

INBOX_HIGH = 16
"""Whole messages a connection may have waiting for its session before the hub stops
reading its socket (websockets' own `max_queue` default); reading resumes at
`INBOX_LOW`. Past it the peer's frames wait in the socket: TCP backpressure."""
INBOX_LOW = 4


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
    """websockets' connection, with a cheaper way in for messages, leaving no reference
    cycle behind once lost.

    Messages go to `inbox` (a list of (text?, payload) the session's loop pops), not
    through websockets' `Assembler` and `recv`: a job takes three messages in, and
    the assembler's locks, futures and per-message decode to `str` cost about as
    much as the parsing itself. The payload stays bytes: both codecs decode bytes
    (msgspec's JSON decoder checks the UTF-8 websockets would have).

    Once the connection is open, the frames themselves are read here too
    (`_read_frames`) as long as they are the ordinary kind: whole, masked,
    no reserved bits, text or binary within `max_size`, or a ping or pong.
    websockets' parser is a generator stepping through each header field,
    several times this one's cost per frame. The first frame of any other kind (a
    close, a fragment, anything malformed or too big) and everything after it go
    to websockets' parser for good, which then answers exactly as it would have
    (closes with 1002 or 1009, the closing handshake); so does everything once the
    hub starts closing. Reading starts here only if websockets' parser waits at a
    frame boundary with nothing buffered.

    Once lost it is freed by reference counting when its handler returns, not by a
    full collection (which the GC pacer, hub/runtime/gc_pacer.py, may put off for
    minutes)."""

    inbox: list[tuple[bool, BytesLike]] | None = None
    """Messages not read by the session yet (None until the first arrives). A list, not
    a deque: it holds a few messages at most (reading pauses past `INBOX_HIGH`), and an
    idle connection's empty list is a tenth of an empty deque's size."""
    _more: asyncio.Future[None] | None = None
    """Set while the session's loop waits for a message."""
    _fragments: list[BytesLike] | None = None
    _fragments_text = False
    _reading_paused = False
    _reads: bool | None = None
    """Whether frames are read here (None: not decided yet, until the first data
    after the handshake)."""
    _buffer: bytearray | None = None
    """Bytes of a frame not complete yet (when frames are read here)."""
    _needed = 0
    """Bytes `_buffer` must hold before a frame can be complete."""

    def data_received(self, data: bytes) -> None:
        reads = self._reads
        if reads is None:
            protocol = self.protocol
            if protocol.state is not State.OPEN:
                super().data_received(data)  # the handshake
                return
            reads = self._reads = (
                not protocol.reader.buffer
                and protocol.current_size is None
                and _waits_at_frame_boundary(protocol.parser)
            )
        if reads and self.protocol.state is State.OPEN:
            self._read_frames(data)
        elif reads:
            # The hub started closing: the closing handshake, and whatever the peer
            # sends meanwhile, are websockets'.
            self._reads = False
            unread = bytes(self._buffer or b"") + data
            self._buffer = None
            super().data_received(unread)
        else:
            super().data_received(data)

    def _read_frames(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._needed:
                return  # the frame's payload is still coming
            view = memoryview(buffer)
        else:
            view = memoryview(data)
        self._needed = 0
        size = len(view)
        max_size = self.protocol.max_message_size
        inbox = self._inbox()
        queued = len(inbox)
        pos = 0
        while size - pos >= 2:
            first, second = view[pos], view[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(view[head:head + 2])
                head += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(view[head:head + 8])
                head += 8
            opcode = first & 0x0F
            if (
                first & 0xF0 != 0x80  # FIN, no reserved bits
                or not second & 0x80  # a client's frames are masked
                or opcode not in (1, 2, 9, 10)  # text, binary, ping, pong
                or (max_size is not None and length > max_size)
                or (opcode > 2 and length > 125)
            ):
                self._reads = False  # websockets' from this frame on
                self._buffer = None
                unread = bytes(view[pos:])
                view.release()
                self._deliver(inbox, queued)
                super().data_received(unread)
                return
            end = head + 4 + length
            if end > size:
                self._needed = end - pos
                break
            payload = apply_mask(view[head + 4:end], bytes(view[head:head + 4]))
            if opcode <= 2:
                inbox.append((opcode == 1, payload))
            elif opcode == 9:  # ping: pong, as websockets would
                self.protocol.send_pong(payload)
                self.send_data()
            # A pong needs nothing: the hub sends no pings.
            pos = end
        if buffer:  # what was parsed goes; the rest stays
            view.release()
            del buffer[:pos]
        else:
            self._buffer = bytearray(view[pos:]) if pos < size else None
            view.release()
        self._deliver(inbox, queued)

    def _inbox(self) -> list[tuple[bool, BytesLike]]:
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = []
        return inbox

    def _deliver(self, inbox: list[tuple[bool, BytesLike]], queued: int) -> None:
        """Wake the session's loop for the messages appended past `queued`."""
        if len(inbox) == queued:
            return
        more = self._more
        if more is not None:
            self._more = None
            more.set_result(None)
        if len(inbox) > INBOX_HIGH and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def process_event(self, event: Event) -> None:
        if self.request is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake's request
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not event.fin:  # the protocol guarantees its continuations follow
                self._fragments = [event.data]
                self._fragments_text = opcode is Opcode.TEXT
                return
            message = (opcode is Opcode.TEXT, event.data)
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(event.data)
            if not event.fin:
                return
            message = (self._fragments_text, b"".join(self._fragments))
            self._fragments = None
        else:
            super().process_event(event)  # ping, pong, close: websockets'
            return
        inbox = self._inbox()
        inbox.append(message)
        self._deliver(inbox, len(inbox) - 1)

    def next_message(self) -> tuple[bool, BytesLike] | None:
        """The next message waiting, if any."""
        inbox = self.inbox
        if not inbox:
            return None
        message = inbox.pop(0)
        if self._reading_paused and len(inbox) <= INBOX_LOW:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        return message

    async def more(self) -> bool:
        """Wait for a message; False once the connection is lost and none is left."""
        if self.inbox:
            return True
        if self.connection_lost_waiter.done():
            return False
        more = self._more = self.loop.create_future()
        await more
        return bool(self.inbox) or not self.connection_lost_waiter.done()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        more = self._more
        if more is not None:
            self._more = None
            more.set_result(None)
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


def _waits_at_frame_boundary(parser: object) -> bool:
    """Whether websockets' parser (a generator delegating to generators) is suspended
    waiting for the first byte of a frame (its innermost step is the reader's
    `at_eof`, asked before each frame), not in the middle of one."""
    innermost = parser
    while (inner := getattr(innermost, "gi_yieldfrom", None)) is not None:
        innermost = inner
    return innermost is not parser and getattr(innermost, "__name__", "") == "at_eof"


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
        decode = codec.decode
        binary_session = codec.binary
        fair = self._fair
        party = principal.party(link)
        paused = self.metrics.peer_pauses
        worked_s = 0.0
        first: object = party
        assert isinstance(ws, _Connection)
        more = ws.more
        next_message = ws.next_message
        try:
            while True:
                message_in = next_message()
                if message_in is None:
                    if not await more():
                        break
                    continue
                text, frame = message_in
                if session.closed:
                    break
                started = perf_counter()
                if fair.owed and (wait_s := fair.wait_s(link, started, party=first)):
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
                    if text and binary_session:
                        raise ProtocolError(
                            error_codes.BAD_MESSAGE, "a MessagePack session takes binary frames"
                        )
                    message = decode(frame)
                except ProtocolError as exc:
                    decoded = perf_counter() if heavy else 0.0
                    await session.undecodable(exc)
                else:
                    decoded = perf_counter() if heavy else 0.0
                    await session.received(message, len(frame))
                if session.closed:
                    break
                # A peer whose frames keep coming is handled frame after frame without
                # the loop turning (its inbox has the next one already): after each
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
