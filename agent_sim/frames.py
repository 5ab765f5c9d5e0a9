"""An agent's frames: encode, decode and send messages on its current connection.

`Frames` holds the JSON and MessagePack codecs and picks one per connection by
the subprotocol the hub selected. It owns the agent's current connection
(`current`, set and cleared by `agent_sim.connection.ConnectionLoop`): `send`
writes only to that one, so a job of a dropped connection never writes to
the next. It also aborts a connection without a close frame (fault injection
and simulated crashes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hub.core.errors import ProtocolError
from hub.core.messages import MSGPACK_SUBPROTOCOL, Codec, NodeOutbound, agent_codec

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["Frames"]


class Frames:
    """Frame I/O of one `NodeAgent` on its current connection."""

    __slots__ = ("_codecs", "_log", "_node_id", "current")

    def __init__(self, *, node_id: str, log: Logger) -> None:
        self._node_id = node_id
        self._log = log
        self.current: ClientConnection | None = None
        self._codecs: dict[bool, Codec[NodeOutbound]] = {
            False: agent_codec(binary=False),
            True: agent_codec(binary=True),
        }

    def abort(self, ws: ClientConnection) -> None:
        """Drop `ws`'s TCP connection without a close frame."""
        # Forget the connection first so that nothing more is written to the
        # aborted transport (asyncio logs a warning for repeated writes).
        if ws is self.current:
            self.current = None
        ws.transport.abort()

    def _codec(self, ws: ClientConnection) -> Codec[NodeOutbound]:
        # A hub that selected no subprotocol speaks JSON (docs/protocol.md, "Transport").
        return self._codecs[ws.subprotocol == MSGPACK_SUBPROTOCOL]

    def encode(self, ws: ClientConnection, message: msgspec.Struct) -> str | bytes:
        return self._codec(ws).encode_frame(message)

    def decode(self, ws: ClientConnection, frame: str | bytes) -> NodeOutbound | None:
        """The hub's message, or None (logged at DEBUG) for an undecodable frame."""
        try:
            return self._codec(ws).decode(frame)
        except ProtocolError as exc:
            self._log.debug("{} undecodable frame from hub: {!r}", self._node_id, exc)
            return None

    async def send(self, ws: ClientConnection, message: msgspec.Struct) -> bool:
        """Send one message on `ws`; False when that connection is gone."""
        if ws is not self.current:
            return False
        try:
            await ws.send(self.encode(ws, message))
        except ConnectionClosed:
            return False
        return True
