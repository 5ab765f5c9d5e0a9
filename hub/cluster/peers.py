"""`Peers`: the other hubs as the job path sees them.

Whether a hub is alive (or excluded: its beats stopped), sending it an
envelope (batched per loop turn), publishing this hub's node changes, and
whether the store between the hubs is healthy. The job path holds this, not
the `Cluster` that runs the loops keeping it current: the cluster drives the
job path (it hands it envelopes and dead hubs), so the job path must not
hold the cluster, or the two could only be wired with a setter.

| part | owns |
|---|---|
| `Membership` (membership.py) | which hubs are alive; when one is dead |
| `FleetReplica` (fleet_replica.py) | this hub's nodes published, other hubs' applied |
| `Outbox` (outbox.py) | envelopes to other hubs, one store call per loop turn |
"""

from __future__ import annotations

import time

from hub.cluster.fleet_replica import FleetReplica
from hub.cluster.membership import Membership
from hub.cluster.outbox import Outbox
from hub.core.config import HubConfig
from hub.core.envelopes import Envelope
from hub.core.fleet_view import FleetView
from hub.store.base import Store


class Peers:
    def __init__(self, *, config: HubConfig, store: Store, fleet: FleetView) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.store = store
        self.members = Membership(config.hub_id)
        self.outbox = Outbox(store, on_failure=self.store_failed)
        self.replica = FleetReplica(config=config, store=store, fleet=fleet, members=self.members)
        self.beat_ok_s = time.monotonic()
        """When a liveness beat last reached the store."""
        self.beat_failed = False
        """The last liveness beat did not reach the store."""
        self._store_failed_s: float | None = None
        """When a store call (beat, inbox read, send) last failed."""
        self.beating = False
        """The liveness loop runs (it beat once): until then nothing is out of touch."""
        self.rejoined_s: float | None = None
        """When a beat last reached the store after a gap long enough for the other
        hubs to exclude this one (it was frozen, or cut off from the store)."""

    def __repr__(self) -> str:
        return f"Peers(hub={self.hub_id!r}, {self.members!r})"

    def send(self, hub_id: str, envelope: Envelope) -> None:
        """Queue an envelope for another hub; sent with the others of this loop turn."""
        self.outbox.send(hub_id, envelope)

    def is_live(self, hub_id: str) -> bool:
        return self.members.is_live(hub_id)

    def is_excluded(self, hub_id: str) -> bool:
        """Whether `hub_id` stopped answering (its nodes are not selected)."""
        return self.members.is_excluded(hub_id)

    def heard_from(self, hub_id: str) -> None:
        self.members.heard_from(hub_id)

    async def refresh_live(self) -> None:
        """Read the live hubs now instead of waiting for the next presence tick."""
        self.members.seen(await self.store.live_hubs())

    def node_changed(self, node_id: str) -> None:
        """A local node joined, changed capabilities or status: publish it promptly."""
        self.replica.node_changed(node_id)

    def set_waiting(self, waiting: bool) -> None:
        """Jobs wait for a slot here, or no longer: tell the other hubs."""
        self.replica.set_waiting(waiting)

    def is_draining(self, hub_id: str) -> bool:
        """Whether `hub_id` (this hub too) drains: its nodes will move to another hub."""
        if hub_id == self.hub_id:
            return self.replica.draining
        return hub_id in self.replica.draining_hubs

    def set_draining(self) -> None:
        """This hub drains: say so in everything it publishes from now on."""
        self.replica.draining = True

    def handoff_targets(self) -> list[str]:
        """Hubs that can take over this hub's unfinished work as it stops: alive,
        answering, not draining themselves (sorted)."""
        return sorted(
            hub_id for hub_id in self.members.live
            if hub_id != self.hub_id and not self.members.is_excluded(hub_id)
            and hub_id not in self.replica.draining_hubs
        )

    def boot_of(self, hub_id: str) -> str:
        """The boot token `hub_id` beats with now ("" when unknown)."""
        return self.members.boots.get(hub_id, "")

    # --- the store's health ------------------------------------------------------------

    def store_failed(self) -> None:
        """A store call failed (the store is unreachable, hangs, or restarts)."""
        self._store_failed_s = time.monotonic()

    def store_troubled(self, within_s: float) -> bool:
        """Whether the store is failing, or failed within `within_s`: messages from other
        hubs may be late or lost (and are being replayed), so silence proves nothing."""
        failed = self._store_failed_s
        return not self.store_ok or (failed is not None and time.monotonic() - failed < within_s)

    def out_of_touch(self, within_s: float = 0.0) -> bool:
        """Whether this hub has not reached the store for longer than `hub_timeout_ms`
        (the other hubs excluded it, maybe declared it dead), or had not until `within_s`
        ago: what it held meanwhile (its nodes' sessions, its timers, the results in its
        sockets) may be stale, or be known to others as lost."""
        if not self.beating:
            return False
        now = time.monotonic()
        if now - self.beat_ok_s > self.config.hub_timeout_ms / 1000:
            return True
        return self.rejoined_s is not None and now - self.rejoined_s < within_s

    @property
    def store_ok(self) -> bool:
        """Whether the store answers: the last beat reached it, within `hub_timeout_ms`
        (a store that hangs counts as unreachable as soon as one that refuses)."""
        recent = time.monotonic() - self.beat_ok_s <= self.config.hub_timeout_ms / 1000
        return recent and not self.beat_failed
