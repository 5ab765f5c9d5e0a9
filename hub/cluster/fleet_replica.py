"""`FleetReplica`: every hub's nodes in every hub's snapshot.

This hub's node changes are published (structural changes at once, with
their `NodeEntry` written to the hub's node hash in the store; load changes
coalesced every `load_publish_interval_ms`, and only while another hub is
alive; at the end of the loop turn instead while another hub has jobs
waiting for a slot); other hubs' changes, heard over the store's pub/sub as
`FleetUpdate`s, are applied to the local `FleetView`; `resync` rebuilds the
remote part from the node hashes (periodically, and after a subscription was
lost). `Cluster` owns it and runs its loops; which hubs are alive is the
cluster's `Membership` (seen here as `Members`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from loguru import logger

from hub.core.capabilities import NodeCapabilities
from hub.core.config import HubConfig
from hub.core.envelopes import (
    FleetUpdate,
    NodeEntry,
    decode_fleet_update,
    decode_node_entry,
    encode,
)
from hub.core.errors import StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.snapshot import NodeState, NodeStatus
from hub.store.base import Store

BULK_RESYNC_MIN = 64
"""Unknown node entries above which a resync rebuilds the snapshot in one pass."""


class Members(Protocol):
    """Which hubs are alive, as the cluster knows it."""

    live: set[str]

    def heard_from(self, hub_id: str) -> None: ...

    def is_buried(self, hub_id: str) -> bool: ...

    def is_excluded(self, hub_id: str) -> bool: ...


class FleetReplica:
    def __init__(
        self, *, config: HubConfig, store: Store, fleet: FleetView, members: Members
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self.store = store
        self.fleet = fleet
        self.members = members
        self.local_nodes: set[str] = set()
        self._publishing = False
        self.closing = False
        self.last_update_s = time.monotonic()
        """When the subscription last delivered anything (this hub's beacons included)."""
        self._dirty_load: set[str] = set()
        self._dirty_structure: dict[str, NodeState | None] = {}
        self._structure_ready = asyncio.Event()
        # --- the admission queue ---
        self.waiting = False
        """Jobs wait for a slot on this hub (sent with every update and beacon)."""
        self.waiting_hubs: set[str] = set()
        self.draining_hubs: set[str] = set()
        """Other hubs that said they drain (their nodes are about to move)."""
        self.draining = False
        """This hub drains (said in every update it publishes, and its beacons)."""
        """Other hubs that said they have jobs waiting: load changes go out at once."""
        self._waiting_changed = False
        fleet.subscribe(self.on_fleet_change)

    def __repr__(self) -> str:
        return f"FleetReplica(hub={self.hub_id!r}, local={len(self.local_nodes)})"

    def on_fleet_change(self, node_id: str, state: NodeState | None) -> None:
        if node_id not in self.local_nodes:
            return
        if state is None:
            self.local_nodes.discard(node_id)
            self._dirty_structure[node_id] = None
            self._structure_ready.set()
        else:
            # Load changes are coalesced; structure changes come through `node_changed`.
            self._dirty_load.add(node_id)
            if self.waiting_hubs and self._others_waiting():
                self._structure_ready.set()  # a hub waits for slots: at the turn's end

    def _others_waiting(self) -> bool:
        live = self.members.live
        self.waiting_hubs &= live
        return bool(self.waiting_hubs)

    def set_waiting(self, waiting: bool) -> None:
        """Jobs wait for a slot here, or no longer: tell the other hubs at once."""
        if waiting != self.waiting:
            self.waiting = waiting
            self._waiting_changed = True
            self._structure_ready.set()

    @property
    def published(self) -> bool:
        """This hub has nodes and every one of them went out to the store (so their
        entries must be there: a presence check that finds them gone republishes)."""
        return bool(self.local_nodes) and not self._dirty_structure and not self._publishing

    def node_changed(self, node_id: str) -> None:
        """A local node joined, changed capabilities or status: publish it promptly."""
        self.local_nodes.add(node_id)
        self._dirty_structure[node_id] = self.fleet.snapshot.get(node_id)
        self._structure_ready.set()

    async def publish_loop(self) -> None:
        interval_s = self.config.load_publish_interval_ms / 1000
        while not self.closing:
            # Not `wait_for`: on Python 3.11 it can swallow a cancel that coincides
            # with the event firing, and `aclose` would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._structure_ready.wait()
            self._structure_ready.clear()
            try:
                await self.publish_dirty()
            except StoreUnavailable:
                await asyncio.sleep(0.2)

    async def publish_dirty(self) -> None:
        if self._waiting_changed and len(self.members.live) > 1:
            self._waiting_changed = False
            if not self._dirty_structure and not self._dirty_load:
                await self.store.publish_fleet_update(
                    encode(FleetUpdate(self.hub_id, waiting=self.waiting, draining=self.draining))
                )
                return
        if not self._dirty_structure and len(self.members.live) <= 1:
            # Load changes matter only to other hubs; none is alive (local mode, or
            # alone for now). They stay marked and go out once another hub appears.
            return
        structure, self._dirty_structure = self._dirty_structure, {}
        load, self._dirty_load = self._dirty_load, set()
        upserts: list[NodeEntry] = []
        removals: list[str] = []
        snapshot = self.fleet.snapshot
        for node_id in structure:
            state = snapshot.get(node_id) if node_id in self.local_nodes else None
            if state is None:
                removals.append(node_id)
            else:
                upserts.append(_entry(state, with_caps=True))
        if structure:
            # One call for every structural change of this round (a storm's joins).
            self._publishing = True
            try:
                await self.store.publish_nodes(
                    [(entry.node_id, encode(entry)) for entry in upserts], removals,
                    self.config.node_timeout_ms,
                )
            finally:
                self._publishing = False
        for node_id in load - structure.keys():
            state = snapshot.get(node_id)
            if state is not None:
                upserts.append(_entry(state, with_caps=False))
        if upserts or removals:
            await self.store.publish_fleet_update(
                encode(FleetUpdate(
                    self.hub_id, upserts=upserts, removals=removals, waiting=self.waiting,
                    draining=self.draining,
                ))
            )

    async def subscribe_loop(self) -> None:
        while not self.closing:
            try:
                async for data in self.store.fleet_updates():
                    self.last_update_s = time.monotonic()
                    self.apply_update(decode_fleet_update(data))
            except StoreUnavailable as exc:
                logger.warning("fleet subscription lost: {}", exc)
            await asyncio.sleep(0.2)
            with contextlib.suppress(StoreUnavailable):
                await self.resync()

    def apply_update(self, update: FleetUpdate) -> None:
        if update.hub_id == self.hub_id:
            return
        self.members.heard_from(update.hub_id)
        if update.waiting:
            self.waiting_hubs.add(update.hub_id)
        else:
            self.waiting_hubs.discard(update.hub_id)
        if update.draining:
            self.draining_hubs.add(update.hub_id)
        else:
            self.draining_hubs.discard(update.hub_id)
        snapshot = self.fleet.snapshot
        for node_id in update.removals:
            state = snapshot.get(node_id)
            if state is not None and state.hub_id == update.hub_id:
                self.fleet.leave(node_id)
        for entry in update.upserts:
            self._apply_entry(entry)

    def _apply_entry(self, entry: NodeEntry) -> None:
        if entry.node_id in self.local_nodes or not self._selectable(entry.hub_id):
            return
        current = self.fleet.snapshot.get(entry.node_id)
        status: NodeStatus = entry.status  # type: ignore[assignment]
        if entry.caps is not None:
            caps = NodeCapabilities.from_wire(entry.caps, default_pool=self.config.default_pool)
        elif current is not None and current.hub_id == entry.hub_id:
            caps = current.caps
        else:
            return  # a load update for a node we have not seen yet; the resync brings it
        if current is None or current.caps != caps or current.hub_id != entry.hub_id:
            self.fleet.put(
                NodeState.create(
                    entry.node_id, caps, hub_id=entry.hub_id, status=status, running=entry.running
                )
            )
            return
        if current.status != status:
            self.fleet.set_status(entry.node_id, status)
        if current.running != entry.running:
            self.fleet.set_running(entry.node_id, entry.running)

    async def resync(self) -> None:
        """Rebuild the remote part of the fleet view from the store."""
        entries = [decode_node_entry(data) for data in (await self.store.node_entries()).values()]
        snapshot = self.fleet.snapshot
        unknown = sum(1 for e in entries if e.node_id not in snapshot)
        if unknown > BULK_RESYNC_MIN and unknown > len(snapshot) // 4:
            self._rebuild(entries)  # a first sync: one build instead of many joins
            return
        seen = set()
        for entry in entries:
            if entry.hub_id != self.hub_id and self._selectable(entry.hub_id):
                seen.add(entry.node_id)
                self._apply_entry(entry)
        for state in list(self.fleet.snapshot):
            if state.hub_id != self.hub_id and state.node_id not in seen:
                self.fleet.leave(state.node_id)

    def _rebuild(self, entries: list[NodeEntry]) -> None:
        states = [s for s in self.fleet.snapshot if s.hub_id == self.hub_id]
        local = {s.node_id for s in states}
        for entry in entries:
            if (
                entry.caps is not None and entry.node_id not in local
                and entry.hub_id != self.hub_id and self._selectable(entry.hub_id)
            ):
                caps = NodeCapabilities.from_wire(entry.caps, default_pool=self.config.default_pool)
                status: NodeStatus = entry.status  # type: ignore[assignment]
                states.append(NodeState.create(
                    entry.node_id, caps, hub_id=entry.hub_id, status=status, running=entry.running
                ))
        self.fleet.rebuild(states)

    def _selectable(self, hub_id: str) -> bool:
        """Whether another hub's nodes belong in the view: it is alive (not buried) and
        answering (not excluded)."""
        members = self.members
        return (
            hub_id in members.live
            and not members.is_buried(hub_id)
            and not members.is_excluded(hub_id)
        )

    async def republish(self) -> None:
        """Publish every local node again (after the store lost them)."""
        for node_id in list(self.local_nodes):
            self.node_changed(node_id)
        await self.publish_dirty()


def _entry(state: NodeState, *, with_caps: bool) -> NodeEntry:
    return NodeEntry(
        state.node_id,
        state.hub_id,
        state.status,
        state.running,
        state.caps.to_wire() if with_caps else None,
    )
