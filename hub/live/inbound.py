"""`LiveInbound`: the cluster's `LocalHub` once live sessions are on top of the job path.

Envelopes about live sessions and rooms (`SessionTaken`, `RoomDeliver`) go to
`LiveSessions`; every
other envelope and every cluster event goes to the job path's router, as
without live sessions.
"""

from __future__ import annotations

from hub.core.envelopes import Envelope, RoomDeliver, SessionTaken
from hub.jobs.inbound import InboundRouter
from hub.live.registry import LiveSessions


class LiveInbound:
    def __init__(self, *, router: InboundRouter, live: LiveSessions) -> None:
        self._router = router
        self._live = live

    async def handle_envelope(self, envelope: Envelope, *, reaped_from: str | None) -> None:
        if isinstance(envelope, SessionTaken):
            if reaped_from is None:  # meant for a dead hub: its sessions are gone with it
                self._live.taken(envelope)
            return
        if isinstance(envelope, RoomDeliver):
            if reaped_from is None:  # a dead hub's listeners are gone with it
                self._live.rooms.deliver(envelope.tenant, envelope.result, envelope.cut_ms)
            return
        await self._router.handle_envelope(envelope, reaped_from=reaped_from)

    async def hub_lost(self, hub_id: str) -> None:
        await self._router.hub_lost(hub_id)

    async def renew_leases(self) -> None:
        await self._router.renew_leases()

    async def hub_restarted(self, hub_id: str) -> None:
        await self._router.hub_restarted(hub_id)

    async def hub_revived(self, hub_id: str) -> None:
        await self._router.hub_revived(hub_id)

    async def peers_at_start(self, hub_ids: list[str]) -> None:
        await self._router.peers_at_start(hub_ids)

    async def housekeeping(self) -> None:
        await self._router.housekeeping()

    async def store_restarted(self) -> None:
        await self._router.store_restarted()
