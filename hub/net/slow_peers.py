"""`SlowPeers`: the one hub-wide watcher of peers that do not read what is sent to them.

Sending never waits on a peer (`WsLink`): what a peer has not read stays
queued for it. A link whose queue goes over `max_outbound_bytes` reports
itself here (`over`); this watcher looks at those links only, every tick, and
closes with 4006 `slow_consumer` the ones still over the limit
`slow_peer_timeout_ms` after they first went over (their queue is dropped).
A link that goes back under the limit is forgotten until it goes over again.
No timer per send, no task per peer: one loop, asleep while no peer is over.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Protocol

from loguru import logger

from hub.core.config import HubConfig
from hub.core.held_bytes import HeldBytes
from hub.core.metrics import Metrics

SLOW_PEER_HARD_FACTOR: Final = 64
"""A queue that reaches this many times `max_outbound_bytes` (256 MiB by default) is
closed at once: the timeout bounds how long a peer may lag, this bounds the memory it
may hold meanwhile (a node flooding progress at a client that stopped reading). Far
above any honest burst: one event-loop turn's results for one client."""
MAX_TICK_S: Final = 0.25


class Watched(Protocol):
    """A link as the watcher sees it (`WsLink`)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def endpoint(self) -> str: ...

    def queued_bytes(self) -> int:
        """Bytes sent to the peer and not yet handed to the kernel (0 once closed)."""

    def close_slow(self) -> None:
        """Drop the queue and close with 4006 `slow_consumer`."""


class SlowPeers:
    def __init__(
        self, config: HubConfig, metrics: Metrics, held: HeldBytes | None = None
    ) -> None:
        self.limit = config.max_outbound_bytes
        self.hard_limit = SLOW_PEER_HARD_FACTOR * config.max_outbound_bytes
        self._timeout_s = config.slow_peer_timeout_ms / 1000
        self._tick_s = max(0.005, min(self._timeout_s / 4, MAX_TICK_S))
        self._metrics = metrics
        self._over: dict[Watched, float] = {}
        """Links over the limit, with when they were first seen over it (monotonic)."""
        self._held = held
        """The hub's one budget (`max_held_payload_bytes`): what links over the limit
        hold counts in it, and a link holding more than its share of what is left is
        closed at once."""
        self._sizes: dict[Watched, int] = {}
        """What each link over the limit held when it last said so."""
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._over)

    def over(self, link: Watched, queued: int = 0) -> None:
        """`link`'s queue is over `limit`, at `queued` bytes (called by the link; cheap
        when known)."""
        if link not in self._over:
            self._over[link] = time.monotonic()
            self._wake.set()
        held = self._held
        if held is None:
            return
        held.outbound += queued - self._sizes.get(link, 0)
        self._sizes[link] = queued
        if held.total > held.limit and queued > held.limit // len(self._over):
            # Past the hub's budget: the peers that stopped reading share what is
            # left, and one holding more than its share goes first.
            self.too_much(link, "over its share of max_held_payload_bytes")

    def too_much(self, link: Watched, why: str = "queue at the hard limit") -> None:
        """`link`'s queue reached `hard_limit` (or its share of the hub's budget):
        closed now."""
        self._forget(link)
        self._close(link, why)

    def _forget(self, link: Watched) -> None:
        self._over.pop(link, None)
        size = self._sizes.pop(link, None)
        if size is not None and self._held is not None:
            self._held.outbound -= size

    async def run(self) -> None:
        """Check the links over the limit every tick; runs until cancelled."""
        while True:
            if not self._over:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self._tick_s)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Forget the links back under the limit; close those over it for too long."""
        for link, since in list(self._over.items()):
            if link.queued_bytes() <= self.limit:
                self._forget(link)
            elif now - since >= self._timeout_s:
                self._forget(link)
                self._close(link, f"over {self.limit} bytes for {now - since:.1f}s")

    def _close(self, link: Watched, why: str) -> None:
        queued = link.queued_bytes()
        logger.bind(peer=link.peer_id).warning(
            "slow consumer: {} bytes queued, {}: closing with 4006", queued, why
        )
        self._metrics.slow_consumers.inc(link.endpoint)
        link.close_slow()
