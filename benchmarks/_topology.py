"""Where the dispatch benchmark's load and nodes connect: one local-mode hub, or a
throwaway Redis and two cross_instance hubs on it (`--mode`)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _procs import Child, ProcGroup, free_port, wait_http
from _procs import start_redis as start_redis_server

CROSS_HUB_IDS = ("bench-a", "bench-b")
"""The client's hub, then the nodes' hub."""

# Idle nodes get no heartbeats in: keep every session alive for the whole run.
HUB_TIMING_FLAGS = ("--heartbeat-interval-ms", "30000", "--node-timeout-ms", "600000")
HUB_LOG_FLAGS: list[str] = ["--log-level", "WARNING"]
"""The hubs' logging (dispatch.py `--hub-log-level`, `--job-log-level`: measures
what the job lifecycle lines cost)."""


def set_hub_logging(log_level: str, job_log_level: str | None = None) -> None:
    HUB_LOG_FLAGS[:] = ["--log-level", log_level]
    if job_log_level is not None:
        HUB_LOG_FLAGS.extend(["--job-log-level", job_log_level])


@dataclass
class Topology:
    """Where the load generator and the node fleet connect, and the hub processes."""

    client_url: str
    node_url: str
    hubs: list[Child] = field(default_factory=list)
    """The client's hub first, the nodes' hub last (the same one in local mode)."""
    redis_port: int | None = None
    node_hub_id: str | None = None

    @property
    def http_url(self) -> str:
        return self.client_url.replace("ws://", "http://", 1)

    @property
    def node_http_url(self) -> str:
        return self.node_url.replace("ws://", "http://", 1)

    @property
    def node_hub(self) -> Child:
        return self.hubs[-1]


def _start_hub(procs: ProcGroup, name: str, *, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None,
               tls: ssl.SSLContext | None = None) -> tuple[Child, str]:
    """A `hub serve` child on a free port; its URL (`wss://` with `tls`, the context that
    trusts its certificate)."""
    port = free_port()
    hub = procs.spawn(
        name, "_hub_proc.py", "serve", "--host", "127.0.0.1", "--port", str(port),
        *HUB_LOG_FLAGS, *HUB_TIMING_FLAGS, *extra, extra_env=env,
    )
    scheme = "s" if tls is not None else ""
    url = f"ws{scheme}://127.0.0.1:{port}"
    try:
        wait_http(f"http{scheme}://127.0.0.1:{port}/healthz", timeout=30, context=tls)
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}{hub.tail()}") from None
    return hub, url


def start_local(procs: ProcGroup, env: dict[str, str] | None = None) -> Topology:
    """One hub in local mode: clients and nodes on the same hub."""
    hub, url = _start_hub(procs, "hub", env=env)
    return Topology(client_url=url, node_url=url, hubs=[hub])


def _hub_env(env: dict[str, str] | None, suffix: str) -> dict[str, str] | None:
    """`env` for one of several hubs: its own cProfile output file."""
    if env is None or "NODEHUB_BENCH_PROFILE" not in env:
        return env
    return {**env, "NODEHUB_BENCH_PROFILE": f"{env['NODEHUB_BENCH_PROFILE']}.{suffix}"}


def start_redis(procs: ProcGroup) -> int:
    """The group's throwaway `redis-server` (see `_procs.start_redis`); its port."""
    program = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(program).exists():
        raise SystemExit("dispatch.py: cross_instance mode needs redis-server")
    return start_redis_server(procs, program)


def start_cross_instance(procs: ProcGroup, env: dict[str, str] | None = None) -> Topology:
    """A Redis server and two hubs in cross_instance mode on it: the load on the
    first, the nodes on the second, so every job crosses between hubs."""
    redis_port = start_redis(procs)
    prefix = f"bench-{os.getpid()}-{time.time_ns()}"
    hubs: list[Child] = []
    urls: list[str] = []
    for hub_id in CROSS_HUB_IDS:
        hub, url = _start_hub(
            procs, f"hub-{hub_id}",
            extra=("--deployment-mode", "cross_instance",
                   "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                   "--redis-prefix", prefix, "--hub-id", hub_id),
            env=_hub_env(env, hub_id),
        )
        hubs.append(hub)
        urls.append(url)
    return Topology(client_url=urls[0], node_url=urls[-1], hubs=hubs, redis_port=redis_port,
                    node_hub_id=CROSS_HUB_IDS[-1])


def all_nodes(http_url: str) -> list[dict[str, object]]:
    """Every page of `GET /v1/nodes` (following `X-Next-After`)."""
    out: list[dict[str, object]] = []
    after = ""
    while True:
        url = f"{http_url}/v1/nodes?limit=500&after={urllib.parse.quote(after)}"
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            out.extend(json.loads(resp.read()))
            after = resp.headers.get("X-Next-After") or ""
        if not after:
            return out


def wait_directory(topology: Topology, count: int, timeout: float = 30.0) -> None:
    """Until the client's hub lists `count` nodes on the nodes' hub (`GET /v1/nodes`,
    every page)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        nodes = all_nodes(topology.http_url)
        seen = sum(1 for node in nodes if node.get("hub_id") == topology.node_hub_id)
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"hub {CROSS_HUB_IDS[0]} lists {seen} of {count} nodes on "
                f"{topology.node_hub_id} after {timeout}s{topology.hubs[0].tail()}"
            )
        time.sleep(0.05)


TOPOLOGIES: dict[str, Callable[[ProcGroup, dict[str, str] | None], Topology]] = {
    "local": start_local,
    "cross_instance": start_cross_instance,
}
