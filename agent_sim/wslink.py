"""The agent's `HubLink` and `Connector` over websockets.

With `agent_sim.client`, the only SDK modules importing websockets.
`WsConnector` holds how the agent connects (subprotocol, timeouts, pings,
TLS) and opens a `WsHubLink` per connection, with the codec of the
subprotocol the hub selected.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from agent_sim.link import LinkClosed, LinkRefused
from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Codec,
    NodeOutbound,
    agent_codec,
)

__all__ = ["WsConnector", "WsHubLink"]


class WsHubLink:
    """A `HubLink` over one websockets client connection."""

    __slots__ = ("_codec", "_ws")

    def __init__(self, ws: ClientConnection, codec: Codec[NodeOutbound]) -> None:
        self._ws = ws
        self._codec = codec

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    def encode(self, message: msgspec.Struct) -> str | bytes:
        return self._codec.encode_frame(message)

    async def send(self, message: msgspec.Struct) -> bool:
        try:
            await self._ws.send(self._codec.encode_frame(message))
        except ConnectionClosed:
            return False
        return True

    async def recv(self) -> NodeOutbound:
        try:
            frame = await self._ws.recv()
        except ConnectionClosed:
            raise LinkClosed from None
        return self._codec.decode(frame)

    async def close(self, reason: str = "") -> None:
        await self._ws.close(reason=reason)

    def abort(self) -> None:
        self._ws.transport.abort()

    async def answers(self, timeout_s: float) -> bool:
        try:
            pong = await self._ws.ping()
            async with asyncio.timeout(timeout_s):
                await pong
        except (ConnectionClosed, TimeoutError):
            return False
        return True


class WsConnector:
    """Opens `WsHubLink`s with one agent's connection settings; `wss://` URLs use
    `ssl_context` (the system's default trust when None)."""

    __slots__ = (
        "_close_timeout_s",
        "_codecs",
        "_open_timeout_s",
        "_ping_interval_s",
        "_ssl",
        "binary",
    )

    def __init__(
        self,
        *,
        binary: bool,
        open_timeout_s: float,
        close_timeout_s: float,
        ping_interval_s: float | None,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.binary = binary
        """Ask for MessagePack (the hub may still answer in JSON)."""
        self._open_timeout_s = open_timeout_s
        self._close_timeout_s = close_timeout_s
        self._ping_interval_s = ping_interval_s
        self._ssl = ssl_context
        # Built once per agent, not per connection: a fleet reconnects often.
        self._codecs: dict[bool, Codec[NodeOutbound]] = {
            False: agent_codec(binary=False),
            True: agent_codec(binary=True),
        }

    @asynccontextmanager
    async def open(self, url: str, token: str | None) -> AsyncIterator[WsHubLink]:
        protocol = MSGPACK_SUBPROTOCOL if self.binary else JSON_SUBPROTOCOL
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(
                url,
                subprotocols=[Subprotocol(protocol)],
                additional_headers=headers,
                open_timeout=self._open_timeout_s,
                close_timeout=self._close_timeout_s,
                ping_interval=self._ping_interval_s,
                compression=None,
                proxy=None,
                ssl=self._ssl if url.startswith("wss://") else None,
            )
        except InvalidHandshake as exc:
            raise LinkRefused(exc) from exc
        async with ws:
            # A hub that selected no subprotocol speaks JSON (docs/protocol.md, "Transport").
            yield WsHubLink(ws, self._codecs[ws.subprotocol == MSGPACK_SUBPROTOCOL])
