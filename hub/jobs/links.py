"""What the job path needs from a connected peer, whatever carries it.

The server implements these over WebSockets; the job path only ever calls
`send` and `close`, so it never imports websockets. `LinkCloser` closes
links without waiting on their peers.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import msgspec
from loguru import logger


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

    def queue(self, message: msgspec.Struct, *, flush: bool = False) -> None:
        """Encode and queue for sending, without waiting. Messages queued or sent on
        one link keep their order. Queued messages are written together at the end of
        the event-loop turn; `flush` writes this one (and what was queued before it) at
        once, for a message whose delay idles the peer (a job for a node's free slot)."""

    async def close(self, code: int, reason: str) -> None:
        """Start closing the connection with a WebSocket close code (after what is
        queued) and return without waiting for the peer; a peer that does not complete
        the closing handshake soon is dropped."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (a peer that does
        not answer one)."""


class LinkCloser:
    """Closes links in the background (a replaced node, an expired token; the
    node watchdog's silent nodes): the closing handshake gets `grace_s`, then the
    connection is dropped. Whoever closes a peer never waits on that peer, which is
    often the dead half of a connection that has already been replaced."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._closing: set[asyncio.Task[None]] = set()

    def close(self, link: Link, code: int, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._close(link, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, link: Link, code: int, reason: str) -> None:
        try:
            await link.close(code, reason)  # starts the closing handshake; never waits
        except Exception:
            logger.opt(exception=True).debug("closing {} ({}) failed", link.peer_id, code)
        # Dropped unless the peer completed the handshake by then (a no-op if it did).
        asyncio.get_running_loop().call_later(self.grace_s, link.abort)

    async def wait_closed(self) -> None:
        """Wait for the closes under way (shutting down)."""
        while self._closing:
            await asyncio.wait(list(self._closing))
