"""An agent's frames: send and receive the hub's messages on its current link.

`Frames` owns the agent's current `HubLink` (`current`, set and cleared by
`agent_sim.connection.ConnectionLoop`): `send` writes only to that one, so a
job of a dropped connection never writes to the next. `receive` skips (and
logs) frames that do not decode. It also aborts a link without a close frame
(fault injection and simulated crashes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from agent_sim.link import HubLink
from hub.core.errors import ProtocolError
from hub.core.messages import NodeOutbound

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["Frames"]


class Frames:
    """Frame I/O of one `NodeAgent` on its current link."""

    __slots__ = ("_log", "_node_id", "current")

    def __init__(self, *, node_id: str, log: Logger) -> None:
        self._node_id = node_id
        self._log = log
        self.current: HubLink | None = None

    def abort(self, link: HubLink) -> None:
        """Drop `link`'s connection without a close frame."""
        # Forget the link first so that nothing more is written to the aborted
        # transport (asyncio logs a warning for repeated writes).
        if link is self.current:
            self.current = None
        link.abort()

    async def receive(self, link: HubLink) -> NodeOutbound | None:
        """The hub's next message on `link`, or None (logged at DEBUG) for an undecodable
        frame; raises `LinkClosed` once the connection is closed."""
        try:
            return await link.recv()
        except ProtocolError as exc:
            self._log.debug("{} undecodable frame from hub: {!r}", self._node_id, exc)
            return None

    async def send(self, link: HubLink, message: msgspec.Struct) -> bool:
        """Send one message on `link`; False when that link is no longer the current
        one or its connection is gone."""
        if link is not self.current:
            return False
        return await link.send(message)
