"""An ordinary peer disconnect leaves no traceback: `hub demo` printed uvloop's
`unable to perform operation on <TCPTransport closed=True>` from `WsLink._write` when a
peer went away between a frame and the end-of-turn flush. Run on uvloop, as `hub serve`
and `hub demo` do."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.core.messages import Error
from tests.conftest import FAST
from tests.support.hubtest import connect_client, wait_until


async def _disconnect_between_frame_and_flush() -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    hub = Hub(HubConfig(**{**FAST, "hub_id": "disc"}))
    await hub.start()
    try:
        client = await connect_client(hub.url)
        await wait_until(lambda: len(hub.service.home.clients) == 1, what="the client session")
        (link,) = hub.service.home.clients.values()
        # The connection is gone (uvloop closed its handle) but websockets has not been
        # told yet: the window an ordinary disconnect opens for frames sent meanwhile.
        link.ws.transport.abort()
        for i in range(3):  # the first is written at once, the rest at the end of the turn
            link.queue(Error(code="test", message=f"frame {i}"))
        for _ in range(5):
            await asyncio.sleep(0)
        await wait_until(lambda: not hub.service.home.clients, what="the session to end")
        await client.aclose()
    finally:
        await hub.aclose()
    return errors


def test_no_traceback_when_a_peer_goes_before_the_flush() -> None:
    errors = uvloop.run(_disconnect_between_frame_and_flush())
    assert errors == []
