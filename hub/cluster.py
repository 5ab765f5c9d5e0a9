"""`Cluster`: what makes several hubs one system, over the store.

- presence: this hub announces itself every heartbeat interval and renews the
  leases of the nodes it owns; hubs whose presence lapsed are *dead*;
- the node directory (`DirectoryReplica`, hub/directory_replica.py, whose
  loops this runs): this hub's node changes published, other hubs' applied,
  a periodic full resync; a subscription that goes quiet (not even this hub's
  own beacons arrive) is rebuilt here;
- delivery: envelopes to other hubs go through the `Outbox` (one store call per
  event-loop turn, see hub/outbox.py); this hub's inbox is read in batches and acknowledged after
  handling;
- dead hubs: their jobs' attempts are failed over, their nodes leave the
  directory, their inbox is claimed and handled, entries that keep failing go
  to the dead-letter stream.

In local mode the same object runs against the memory store: there is never
another hub, so nothing is ever sent, and the loops idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from loguru import logger

from hub.archive import JobArchive
from hub.config import HubConfig
from hub.directory import NodeDirectory
from hub.directory_replica import DirectoryReplica
from hub.envelopes import (
    DirectoryUpdate,
    Envelope,
    NodeEvent,
    decode_envelope,
    encode,
)
from hub.errors import StoreUnavailable
from hub.outbox import Outbox
from hub.store.base import RecordBatch, Store

MAX_DELIVERIES = 3
INBOX_BLOCK_MS = 250
"""How long an inbox read waits for entries; also the longest a handled entry waits
for its acknowledgement, which rides with the next read."""
RECORDS_BLOCK_MS = 5
"""As `INBOX_BLOCK_MS`, for a read that carries finished jobs' records."""
GRACE_TICKS = 3
"""Presence checks a hub must miss in a row before it is declared dead."""


class EnvelopeHandler(Protocol):
    async def handle_envelope(self, envelope: Envelope, *, reaped_from: str | None) -> None:
        """Act on an envelope; `reaped_from` names the dead hub it was meant for."""

    async def hub_lost(self, hub_id: str) -> None:
        """A hub's presence lapsed: fail over what depended on it."""


class Cluster:
    def __init__(self, *, config: HubConfig, store: Store, directory: NodeDirectory) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.store = store
        self.directory = directory
        self.handler: EnvelopeHandler | None = None
        self.live: set[str] = {self.hub_id}
        self.outbox = Outbox(store)
        self.replica = DirectoryReplica(
            config=config, store=store, directory=directory, members=self
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._buried: set[str] = set()
        self._closing = False
        self._unacked: list[str] = []
        """Inbox entries handled, to acknowledge with the next read."""
        self._reaping: dict[str, asyncio.Lock] = {}
        self._reaped: set[str] = set()
        self._missing: Counter[str] = Counter()
        self.renew_leases: Callable[[], Awaitable[None]] | None = None
        self.archive: JobArchive | None = None
        """Where the records of jobs finished by inbox entries come from."""

    def __repr__(self) -> str:
        return f"Cluster(hub={self.hub_id!r}, live={sorted(self.live)})"

    @property
    def presence_ttl_ms(self) -> int:
        return self.config.node_timeout_ms

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.store.announce(self.presence_ttl_ms)
        self.live = await self.store.live_hubs() | {self.hub_id}
        await self.resync()
        for name, loop in (
            ("inbox", self._inbox_loop),
            ("outbox", self.outbox.run),
            ("directory-publish", self.replica.publish_loop),
            ("directory-subscribe", self.replica.subscribe_loop),
            ("presence", self._presence_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"{self.hub_id}:{name}"))

    async def aclose(self) -> None:
        self._closing = True
        self.replica.closing = True
        self.outbox.closing = True
        await self.outbox.wait_sent()
        with contextlib.suppress(StoreUnavailable):
            await self.outbox.flush()
        for task in self._tasks:
            task.cancel()
        # Bounded: redis-py can turn a cancellation inside a command into a connection
        # error, which a loop would then swallow; `_closing` ends such a loop anyway.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks.clear()
        if self._unacked:  # handled, and their acknowledgement was waiting on a read
            with contextlib.suppress(StoreUnavailable):
                await self.store.ack_inbox(self._unacked)
            self._unacked = []

    # --- sending --------------------------------------------------------------------

    def send(self, hub_id: str, envelope: Envelope) -> None:
        """Queue an envelope for another hub; sent with the others of this loop turn."""
        self.outbox.send(hub_id, envelope)

    # --- receiving --------------------------------------------------------------------

    async def _inbox_loop(self) -> None:
        records: RecordBatch | None = None
        while not self._closing:
            try:
                # Entries handled are acknowledged by the next read, and the records of
                # the jobs they finished written with it (see `Store.read_inbox`); the
                # read waits less then, so that they are not held back long when idle.
                entries = await self.store.read_inbox(
                    block_ms=INBOX_BLOCK_MS if records is None else RECORDS_BLOCK_MS,
                    count=512, ack=self._unacked, records=records,
                )
                self._unacked = []
            except StoreUnavailable:
                await asyncio.sleep(0.2)
                continue
            except Exception:  # e.g. the stream was deleted under a blocked read
                logger.exception("reading the inbox failed")
                await asyncio.sleep(0.2)
                continue
            finally:
                if records is not None and self.archive is not None:
                    self.archive.settle(records)  # unsaved ones are queued again
                records = None
            if entries:
                self._unacked = await self._handle_entries(
                    self.hub_id, entries, reaped_from=None
                )
                if self.archive is not None:
                    records = self.archive.take()  # now, before its own writer runs
                # Let the writes these entries caused (a job to its node, a result to
                # its client: flushed at the end of the loop turn) leave before the
                # next read's round trip is started.
                await asyncio.sleep(0)

    async def _handle_entries(
        self, inbox_hub: str, entries: Sequence[tuple[str, bytes]], *, reaped_from: str | None
    ) -> list[str]:
        """Handle entries in order; the ids of those handled, still to acknowledge
        (those that failed went to the dead letters, which acknowledges them)."""
        assert self.handler is not None
        done: list[str] = []
        for entry_id, data in entries:
            # Retried here, in order: a consumer group never hands an unacknowledged
            # entry to the same reader again. A store outage gets a few tries; an
            # entry that cannot be decoded or handled goes to the dead letters at once.
            for tries in range(1, MAX_DELIVERIES + 1):
                try:
                    envelope = decode_envelope(data)
                    await self.handler.handle_envelope(envelope, reaped_from=reaped_from)
                except StoreUnavailable as exc:
                    if tries < MAX_DELIVERIES:
                        await asyncio.sleep(0.2 * tries)
                        continue
                    failure: Exception | None = exc
                except Exception as exc:
                    failure = exc
                else:
                    failure = None
                break
            if failure is None:
                done.append(entry_id)
            else:
                logger.opt(exception=failure).error("inbox entry {} failed", entry_id)
                await self.store.dead_letter(inbox_hub, entry_id, data, repr(failure))
        return done

    # --- the directory ------------------------------------------------------------------

    def node_changed(self, node_id: str) -> None:
        """A local node joined, changed capabilities or status: publish it promptly."""
        self.replica.node_changed(node_id)

    def apply_update(self, update: DirectoryUpdate) -> None:
        self.replica.apply_update(update)

    async def resync(self) -> None:
        """Rebuild the remote part of the directory from the store."""
        await self.replica.resync()

    def is_buried(self, hub_id: str) -> bool:
        return hub_id in self._buried

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

    async def tick(self, *, resync: bool = False) -> None:
        """One maintenance round: presence, leases, beacon, dead hubs, maybe a resync."""
        if not await self.store.announce(self.presence_ttl_ms):
            # Our presence had lapsed or the store lost its data (a Redis restart):
            # what we published is gone too. Publish it again, and read others'.
            logger.warning("presence was missing from the store: republishing this hub's nodes")
            await self.republish()
            resync = True
        if self.renew_leases is not None:
            await self.renew_leases()
        # A beacon: every hub (this one too) hears it, which proves the subscription works.
        await self.store.publish_update(encode(DirectoryUpdate(self.hub_id)))
        quiet_s = time.monotonic() - self.replica.last_update_s
        if quiet_s > 3 * self.config.heartbeat_interval_ms / 1000:
            logger.warning("no directory updates for {:.1f}s: resubscribing", quiet_s)
            self.replica.last_update_s = time.monotonic()
            self._restart_subscription()
        live = await self.store.live_hubs() | {self.hub_id}
        known = await self.store.known_hubs()
        # A hub is dead after missing from presence on GRACE_TICKS checks in a row,
        # so that a store restart (every presence key gone at once) buries nobody.
        for hub_id in (self.live | known) - live:
            self._missing[hub_id] += 1
        for hub_id in live:
            self._missing.pop(hub_id, None)
        dead = {h for h, n in self._missing.items() if n >= GRACE_TICKS}
        lost = (self.live & dead) - self._buried
        self.live = live | (self.live - dead)
        self._buried -= live  # a hub id that announces itself again is alive again
        self._reaped -= live
        for hub_id in sorted(lost):
            logger.warning("hub {} is gone: failing over its work", hub_id)
            await self._bury(hub_id)
        for hub_id in sorted(known & dead):
            await self.reap(hub_id)
            self._missing.pop(hub_id, None)
        if resync:
            await self.resync()

    async def republish(self) -> None:
        """Publish every local node again (after the store lost them)."""
        await self.replica.republish()

    def _restart_subscription(self) -> None:
        for i, task in enumerate(self._tasks):
            if task.get_name().endswith(":directory-subscribe"):
                task.cancel()
                self._tasks[i] = asyncio.create_task(
                    self.replica.subscribe_loop(), name=f"{self.hub_id}:directory-subscribe"
                )

    async def _bury(self, hub_id: str) -> None:
        self._buried.add(hub_id)
        for state in list(self.directory.snapshot):
            if state.hub_id == hub_id:
                self.directory.leave(state.node_id)
        if self.handler is not None:
            await self.handler.hub_lost(hub_id)

    async def reap(self, hub_id: str) -> None:
        """Handle what is left in a dead hub's inbox, then forget the hub.

        Node events (results to archive) go first, so that a job whose result
        is already in the inbox is never run again for a resubmit queued
        behind it. A hub whose presence is live is never reaped. Concurrent calls
        for one hub (a tick and several resubmits) run one after the other."""
        lock = self._reaping.setdefault(hub_id, asyncio.Lock())
        async with lock:
            if hub_id in self._reaped or hub_id in await self.store.live_hubs():
                return
            await self._reap(hub_id)
            self._reaped.add(hub_id)

    async def _reap(self, hub_id: str) -> None:
        entries: list[tuple[str, bytes]] = []
        while batch := await self.store.claim_inbox(hub_id, count=256):
            known = {entry_id for entry_id, _ in entries}
            fresh = [entry for entry in batch if entry[0] not in known]
            if not fresh:
                break
            entries.extend(fresh)
        entries.sort(key=lambda entry: 0 if _is_node_event(entry[1]) else 1)
        if entries:
            handled = await self._handle_entries(hub_id, entries, reaped_from=hub_id)
            await self.store.ack_inbox(handled, hub_id=hub_id)
        await self.store.drop_hub(hub_id)

    def is_live(self, hub_id: str) -> bool:
        """Whether `hub_id` counts as alive: its presence was seen, or it spoke to us,
        since the last presence check."""
        return hub_id in self.live

    def heard_from(self, hub_id: str) -> None:
        """A message from `hub_id` proves it alive until presence says otherwise."""
        if hub_id not in self.live and hub_id not in self._buried:
            self.live.add(hub_id)

    async def refresh_live(self) -> None:
        """Read the live hubs now instead of waiting for the next presence tick."""
        self.live |= await self.store.live_hubs()


def _is_node_event(data: bytes) -> bool:
    try:
        return isinstance(decode_envelope(data), NodeEvent)
    except Exception:
        return False
