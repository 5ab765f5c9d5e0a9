"""The chaos benchmark's world: a real `redis-server`, real hub processes (`hub serve`)
and agent SDK node fleets in their own processes, and the faults done to them.

Every process is a child of one `ProcGroup` (killed with it, whatever happens).
Hubs keep their id and port across restarts (a restart is a new run under the
same `hub_id`, as a StatefulSet does it). Faults: SIGKILL (`kill_hub`,
`kill_nodes`, `kill_redis`), SIGTERM with drain (`drain_hub`), SIGSTOP/SIGCONT
(`pause_redis`, `resume_redis`), restart (`start_hub` again, `start_redis` on
the same port, empty).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from _procs import Child, ProcGroup, free_port, metric_value, redis_command

TIMERS: dict[str, int] = {
    "heartbeat_interval_ms": 200,
    "node_timeout_ms": 2000,
    "hub_timeout_ms": 1000,
    "accept_timeout_ms": 1000,
    "job_timeout_ms": 15000,
    "drain_timeout_ms": 15000,
    "resync_interval_ms": 2000,
    "load_publish_interval_ms": 10,
}
"""Short timers, so that a dead hub is buried within seconds (same for every hub)."""


@dataclass
class HubProc:
    name: str
    port: int
    child: Child | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class NodeProc:
    name: str
    child: Child
    events: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    alive: bool = True


class World:
    def __init__(self, procs: ProcGroup, *, redis_program: str, prefix: str) -> None:
        self.procs = procs
        self.redis_program = redis_program
        self.prefix = prefix
        self.redis_port = free_port()
        self.redis: Child | None = None
        self.hubs: dict[str, HubProc] = {}
        self.nodes: dict[str, NodeProc] = {}

    # --- redis --------------------------------------------------------------------------

    def start_redis(self) -> None:
        data = self.procs.dir / f"redis-{self.redis_port}"
        data.mkdir(exist_ok=True)
        self.redis = self.procs.spawn_program("redis", [
            self.redis_program, "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(data), "--logfile", "",
        ])
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis_command(self.redis_port, "PING", timeout=1.0) == b"PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.signal(signal.SIGKILL)
        self.redis.proc.wait(10)
        self.procs.stop(self.redis)
        self.redis = None

    def pause_redis(self) -> None:
        assert self.redis is not None
        self.redis.signal(signal.SIGSTOP)

    def resume_redis(self) -> None:
        assert self.redis is not None
        self.redis.signal(signal.SIGCONT)

    # --- hubs ---------------------------------------------------------------------------

    def start_hub(self, name: str, **flags: Any) -> HubProc:
        hub = self.hubs.get(name) or HubProc(name, free_port())
        self.hubs[name] = hub
        settings: dict[str, Any] = {
            "hub_id": f"{self.prefix}-{name}", "port": hub.port,
            "deployment_mode": "cross_instance", "redis_url": self.redis_url,
            "redis_prefix": self.prefix,
            "log_level": os.environ.get("CHAOS_HUB_LOG_LEVEL", "WARNING"), **TIMERS, **flags,
        }
        args = ["serve"]
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        hub.child = self.procs.spawn(f"hub-{name}", "_hub_proc.py", *args)
        hub.runs += 1
        self.wait_ready(hub)
        return hub

    def wait_ready(self, hub: HubProc, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert hub.child is not None
            if hub.child.proc.poll() is not None:
                raise RuntimeError(f"hub {hub.name} exited{hub.child.tail()}")
            if self.http_status(hub, "/readyz") == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"hub {hub.name} not ready")

    def http_status(self, hub: HubProc, path: str) -> int:
        try:
            with urllib.request.urlopen(hub.http + path, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def kill_hub(self, name: str) -> None:
        hub = self.hubs[name]
        assert hub.child is not None
        hub.child.signal(signal.SIGKILL)
        hub.child.proc.wait(10)
        self.procs.stop(hub.child)
        hub.child = None

    def pause_hub(self, name: str) -> None:
        """SIGSTOP: the hub freezes (a GC pause, a stalled VM), its sockets stay open."""
        hub = self.hubs[name]
        assert hub.child is not None
        hub.child.proc.send_signal(signal.SIGSTOP)

    def resume_hub(self, name: str) -> None:
        hub = self.hubs[name]
        assert hub.child is not None
        hub.child.proc.send_signal(signal.SIGCONT)

    def drain_hub(self, name: str, timeout_s: float = 60.0) -> None:
        """SIGTERM: the hub drains, then exits; wait for that."""
        hub = self.hubs[name]
        assert hub.child is not None
        hub.child.proc.send_signal(signal.SIGTERM)  # the hub itself, not its group
        try:
            hub.child.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"hub {name} did not drain in {timeout_s}s") from None
        self.procs.stop(hub.child)
        hub.child = None

    def hub_metric(self, name: str, metric: str) -> float:
        hub = self.hubs[name]
        if hub.child is None:
            return 0.0
        with urllib.request.urlopen(hub.http + "/metrics", timeout=5) as resp:
            return metric_value(resp.read().decode(), metric) or 0.0

    def hub_json(self, name: str, path: str) -> Any:
        with urllib.request.urlopen(self.hubs[name].http + path, timeout=5) as resp:
            return json.loads(resp.read())

    # --- nodes ----------------------------------------------------------------------------

    def start_nodes(
        self, name: str, hubs: list[str], *, count: int, slots: int, service_ms: float = 20,
        flap_ms: float = 0, seed: int = 1,
    ) -> NodeProc:
        urls = ",".join(self.hubs[h].url for h in hubs)
        child = self.procs.spawn(
            f"nodes-{name}", "_chaos_nodes.py", "--urls", urls, "--prefix", f"{name}-",
            "--count", str(count), "--slots", str(slots), "--service-ms", str(service_ms),
            "--flap-ms", str(flap_ms), "--seed", str(seed), stdin=True,
        )
        fleet = NodeProc(name, child)
        self.nodes[name] = fleet
        self.expect(fleet, "ready", 60)
        return fleet

    def command(self, name: str, line: str) -> None:
        fleet = self.nodes[name]
        if fleet.alive:
            fleet.child.write(line)

    def release(self, group: str) -> None:
        for name, fleet in self.nodes.items():
            if fleet.alive:
                self.command(name, f"release {group}")
                self.expect(fleet, "released", 10)

    def kill_nodes(self, name: str) -> None:
        fleet = self.nodes[name]
        fleet.child.signal(signal.SIGKILL)
        fleet.child.proc.wait(10)
        self.collect()
        fleet.alive = False

    def node_stats(self) -> dict[str, dict[str, int]]:
        """Every live fleet's per-node counters (running, accepted, lost...)."""
        stats: dict[str, dict[str, int]] = {}
        for fleet in self.nodes.values():
            if fleet.alive:
                fleet.child.write("stats")
                stats.update(self.expect(fleet, "stats", 10)["stats"])
        return stats

    def expect(self, fleet: NodeProc, key: str, timeout_s: float) -> dict[str, Any]:
        """The next line of `fleet` holding `key`; execution events met meanwhile are
        kept (`fleet.events`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"nodes {fleet.name}: no {key!r}{fleet.child.tail()}")
            try:
                item = fleet.child.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise RuntimeError(f"nodes {fleet.name} exited{fleet.child.tail()}")
            if "ev" in item:
                fleet.events.append(item)
            elif key in item:
                return item

    def collect(self) -> list[dict[str, Any]]:
        """Every execution event the fleets printed so far."""
        for fleet in self.nodes.values():
            while True:
                try:
                    item = fleet.child.lines.get_nowait()
                except queue.Empty:
                    break
                if item is not None and "ev" in item:
                    fleet.events.append(item)
        return [e for fleet in self.nodes.values() for e in fleet.events]
