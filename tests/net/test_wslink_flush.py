"""`WsLink` writes: what waits for the end of the event-loop turn and what goes at once.

The peer is websockets' synchronous client, whose own thread reads the socket:
while the test holds the hub's event loop (no await between the frames and the
reads), only what the link handed to the kernel can arrive. A frame queued for
the turn's end cannot, since the turn cannot end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.sync.client import ClientConnection, connect

from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.core.messages import Error
from tests.conftest import FAST
from tests.support.hubtest import TIMEOUT_S, wait_until

HELD_S = 0.2
"""How long a frame that must not arrive is waited for (the loop is held: it cannot)."""


def _message(peer: ClientConnection, timeout: float) -> Any:
    return json.loads(peer.recv(timeout=timeout))["message"]


async def test_a_flushed_frame_is_written_at_once_with_what_was_queued_before_it() -> None:
    hub = Hub(HubConfig(**{**FAST, "hub_id": "flush"}))
    await hub.start()
    stack = contextlib.ExitStack()
    try:
        url = hub.url + "/v1/client"
        peer = await asyncio.to_thread(  # the handshake needs the hub's loop running
            lambda: stack.enter_context(connect(url, compression=None))
        )
        await wait_until(lambda: len(hub.service.home.clients) == 1, what="the client session")
        (link,) = hub.service.home.clients.values()

        # One step, the loop held throughout. Queued frames wait for the turn's end
        # (all but the turn's first, hub-wide, which goes at once)...
        link.queue(Error(code="test", message="a"))
        link.queue(Error(code="test", message="b"))
        arrived = []
        with contextlib.suppress(TimeoutError):
            while True:
                arrived.append(_message(peer, HELD_S))
        assert arrived in ([], ["a"])
        # ...until a flushed frame takes them along, in order.
        link.queue(Error(code="test", message="c"), flush=True)
        while len(arrived) < 3:
            arrived.append(_message(peer, TIMEOUT_S))
        assert arrived == ["a", "b", "c"]
    finally:
        await asyncio.to_thread(stack.close)  # the closing handshake needs the loop too
        await hub.aclose()
