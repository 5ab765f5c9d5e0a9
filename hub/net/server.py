"""`WsServer`: the hub's one port, over the websockets asyncio server.

It accepts connections, routes `/v1/node` and `/v1/client` to a session of
the session layer (hub/net/sessions.py) and every other path to the HTTP
endpoints (hub/net/http.py), decodes each frame with its endpoint's codec
and feeds the session. With `wslink.py` (the `Link` over a connection), the
only module importing websockets. An oversized frame is closed with 1009 by
websockets itself (`max_frame_bytes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from hub.core import close_codes, error_codes
from hub.core.config import HubConfig
from hub.core.errors import ProtocolError
from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Codec,
    client_codec,
    node_codec,
)
from hub.net.http import HttpApi
from hub.net.sessions import ClientSession, NodeSession, Sessions
from hub.net.wslink import WsLink
from hub.runtime.loop_turn import LoopTurn

# Codecs are stateless: one per endpoint and encoding, shared by every session
# (building msgspec decoders per connection cost ~13 us and ~0.4 KB per session).
_NODE_CODECS = {binary: node_codec(binary=binary) for binary in (False, True)}
_CLIENT_CODECS = {binary: client_codec(binary=binary) for binary in (False, True)}
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


class WsServer:
    def __init__(self, *, config: HubConfig, sessions: Sessions, http: HttpApi) -> None:
        self.config = config
        self.sessions = sessions
        self.http = http
        self._turn = LoopTurn()
        self._server: Server | None = None

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
            max_size=self.config.max_frame_bytes,
            ping_interval=None,  # liveness is the protocol's heartbeat (node_timeout_ms)
            compression=None,
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
        binary = ws.subprotocol == MSGPACK_SUBPROTOCOL
        session: NodeSession | ClientSession
        if path.startswith("/v1/node"):
            codec: Codec[Any] = _NODE_CODECS[binary]
            link = WsLink(ws, codec, self.sessions.peer_id("node"), self._turn)
            session = self.sessions.node(link)
        elif path.startswith("/v1/client"):
            codec = _CLIENT_CODECS[binary]
            link = WsLink(ws, codec, self.sessions.peer_id("client"), self._turn)
            session = self.sessions.client(link)
        else:
            await ws.close(close_codes.POLICY_VIOLATION, "unknown endpoint")
            return
        decode = _decoder(codec)
        try:
            async for frame in ws:
                try:
                    message = decode(frame)
                except ProtocolError as exc:
                    await session.undecodable(exc)
                else:
                    await session.received(message)
                if session.closed:
                    break
        except ConnectionClosed:
            pass
        finally:
            await session.ended(ws.close_code)

    # --- HTTP ---------------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path in ENDPOINTS:
            return None
        answer = await self.http.respond(path, query)
        response = ws.respond(answer.status, "")
        response.body = answer.body
        # websockets' Headers is a multi-dict: replace, don't append.
        for name, value in (
            ("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
            *answer.headers.items(),
        ):
            if name in response.headers:
                del response.headers[name]
            response.headers[name] = value
        return response
