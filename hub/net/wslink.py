"""`WsLink`: the `Link` the job path sends through, over one websockets connection.

With `server.py`, the only module importing websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from hub.core.messages import Codec
from hub.runtime.loop_turn import LoopTurn

WRITE_BUFFER_LIMIT = 1 << 20
"""Bytes queued for one peer above which a send waits for the socket to drain."""


class WsLink:
    """A `Link` over one websockets connection, with its endpoint's codec.

    Writes are coalesced: `send` frames the message with websockets' sans-I/O
    protocol at once (so order is kept) and schedules one flush per event-loop
    turn, which hands every frame queued for this peer to the transport in a
    single `writelines`. Under load that turns many write syscalls into one.
    The first frame of a turn, hub-wide, is written at once instead: a lone
    message (a quiet hub) does not wait for the rest of the turn, and a busy
    turn pays one extra write, not one per peer.
    A send only waits when the peer is slow to read (more than
    `WRITE_BUFFER_LIMIT` queued), which is the backpressure websockets' own
    `send` would apply.
    """

    __slots__ = ("_binary", "_encode", "_flush_pending", "_turn", "codec", "peer_id", "ws")

    def __init__(
        self, ws: ServerConnection, codec: Codec[Any], peer_id: str, turn: LoopTurn
    ) -> None:
        self.ws = ws
        self._turn = turn
        self.codec = codec
        self.peer_id = peer_id
        self._binary = codec.binary
        self._encode = codec.encode
        self._flush_pending = False

    def queue(self, message: msgspec.Struct) -> None:
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return  # a closing connection is cleaned up by the session's own loop
        data = self._encode(message)
        if self._binary:
            ws.protocol.send_binary(data)
        else:
            ws.protocol.send_text(data)
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
            if self._turn.first():  # one per hub: the hub's first frame of the turn
                self._write()

    async def send(self, message: msgspec.Struct) -> None:
        self.queue(message)
        ws = self.ws
        if ws.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self._flush()
            with contextlib.suppress(ConnectionClosed):
                async with ws.send_context():
                    pass  # waits for the transport to drain, or for the close

    def _flush(self) -> None:
        self._flush_pending = False
        self._write()

    def _write(self) -> None:
        ws = self.ws
        chunks = ws.protocol.data_to_send()
        if not chunks:
            return
        transport = ws.transport
        if all(chunks):
            transport.writelines(chunks)
            return
        for chunk in chunks:  # an EOF marker (b"") is among them: half-close after the data
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    def abort(self) -> None:
        self.ws.transport.abort()
