"""`Hub`: one hub, wired from its parts, with its lifecycle.

    store (memory or Redis) -- FleetView -- Peers -- JobService -- Cluster (loops)
                                                          \\-- Sessions -- HttpApi -- WsServer

`async with Hub(config) as hub:` serves until the block ends. `drain()` (what
SIGTERM does in `hub serve`) first stops taking work and lets the running jobs
finish, up to `drain_timeout_ms` (or until `stop_now()`); closing then stops
accepting, fails unfinished jobs with `hub_shutdown`, closes the sessions
with 1001, then stops the background loops and the store. Every background
task has an owner: the hub's own (deadlines, archiver, node watchdog, slow
peers) are cancelled and awaited in `aclose`; the cluster's by `Cluster.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from loguru import logger

from hub.app.process_metrics import process_text
from hub.app.version import build_labels
from hub.cluster.cluster import Cluster
from hub.cluster.peers import Peers
from hub.core.config import HubConfig
from hub.core.fleet_view import FleetView
from hub.core.held_bytes import HeldBytes
from hub.core.metrics import LabelValues, Metrics
from hub.jobs.links import LinkCloser
from hub.jobs.service import JobService
from hub.live.inbound import LiveInbound
from hub.live.registry import LiveSessions
from hub.net.auth import Gate
from hub.net.http import HttpApi
from hub.net.server import WsServer
from hub.net.sessions import Sessions, close_grace_s
from hub.net.slow_peers import SlowPeers
from hub.runtime.gc_pacer import GcPacer
from hub.runtime.memory_trim import MemoryTrim
from hub.store.archive import JobArchive
from hub.store.base import Store
from hub.store.factory import make_store


class Hub:
    def __init__(self, config: HubConfig, *, store: Store | None = None) -> None:
        self.config = config
        # First: a key file or certificate that cannot be used is a ConfigError now.
        self.gate = Gate.from_config(config)
        self.metrics = Metrics(config)
        self.store = store if store is not None else make_store(config, self.metrics)
        self.closer = LinkCloser(close_grace_s(config))
        """Closes sessions without waiting on their peers (takeover, expiry, silence)."""
        self.fleet = FleetView()
        self.archive = JobArchive(
            store=self.store, ttl_ms=config.idempotency_ttl_ms,
            max_bytes=config.max_archive_bytes,
        )
        self.peers = Peers(config=config, store=self.store, fleet=self.fleet)
        self.held_bytes = HeldBytes(config.max_held_payload_bytes)
        """The one memory budget: jobs' payloads and slow peers' queues."""
        held = self.held_bytes
        self.memory_trim = MemoryTrim(lambda: held.total)
        # The job path first (it holds `peers`); the cluster's loops drive it, so they
        # come after it. A resubmit of a dead hub's job reaps that hub's inbox through
        # the cluster: `_reap`, a method of this wiring, closes that one cycle.
        self.service = JobService(
            config=config, store=self.store, fleet=self.fleet, metrics=self.metrics,
            peers=self.peers, archive=self.archive, closer=self.closer, reap=self._reap,
            held_bytes=self.held_bytes,
        )
        self.live = LiveSessions(
            config=config, home=self.service.home, store=self.store, peers=self.peers,
            fleet=self.fleet, metrics=self.metrics,
        )
        self.cluster = Cluster(
            config=config, store=self.store, fleet=self.fleet, archive=self.archive,
            peers=self.peers, local=LiveInbound(router=self.service.router, live=self.live),
        )
        self.sessions = Sessions(
            config=config, service=self.service, live=self.live, metrics=self.metrics,
            waits=self.store.waits, closer=self.closer,
        )
        self.http = HttpApi(
            config=config, fleet=self.fleet, service=self.service, metrics=self.metrics,
            sessions=self.sessions, peers=self.peers,
        )
        self.slow_peers = SlowPeers(config, self.metrics, self.held_bytes)
        self.server = WsServer(
            config=config, sessions=self.sessions, http=self.http, slow_peers=self.slow_peers,
            metrics=self.metrics, gate=self.gate,
        )
        self.gc_pacer = (
            GcPacer(thaw_s=config.gc_thaw_interval_ms / 1000) if config.gc_pacing else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_now = asyncio.Event()
        self._register_gauges()

    def __repr__(self) -> str:
        return f"Hub({self.config.hub_id!r}, port={self.port}, {self.service!r})"

    async def _reap(self, hub_id: str) -> None:
        await self.cluster.reap(hub_id)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """The base URL (`ws://host:port`, `wss://` with TLS); endpoints are `/v1/node`
        and `/v1/client`."""
        return f"{'wss' if self.config.tls else 'ws'}://{self.config.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.config.tls else 'http'}://{self.config.host}:{self.port}"

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
            ("queue", self.service.home.run_queue),
            ("live-timers", self.live.run),
            ("archiver", self.archive.run),
            ("node-watchdog", self.sessions.watchdog.run),
            ("slow-peers", self.slow_peers.run),
            ("memory-trim", self.memory_trim.run),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))
        if self.gc_pacer is not None:
            self.gc_pacer.start()
            self._tasks.append(asyncio.create_task(self.gc_pacer.run(), name="gc-pacer"))
        log = logger.bind(hub_id=self.config.hub_id)
        log.info(
            "hub serving on {} ({} mode, auth {})", self.url, self.config.deployment_mode,
            self.gate.mode,
        )
        warning = self.gate.exposure_warning(self.config.host, self.port)
        if warning is not None:
            log.warning("{}", warning)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work and let what runs finish: `/readyz` answers 503 at once, new
        submits are refused `hub_shutdown`, this hub's nodes take no new job (each one
        leaves, closed with 1001, as soon as it is idle, to reconnect elsewhere); jobs
        this hub is home to and jobs on its nodes run on. Jobs waiting for a slot (the
        admission queue) wait on (a node of another hub may still take them)
        but do not hold the drain open: once nothing runs, the drain is over and
        `aclose` fails those still waiting with `hub_shutdown`. Returns True when all
        running jobs finished within `timeout_s` (default `drain_timeout_ms`), False
        when time ran out or `stop_now` was called. Call `aclose` next: it fails what
        is left."""
        if timeout_s is None:
            timeout_s = self.config.drain_timeout_ms / 1000
        self.sessions.stopping = True
        self.sessions.draining = True
        self.peers.set_draining()  # before the nodes' status: others wait for them
        home, registry = self.service.home, self.service.registry
        # What live sessions buffered is cut and submitted first, then runs with the rest.
        await self.live.drain()
        home.stop_accepting()
        logger.bind(hub_id=self.config.hub_id).info(
            "draining: {} jobs ({} waiting for a slot), {} on this hub's nodes (up to {:.0f} s)",
            len(home.jobs), len(home.waiting), registry.busy, timeout_s,
        )
        await self.service.owner.drain()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while home.running or registry.busy or home.table.pending or self.live.busy:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stop_now.is_set():
                logger.warning("drain ended with {} jobs unfinished", len(home.jobs))
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._stop_now.wait()
        if home.waiting:
            logger.bind(hub_id=self.config.hub_id).info(
                "drained: every running job finished; {} still waiting for a slot fail "
                "hub_shutdown", len(home.waiting),
            )
        else:
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
        self.service.home.stop_accepting()
        self.live.accepting = False
        self.server.stop_accepting()
        await self.service.home.shutdown()  # unfinished utterances end hub_shutdown...
        self.live.shutdown()  # ...then their sessions: session_closed hub_shutdown
        await self.closer.wait_closed()
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
            by_status = self.fleet.stats.all.by_status  # kept current: no visit of the fleet
            return {(s,): by_status.get(s, 0) for s in ("online", "draining", "offline")}

        registered = self.service.registry.registered
        home = self.service.home
        self.metrics.gauge(
            "nodehub_nodes", "Nodes this hub can select from, by status.", ("status",),
            nodes_by_status,
        )
        held = self.held_bytes
        self.metrics.gauge(
            "nodehub_held_payload_bytes",
            "Bytes held for peers against max_held_payload_bytes: jobs' payloads, and "
            "queues of peers that fell behind.", ("kind",),
            lambda: {("jobs",): held.jobs, ("outbound",): held.outbound},
        )
        self.metrics.gauge(
            "nodehub_local_node_sessions", "Node sessions connected to this hub.", (),
            lambda: {(): len(registered)},
        )
        self.metrics.gauge(
            "nodehub_client_sessions", "Client sessions connected to this hub.", (),
            lambda: {(): home.delivery.connections},
        )
        self.metrics.gauge(
            "nodehub_sessions", "Live sessions this hub holds (attached or not).", (),
            lambda: {(): len(self.live)},
        )
        self.metrics.gauge(
            "nodehub_rooms", "Rooms with members on this hub.", (),
            lambda: {(): len(self.live.rooms)},
        )
        self.metrics.gauge(
            "nodehub_active_jobs", "Jobs submitted here and not finished.", (),
            lambda: {(): len(home.jobs)},
        )
        self.metrics.gauge(
            "nodehub_queued_jobs", "Jobs submitted here waiting for a free slot.", (),
            lambda: {(): len(home.waiting)},
        )
        self.metrics.gauge(
            "nodehub_busy_slots", "Assigned jobs on nodes this hub owns.", (),
            lambda: {(): sum(len(n.assignments) for n in registered.values())},
        )
        # --- capacity per pool, the build, the process -----------------------
        stats = self.fleet.stats  # kept current change by change
        self.metrics.gauge(
            "nodehub_pool_slots", "Slots (max_concurrency summed) of the nodes this hub can "
            "select from, by pool.", ("pool",),
            lambda: {(str(pool),): t.slots_total for pool, t in stats.pools.items()},
        )
        self.metrics.gauge(
            "nodehub_pool_busy_slots", "Jobs running on the nodes this hub can select from, "
            "by pool.", ("pool",),
            lambda: {(str(pool),): t.slots_busy for pool, t in stats.pools.items()},
        )
        build = build_labels()
        build["mode"] = self.config.deployment_mode
        self.metrics.gauge(
            "nodehub_build_info", "Always 1: the hub's version, Python and deployment mode.",
            tuple(build), lambda: {tuple(build.values()): 1},
        )
        self.metrics.add_source(process_text)
