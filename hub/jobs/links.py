"""What the job path needs from a connected peer, whatever carries it.

The server implements these over WebSockets; the job path only ever calls
`send` and `close`, so it never imports websockets.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Link(Protocol):
    """One connected peer (a node agent or a client)."""

    @property
    def peer_id(self) -> str:
        """A hub-unique id of this connection."""

    async def send(self, message: msgspec.Struct) -> None:
        """Encode and send; a closed connection is not an error (the loss is handled
        where the connection's end is noticed). Waits only when the peer is slow."""

    def queue(self, message: msgspec.Struct) -> None:
        """Encode and queue for sending, without waiting. Messages queued or sent on
        one link keep their order."""

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (a peer that does
        not answer one)."""
