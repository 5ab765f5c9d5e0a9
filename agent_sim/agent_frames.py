"""The agent's frames: encode, decode and send messages on its current connection.

`_AgentFrames` is a base class of `agent_sim.agent.NodeAgent`; it also aborts
a connection (fault injection and simulated crashes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hub.core.errors import ProtocolError
from hub.core.messages import MSGPACK_SUBPROTOCOL, Codec, NodeOutbound

if TYPE_CHECKING:
    from loguru import Logger


class _AgentFrames:
    """Frame I/O for `NodeAgent`; the attributes are set by `NodeAgent.__init__`."""

    node_id: str
    _ws: ClientConnection | None
    _codecs: dict[bool, Codec[NodeOutbound]]
    _log: Logger

    def _abort(self, ws: ClientConnection) -> None:
        # Forget the connection first so that nothing more is written to the
        # aborted transport (asyncio logs a warning for repeated writes).
        if ws is self._ws:
            self._ws = None
        ws.transport.abort()

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
