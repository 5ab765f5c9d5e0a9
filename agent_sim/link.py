"""What a `NodeAgent` needs from its connection to a hub, whatever carries it.

`HubLink` is one connection to one hub: the agent's parts send and receive
the hub's messages through it, close or drop it, and read how it ended.
`Connector` opens one. `agent_sim.wslink` implements both over websockets;
the rest of the SDK never imports websockets, so its job handling and
connection loop can be driven by in-memory links in the tests.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec

from hub.core.messages import NodeOutbound

__all__ = ["Connector", "HubLink", "LinkClosed", "LinkRefused"]


class LinkClosed(Exception):
    """The connection is closed: nothing more arrives on it."""


class LinkRefused(Exception):
    """The hub refused the connection at the handshake (an HTTP status, no subprotocol
    in common); the transport's own error is the argument and the `__cause__`."""


class HubLink(Protocol):
    """One connection to a hub, carrying the node's messages in the codec the hub chose."""

    @property
    def close_code(self) -> int | None:
        """The code the hub closed the connection with: None while it is open, 1006
        when it ended without a close frame."""

    def encode(self, message: msgspec.Struct) -> str | bytes:
        """`message` as this link would send it; raises what the codec raises for a
        value it cannot carry (`TypeError`, `ValueError`, `msgspec.EncodeError`)."""

    async def send(self, message: msgspec.Struct) -> bool:
        """Encode and send `message`; False when the connection is closed (not an
        error: whoever reads the link sees the end). Suspends only while the
        transport's buffer is full."""

    async def recv(self) -> NodeOutbound:
        """The hub's next message. Raises `LinkClosed` once the connection is closed
        and `hub.core.errors.ProtocolError` for a frame that does not decode (the link
        stays usable)."""

    async def close(self, reason: str = "") -> None:
        """Close with 1000 and wait (a bounded time) for the hub's close frame."""

    def abort(self) -> None:
        """Drop the connection at once, without a close frame (simulated crashes)."""

    async def answers(self, timeout_s: float) -> bool:
        """Whether the hub answers a ping within `timeout_s` (False too once closed): a
        hub that froze keeps its TCP connection up and answers nothing."""


class Connector(Protocol):
    """Opens the agent's connections to its hubs."""

    def open(self, url: str, token: str | None) -> AbstractAsyncContextManager[HubLink]:
        """A connection to the node endpoint `url`, presenting `token` as a bearer
        token, closed when the context exits (with 1011 when it exits by an exception).
        Entering raises `OSError` or `TimeoutError` when the hub cannot be reached and
        `LinkRefused` when it refuses the handshake."""
