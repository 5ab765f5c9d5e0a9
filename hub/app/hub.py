"""`Hub`: one hub, wired from its parts, with its lifecycle.

    store (memory or Redis) -- FleetView -- Cluster -- JobService -- InboundRouter
                                                  \\-- Sessions -- HttpApi -- WsServer

`async with Hub(config) as hub:` serves until the block ends. `drain()` (what
SIGTERM does in `hub serve`) first stops taking work and lets the running jobs
finish, up to `drain_timeout_ms` (or until `stop_now()`); closing then stops
accepting, fails unfinished jobs with `hub_shutdown`, closes the sessions
with 1001, then stops the background loops and the store. Every background
task has an owner: the hub's own (deadlines, archiver, node watchdog) are
cancelled and awaited in `aclose`; the cluster's by `Cluster.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from loguru import logger

from hub.cluster.cluster import Cluster
from hub.core.config import HubConfig
from hub.core.fleet_view import FleetView
from hub.core.metrics import LabelValues, Metrics
from hub.jobs.inbound import InboundRouter
from hub.jobs.service import JobService
from hub.net.http import HttpApi
from hub.net.server import WsServer
from hub.net.sessions import Sessions
from hub.store.archive import JobArchive
from hub.store.base import Store
from hub.store.factory import make_store


class Hub:
    def __init__(self, config: HubConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else make_store(config)
        self.metrics = Metrics()
        self.fleet = FleetView()
        self.archive = JobArchive(store=self.store, ttl_ms=config.idempotency_ttl_ms)
        self.cluster = Cluster(
            config=config, store=self.store, fleet=self.fleet, archive=self.archive
        )
        self.service = JobService(
            config=config, store=self.store, fleet=self.fleet, metrics=self.metrics,
            cluster=self.cluster, archive=self.archive,
        )
        self.cluster.attach(InboundRouter(service=self.service, cluster=self.cluster))
        self.sessions = Sessions(
            config=config, service=self.service, metrics=self.metrics, waits=self.store.waits
        )
        self.http = HttpApi(
            config=config, fleet=self.fleet, service=self.service, metrics=self.metrics,
            sessions=self.sessions, cluster=self.cluster,
        )
        self.server = WsServer(config=config, sessions=self.sessions, http=self.http)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_now = asyncio.Event()
        self._register_gauges()

    def __repr__(self) -> str:
        return f"Hub({self.config.hub_id!r}, port={self.port}, {self.service!r})"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """The base URL (`ws://host:port`); endpoints are `/v1/node` and `/v1/client`."""
        return f"ws://{self.config.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        await self.store.start()
        await self.cluster.start()
        await self.server.start()
        for name, loop in (
            ("deadlines", self.service.run_deadlines),
            ("archiver", self.archive.run),
            ("node-watchdog", self.sessions.watchdog.run),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))
        logger.bind(hub_id=self.config.hub_id).info(
            "hub serving on {} ({} mode)", self.url, self.config.deployment_mode
        )

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work and let what runs finish: `/readyz` answers 503 at once, new
        submits are refused `hub_shutdown`, this hub's nodes take no new job (each one
        leaves, closed with 1001, as soon as it is idle, to reconnect elsewhere); jobs
        this hub is home to and jobs on its nodes run on. Returns True when all of
        them finished within `timeout_s` (default `drain_timeout_ms`), False when time
        ran out or `stop_now` was called. Call `aclose` next: it fails what is left."""
        if timeout_s is None:
            timeout_s = self.config.drain_timeout_ms / 1000
        self.sessions.stopping = True
        self.sessions.draining = True
        logger.bind(hub_id=self.config.hub_id).info(
            "draining: {} jobs, {} on this hub's nodes (up to {:.0f} s)",
            len(self.service.jobs), self.service.nodes.busy, timeout_s,
        )
        await self.service.nodes.drain()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.service.jobs or self.service.nodes.busy or self.service.table.pending:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stop_now.is_set():
                logger.warning(
                    "drain ended with {} jobs unfinished", len(self.service.jobs)
                )
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._stop_now.wait()
        logger.bind(hub_id=self.config.hub_id).info("drained: every job finished")
        return True

    def stop_now(self) -> None:
        """End a drain at once (a second signal): `aclose` fails what is left."""
        self._stop_now.set()

    async def aclose(self) -> None:
        """Stop accepting, fail unfinished jobs with `hub_shutdown`, close sessions with 1001."""
        if self._stopping:
            return
        self._stopping = True
        self.sessions.stopping = True
        self.server.stop_accepting()
        await self.service.shutdown()
        await self.sessions.watchdog.wait_closed()
        await self.cluster.aclose()
        await self.archive.flush()  # records the inbox's last read carried
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.close()
        await self.store.aclose()
        logger.bind(hub_id=self.config.hub_id).info("hub stopped")

    # --- metrics read at scrape time --------------------------------------------------------

    def _register_gauges(self) -> None:
        def nodes_by_status() -> dict[LabelValues, float]:
            counts: dict[LabelValues, float] = {("online",): 0, ("draining",): 0, ("offline",): 0}
            for state in self.fleet.snapshot:
                counts[(state.status,)] = counts.get((state.status,), 0) + 1
            return counts

        registered = self.service.nodes.registered
        self.metrics.gauge(
            "nodehub_nodes", "Nodes this hub can select from, by status.", ("status",),
            nodes_by_status,
        )
        self.metrics.gauge(
            "nodehub_local_node_sessions", "Node sessions connected to this hub.", (),
            lambda: {(): len(registered)},
        )
        self.metrics.gauge(
            "nodehub_client_sessions", "Client sessions connected to this hub.", (),
            lambda: {(): len(self.service.clients)},
        )
        self.metrics.gauge(
            "nodehub_active_jobs", "Jobs submitted here and not finished.", (),
            lambda: {(): len(self.service.jobs)},
        )
        self.metrics.gauge(
            "nodehub_busy_slots", "Assigned jobs on nodes this hub owns.", (),
            lambda: {(): sum(len(n.assignments) for n in registered.values())},
        )
