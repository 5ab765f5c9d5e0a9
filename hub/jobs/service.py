"""`JobService`: the job path, composed: the home role, the owner role, and what joins them.

| part | owns |
|---|---|
| `JobHome` (home/home.py) | the jobs submitted here, from admission to the one result |
| `NodeRegistry` (owner/registry.py) | the nodes connected here, their slots (the home's `Slots`) |
| `NodeOwner` (owner/owner.py) | registration, node messages, reports to the homes (`JobEvents`) |
| `OwnerDeadlines` (owner/deadlines.py) | the owner timing its nodes' accepts of other hubs' jobs |
| `Admin` (admin.py) | an operator's drain, undrain, cancel and job list |
| `InboundRouter` (inbound.py) | other hubs' envelopes to either role (the cluster's `LocalHub`) |

Everything is built here, in one pass: the registry first (the home reserves
slots in it), then the home, then the owner (it reports to the home's
events). Neither role imports the other (hub/jobs/roles.py). The one cycle
left, a resubmit asking to reap a dead hub's inbox (whose envelopes come back
through the router), goes through `reap`, given by whoever builds the
cluster's loops after this (`Hub`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from hub.cluster.peers import Peers
from hub.core.config import HubConfig
from hub.core.fleet_view import FleetView
from hub.core.held_bytes import HeldBytes
from hub.core.metrics import Metrics
from hub.jobs.admin import Admin
from hub.jobs.home.home import JobHome
from hub.jobs.inbound import InboundRouter
from hub.jobs.links import LinkCloser
from hub.jobs.owner.deadlines import OwnerDeadlines
from hub.jobs.owner.owner import NodeOwner
from hub.jobs.owner.registry import NodeRegistry
from hub.runtime.deadline_loop import Clock
from hub.store.archive import JobArchive
from hub.store.base import Store


async def _no_reap(hub_id: str) -> None:
    """One hub, no other hub's inbox to drain (local mode, tests)."""


class JobService:
    def __init__(
        self,
        *,
        config: HubConfig,
        store: Store,
        fleet: FleetView,
        metrics: Metrics,
        peers: Peers,
        archive: JobArchive,
        reap: Callable[[str], Awaitable[None]] = _no_reap,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        held_bytes: HeldBytes | None = None,
        closer: LinkCloser | None = None,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        rng = rng if rng is not None else random.Random(config.selection_seed)
        clock = clock if clock is not None else Clock()
        self.closer = closer if closer is not None else LinkCloser(1.0)
        """Closes sessions without waiting on their peers (takeover, expiry, silence)."""
        self.registry = registry = NodeRegistry(
            config=config, fleet=fleet, store=store, published=peers.node_changed
        )
        self.home = home = JobHome(
            config=config, store=store, fleet=fleet, metrics=metrics, peers=peers,
            archive=archive, slots=registry, reap=reap, rng=rng, clock=clock,
            held_bytes=held_bytes,
        )
        self.owner = owner = NodeOwner(
            config=config, registry=registry, store=store, events=home.events,
            send=peers.send, closer=self.closer,
        )
        self.owner_deadlines = OwnerDeadlines(config=config, owner=owner, clock=clock)
        self.admin = Admin(
            hub_id=config.hub_id, fleet=fleet, owner=owner, table=home.table,
            attempts=home.attempts, archive=archive, peers=peers,
        )
        self.router = InboundRouter(
            home=home, owner=owner, owner_deadlines=self.owner_deadlines, admin=self.admin,
            peers=peers, store=store,
        )
        """The cluster's `LocalHub`."""

    def __repr__(self) -> str:
        return f"JobService(hub={self.hub_id!r}, {self.home!r}, {self.registry!r})"

    async def run_deadlines(self) -> None:
        """Fire accept, attempt and overall deadlines (the home's, and the owner's for
        other hubs' attempts on this hub's nodes); runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.home.run_deadlines())
            group.create_task(self.owner_deadlines.run())
