"""`WsLink`: the `Link` the job path sends through, over one websockets connection.

With `server.py`, the only module importing websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from hub.core import close_codes
from hub.core.messages import Codec
from hub.net.slow_peers import SlowPeers
from hub.runtime.loop_turn import LoopTurn

CLOSE_GRACE_S: Final = 2.0
"""How long a peer has to complete a closing handshake the hub started before its
connection is dropped."""
WRITE_HIGH_WATER: Final = 1 << 15
"""A transport's high-water mark (websockets' default `write_limit`), or
`max_outbound_bytes` if lower: past it frames wait in the link's backlog."""
DRAIN_CHUNK_BYTES: Final = 1 << 16
"""Bytes moved from a link's backlog to its transport per write, once it drains."""

_FIN_TEXT: Final = 0x81
_FIN_BINARY: Final = 0x82
_short_header = struct.Struct("!BB").pack
_medium_header = struct.Struct("!BBH").pack
_long_header = struct.Struct("!BBQ").pack


def frame_header(first_byte: int, length: int) -> bytes:
    """The header of a server's (unmasked) frame of `length` payload bytes (RFC 6455
    5.2): FIN and the opcode in `first_byte`, then the length in 7, 16 or 64 bits."""
    if length < 126:
        return _short_header(first_byte, length)
    if length < 65536:
        return _medium_header(first_byte, 126, length)
    return _long_header(first_byte, 127, length)


class WsLink:
    """A `Link` over one websockets connection, with its endpoint's codec.

    Nothing here ever waits on the peer. Writes are coalesced: `queue` frames
    the message at once into websockets' sans-I/O protocol's outgoing data (so
    order is kept with the frames websockets writes itself, pongs and closes;
    the header is built here: an unmasked, unfragmented, uncompressed server
    frame is two packed bytes and a length, which websockets' general `Frame`
    serializer costs several times over)
    and schedules one flush per event-loop turn, which hands every frame queued
    for this peer to the transport in a single `writelines`. Under load that
    turns many write syscalls into one. The first frame of a turn, hub-wide,
    is written at once instead: a lone message (a quiet hub) does not wait for
    the rest of the turn, and a busy turn pays one extra write, not one per peer.
    `queue(..., flush=True)` writes at once whatever the turn has framed for this
    peer: a job for a node's free slot does not wait for the rest of a busy turn
    (the slot would idle that long; a write costs less than an idle GPU).

    A peer that reads slower than it is sent to: once its transport is past its
    high-water mark (websockets' `write_limit`), further frames wait in this
    link's own backlog (whole frames, in order), and a drain task, which exists
    only while there is a backlog, moves them to the transport as it empties.
    The peer's queue is the backlog plus the transport's buffer; over
    `max_outbound_bytes` the link reports itself to the hub's `SlowPeers`,
    which closes it with 4006 if it stays over for `slow_peer_timeout_ms`
    (`close_slow`: the backlog is dropped, and the transport with what it still
    holds if the peer does not complete the close within `CLOSE_GRACE_S`).
    """

    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_close_queued",
        "_drainer",
        "_encode",
        "_first_byte",
        "_flush_pending",
        "_slow",
        "_turn",
        "codec",
        "endpoint",
        "on_close",
        "peer_id",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        codec: Codec[Any],
        peer_id: str,
        turn: LoopTurn,
        slow: SlowPeers,
        endpoint: str = "",
    ) -> None:
        self.ws = ws
        self._turn = turn
        self._slow = slow
        self.codec = codec
        self.peer_id = peer_id
        self.endpoint = endpoint
        """`node` or `client` (a metrics label)."""
        self.on_close: Callable[[], None] | None = None
        """Called when the hub starts closing (or drops) this connection."""
        self._first_byte = _FIN_BINARY if codec.binary else _FIN_TEXT
        self._encode = codec.encode
        self._flush_pending = False
        self._backlog: deque[bytes] | None = None
        """Frames waiting for the transport to drain (None: none wait)."""
        self._backlog_bytes = 0
        self._drainer: asyncio.Task[None] | None = None
        self._close_queued = False
        """The hub's own close frame is in the backlog (deliver it, in order)."""

    # --- sending ---------------------------------------------------------------------

    def queue(self, message: msgspec.Struct, *, flush: bool = False) -> None:
        ws = self.ws
        protocol = ws.protocol
        if protocol.state is not State.OPEN:
            return  # a closing connection is cleaned up by the session's own loop
        data = self._encode(message)
        writes = protocol.writes
        writes.append(frame_header(self._first_byte, len(data)))
        writes.append(data)  # never empty (an encoded message), so never read as EOF
        if self._backlog is not None:  # behind the backlog, in order
            self._hold(protocol.data_to_send())
            return
        if flush:  # now, with what this turn queued before it (a pending flush finds none)
            self._write()
            return
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
            if self._turn.first():  # one per hub: the hub's first frame of the turn
                self._write()

    async def send(self, message: msgspec.Struct) -> None:
        self.queue(message)

    def queued_bytes(self) -> int:
        """Bytes sent to this peer that the kernel has not taken yet (0 once the
        transport is closing: what it still holds is being dropped or flushed)."""
        transport = self.ws.transport
        if transport.is_closing():
            return 0
        return transport.get_write_buffer_size() + self._backlog_bytes

    def _flush(self) -> None:
        self._flush_pending = False
        self._write()

    def _write(self) -> None:
        ws = self.ws
        chunks = ws.protocol.data_to_send()
        if not chunks:
            return
        if ws.transport.is_closing():
            # The peer went away between the frame and this flush (an ordinary
            # disconnect): nothing can be delivered, and uvloop would raise.
            return
        if self._backlog is not None or ws.paused:
            self._hold(chunks)
            return
        if all(chunks):
            ws.transport.writelines(chunks)
        else:
            _put(ws, chunks)
        if ws.paused:  # past the transport's high-water mark: how far behind is it?
            queued = self.queued_bytes()
            if queued > self._slow.limit:
                self._over(queued)

    def _hold(self, chunks: Iterable[bytes]) -> None:
        backlog = self._backlog
        if backlog is None:
            backlog = self._backlog = deque()
            self._drainer = asyncio.get_running_loop().create_task(self._drain(backlog))
        for chunk in chunks:
            backlog.append(chunk)
            self._backlog_bytes += len(chunk)
        queued = self.queued_bytes()
        if queued > self._slow.limit:
            self._over(queued)

    def _over(self, queued: int) -> None:
        if self.ws.protocol.state is not State.OPEN:
            return  # being closed already
        if queued >= self._slow.hard_limit:
            self._slow.too_much(self)
        else:
            self._slow.over(self, queued)

    async def _drain(self, backlog: deque[bytes]) -> None:
        """Move the backlog to the transport as the transport drains; ends with it."""
        ws = self.ws
        try:
            while backlog and self._backlog is backlog:
                await ws.drain()  # until the transport is under its low-water mark
                if self._backlog is not backlog or ws.connection_lost_waiter.done():
                    return
                if ws.protocol.state is not State.OPEN and not self._close_queued:
                    return  # websockets closed the connection itself: no frame may follow
                chunks: list[bytes] = []
                size = 0
                while backlog and size < DRAIN_CHUNK_BYTES:
                    chunk = backlog.popleft()
                    chunks.append(chunk)
                    size += len(chunk)
                self._backlog_bytes -= size
                _put(ws, chunks)
        except Exception:  # the connection broke under us: nothing left to deliver
            return
        finally:
            if self._backlog is backlog:  # all written, or nothing can be any more
                self._backlog = None
                self._backlog_bytes = 0
                self._close_queued = False

    def _drop(self) -> None:
        """Forget every frame not handed to the transport yet (the backlog, and what
        this turn framed and has not flushed)."""
        self._backlog = None
        self._backlog_bytes = 0
        self._close_queued = False
        self.ws.protocol.data_to_send()

    # --- closing -----------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        self.start_close(code, reason)

    def start_close(self, code: int, reason: str, *, drop: bool = False) -> None:
        """Send a close frame after what is queued (`drop`: instead of it) and return;
        the connection is dropped if the peer has not completed the closing handshake
        within `CLOSE_GRACE_S`."""
        ws = self.ws
        if ws.protocol.state is not State.OPEN or ws.transport.is_closing():
            return
        if drop:
            self._drop()
        ws.protocol.send_close(code, reason)
        if self._backlog is not None or ws.paused:
            self._close_queued = True
        self._write()
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort_if_open)
        if self.on_close is not None:
            self.on_close()

    def close_slow(self) -> None:
        """Drop what is queued and close with 4006 `slow_consumer`."""
        self.start_close(close_codes.SLOW_CONSUMER, "slow_consumer", drop=True)

    def _abort_if_open(self) -> None:
        if not self.ws.connection_lost_waiter.done():
            self.abort()

    def abort(self) -> None:
        if self._backlog is not None:
            self._drop()
        self.ws.transport.abort()
        if self.on_close is not None:
            self.on_close()


def _put(ws: ServerConnection, chunks: list[bytes]) -> None:
    """Hand whole frames to the transport (an EOF marker, b"", half-closes after them)."""
    transport = ws.transport
    if all(chunks):
        transport.writelines(chunks)
        return
    for chunk in chunks:
        if chunk:
            transport.write(chunk)
        elif transport.can_write_eof():
            with contextlib.suppress(Exception):  # uvloop may raise on a closing transport
                transport.write_eof()
        else:
            transport.close()
