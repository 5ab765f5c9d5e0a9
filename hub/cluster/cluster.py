"""`Cluster`: what makes several hubs one system, over the store.

It runs the loops that keep `Peers` (peers.py: membership, outbox, fleet
replica, the store's health; what the job path holds) current, and the parts
that drive this hub's job path:

| part | owns |
|---|---|
| `Inbox` (inbox.py) | this hub's envelopes from other hubs, read and handled in order |
| `Reaper` (reaper.py) | a dead hub's inbox drained, then the hub forgotten |

and two loops of its own. The presence loop: every heartbeat interval this
hub announces itself, renews the leases of the nodes it owns, sends a beacon
(a subscription that stops hearing even its own beacons is rebuilt), and
checks the other hubs' presence. A hub found dead is *buried*: its nodes
leave this hub's fleet view and the job path fails over what depended on it
(`LocalHub.hub_lost`); then it is reaped. The liveness loop, six times per
`hub_timeout_ms`: this hub beats (`Store.beat`) and reads every hub's beats;
a hub silent for two thirds of `hub_timeout_ms` is *excluded* (its nodes leave
selection here, within `hub_timeout_ms` of its last beat, long before it is
declared dead), one beating again is included, and one beating with a new
boot token *restarted* under its id (`LocalHub.hub_restarted`). Whether those
beats reach the store is also this hub's view of the store's health
(`store_ok`, for `/readyz`).

The cluster knows the store and the core, never the job path: what it needs
of it is the `LocalHub` protocol, given at construction (the job path,
built before it, holds only `Peers`). In local mode the same
object runs against the memory store: there is never another hub, so nothing
is ever sent, and the loops idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from loguru import logger

from hub.cluster.inbox import EnvelopeHandler, Inbox
from hub.cluster.peers import Peers
from hub.cluster.reaper import Reaper
from hub.core.config import HubConfig
from hub.core.envelopes import FleetUpdate, encode
from hub.core.errors import StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.store.archive import JobArchive
from hub.store.base import Store


class LocalHub(EnvelopeHandler, Protocol):
    """What the cluster needs of this hub's job path."""

    async def hub_lost(self, hub_id: str) -> None:
        """A hub's presence lapsed: fail over what depended on it."""

    async def renew_leases(self) -> None:
        """Renew this hub's ownership of its nodes (every presence tick)."""

    async def hub_restarted(self, hub_id: str) -> None:
        """A hub was seen with a new boot token (or for the first time): reconcile what
        this hub holds of its jobs and nodes with its new run."""

    async def hub_revived(self, hub_id: str) -> None:
        """A hub this one declared dead is back under the same run (it was frozen or cut
        off): tell it what this hub stopped and what it holds of it."""

    async def peers_at_start(self, hub_ids: list[str]) -> None:
        """At start: the other hubs answering now (each will reconcile with this run)."""

    async def housekeeping(self) -> None:
        """Periodic (every liveness beat): work that waits on time."""

    async def store_restarted(self) -> None:
        """The store lost its data (a restart without persistence): put back what this
        hub's work needs there (request bindings, recent records, remote watches)."""


class Cluster:
    def __init__(
        self, *, config: HubConfig, store: Store, fleet: FleetView, archive: JobArchive,
        peers: Peers, local: LocalHub,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.store = store
        self.fleet = fleet
        self.peers = peers
        self.members = peers.members
        self.outbox = peers.outbox
        self.replica = peers.replica
        self._local = local
        self.inbox = Inbox(
            hub_id=config.hub_id, store=store, archive=archive, handler=local,
            on_failure=peers.store_failed,
        )
        self.reaper = Reaper(store=store, inbox=self.inbox)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._starting = True

    def __repr__(self) -> str:
        return f"Cluster(hub={self.hub_id!r}, {self.members!r})"

    @property
    def presence_ttl_ms(self) -> int:
        return self.config.node_timeout_ms

    # --- lifecycle ----------------------------------------------------------------

    @property
    def beat_interval_ms(self) -> int:
        return max(10, self.config.hub_timeout_ms // 6)

    @property
    def silence_ms(self) -> int:
        """Beats missed this long exclude a hub: its last beat, plus this, plus one
        reading interval stays within `hub_timeout_ms`."""
        return self.config.hub_timeout_ms - 2 * self.beat_interval_ms

    async def start(self) -> None:
        await self.store.announce(self.presence_ttl_ms)
        self.members.seen(await self.store.live_hubs())
        # A new run owns no node yet: entries an earlier run under this id published
        # are stale. Then the beats: every hub answering now reconciles with this run.
        await self.store.clear_nodes()
        beats = await self.store.beat()
        await self._local.peers_at_start(sorted(
            h for h, b in beats.items() if h != self.hub_id and b.age_ms <= self.silence_ms
        ))
        await self.beat()
        self._starting = False
        # What an earlier run read and never acknowledged (results, watches, dispatches).
        await self.inbox.recover()
        await self.resync()
        for name, loop in (
            ("inbox", self.inbox.run),
            ("outbox", self.outbox.run),
            ("fleet-publish", self.replica.publish_loop),
            ("fleet-subscribe", self.replica.subscribe_loop),
            ("presence", self._presence_loop),
            ("liveness", self._liveness_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"{self.hub_id}:{name}"))

    async def aclose(self) -> None:
        self._closing = True
        self.replica.closing = True
        self.outbox.closing = True
        self.inbox.closing = True
        await self.outbox.wait_sent()
        with contextlib.suppress(StoreUnavailable):
            await self.outbox.flush()
        for task in self._tasks:
            task.cancel()
        # Bounded: redis-py can turn a cancellation inside a command into a connection
        # error, which a loop would then swallow; `closing` ends such a loop anyway.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks.clear()
        await self.inbox.ack_rest()  # handled, and their acknowledgement waited on a read

    # --- what the job path asks of the loops ---------------------------------------------

    async def reap(self, hub_id: str) -> None:
        """Drain a dead hub's inbox now (a resubmit of one of its jobs), then forget it."""
        await self.reaper.reap(hub_id)

    async def resync(self) -> None:
        """Re-read other hubs' nodes from the store."""
        await self.replica.resync()

    # --- presence and dead hubs ----------------------------------------------------------

    async def _presence_loop(self) -> None:
        interval_s = self.config.heartbeat_interval_ms / 1000
        resync_every = max(1, self.config.resync_interval_ms // self.config.heartbeat_interval_ms)
        ticks = 0
        while not self._closing:
            await asyncio.sleep(interval_s)
            ticks += 1
            try:
                await self.tick(resync=ticks % resync_every == 0)
            except StoreUnavailable as exc:
                logger.warning("presence tick failed: {}", exc)
            except Exception:
                logger.exception("presence tick failed")

    async def _liveness_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.beat_interval_ms / 1000)
            try:
                await self.beat()
            except StoreUnavailable as exc:
                if not self.peers.beat_failed:
                    logger.warning("store unreachable: {}", exc)
                self.peers.beat_failed = True
                self.peers.store_failed()
            except Exception:
                logger.exception("liveness beat failed")

    @property
    def store_ok(self) -> bool:
        return self.peers.store_ok

    async def beat(self) -> None:
        """Beat, and act on every hub's beats: exclude, include, restarted."""
        beats = await self.store.beat()
        peers = self.peers
        if peers.beat_failed:
            logger.info("store reachable again")
        now = time.monotonic()
        # After this hub could not beat for a while (the store was unreachable or hung),
        # every other hub's beats look old too: judge them on the next reading.
        cut_off = (now - peers.beat_ok_s) * 1000 > self.silence_ms
        if peers.beating and (now - peers.beat_ok_s) * 1000 > self.config.hub_timeout_ms:
            peers.rejoined_s = now
        peers.beating = True
        peers.beat_failed = False
        peers.beat_ok_s = now
        changes = self.members.beats(
            beats, self.silence_ms, exclude=not cut_off and not self._starting
        )
        for hub_id in changes.excluded:
            logger.warning("hub {} stopped answering: not selecting its nodes", hub_id)
            self._withdraw_nodes(hub_id)
        for hub_id in changes.restarted:
            logger.warning("hub {} restarted: reconciling with its new run", hub_id)
            self._withdraw_nodes(hub_id)
        for hub_id in changes.included:
            logger.info("hub {} answers again", hub_id)
        if changes.included or changes.restarted:
            await self.resync()
        for hub_id in changes.restarted + changes.first_seen:
            await self._local.hub_restarted(hub_id)
        await self._local.housekeeping()

    def _withdraw_nodes(self, hub_id: str) -> None:
        for state in list(self.fleet.snapshot):
            if state.hub_id == hub_id:
                self.fleet.leave(state.node_id)

    async def tick(self, *, resync: bool = False) -> None:
        """One maintenance round: presence, leases, beacon, dead hubs, maybe a resync."""
        if not await self.store.announce(
            self.presence_ttl_ms, has_nodes=self.replica.published
        ):
            # Our presence had lapsed or the store lost its data (a Redis restart):
            # what we published is gone too. Publish it again, and read others'. What
            # was in flight through it may be gone as well: send the recent attempt
            # outcomes again and restore what the job path keeps there.
            logger.warning("presence or node entries were missing from the store: "
                           "republishing this hub's nodes and replaying recent results")
            await self.replica.republish()
            self.outbox.replay_recent()
            await self._local.store_restarted()
            resync = True
        await self._local.renew_leases()
        # A beacon: every hub (this one too) hears it, which proves the subscription works.
        await self.store.publish_fleet_update(
            encode(FleetUpdate(
                self.hub_id, waiting=self.replica.waiting, draining=self.replica.draining
            ))
        )
        quiet_s = time.monotonic() - self.replica.last_update_s
        if quiet_s > 3 * self.config.heartbeat_interval_ms / 1000:
            logger.warning("no fleet updates for {:.1f}s: resubscribing", quiet_s)
            self.replica.last_update_s = time.monotonic()
            self._restart_subscription()
        present = await self.store.live_hubs()
        known = await self.store.known_hubs()
        revived = self.members.revived(present)
        lost, dead = self.members.check(present, known)
        self.reaper.revived(present)
        for hub_id in revived:
            logger.warning("hub {} declared dead is back: reconciling with it", hub_id)
            await self._local.hub_revived(hub_id)
        for hub_id in lost:
            logger.warning("hub {} is gone: failing over its work", hub_id)
            await self._bury(hub_id)
        # A hub this one just buried is reaped here too, even if another hub already
        # dropped it: whatever this hub sent it before burying it (a result) is drained.
        for hub_id in sorted(set(lost) | set(dead)):
            await self.reaper.reap(hub_id)
            self.members.forget(hub_id)
        if resync:
            await self.resync()

    def _restart_subscription(self) -> None:
        for i, task in enumerate(self._tasks):
            if task.get_name().endswith(":fleet-subscribe"):
                task.cancel()
                self._tasks[i] = asyncio.create_task(
                    self.replica.subscribe_loop(), name=f"{self.hub_id}:fleet-subscribe"
                )

    async def _bury(self, hub_id: str) -> None:
        self._withdraw_nodes(hub_id)
        await self._local.hub_lost(hub_id)
