"""What the job path needs from a connected peer, whatever carries it.

The server implements these over WebSockets; the job path only ever calls
`send` and `close`, so it never imports websockets.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Link(Protocol):
    """One connected peer (a node agent or a client).

    No method ever waits on the peer: what the peer has not read yet stays
    queued for it, so a loop that serves many peers (a node's results, the
    deadlines, another hub's deliveries) is never held up by one of them. A
    peer that stays too far behind is closed by the link itself (4006
    `slow_consumer`, see `hub.net.slow_peers`).
    """

    @property
    def peer_id(self) -> str:
        """A hub-unique id of this connection."""

    async def send(self, message: msgspec.Struct) -> None:
        """Encode and queue for sending, like `queue`: it never suspends on the peer
        (it is a coroutine for the callers' sake). A closed connection is not an error
        (the loss is handled where the connection's end is noticed)."""

    def queue(self, message: msgspec.Struct) -> None:
        """Encode and queue for sending, without waiting. Messages queued or sent on
        one link keep their order."""

    async def close(self, code: int, reason: str) -> None:
        """Start closing the connection with a WebSocket close code (after what is
        queued) and return without waiting for the peer; a peer that does not complete
        the closing handshake soon is dropped."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (a peer that does
        not answer one)."""
