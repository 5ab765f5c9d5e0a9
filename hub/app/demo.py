"""`hub demo`: a hub, a simulated fleet and a client load in one process.

Zero configuration: an embedded local hub on a free port, about 50 simulated
GPU nodes (the seeded "faulty" profile, durations scaled to milliseconds, so
rejects, crashes, slow nodes and reconnects happen), and a client keeping
`in_flight` jobs in flight, drawn from what the fleet actually serves plus a
few impossible ones. A status line every second, a summary at the end.

`--hubs 2` runs the same across two hubs in cross-instance mode on a
`redis-server` this command starts itself (it says what to install when
there is none): half the fleet connects to each hub, clients submit to both,
so jobs cross from one hub to the other.

The hubs run with `auth = "jwt"` as in production: the demo makes
a random HS256 secret and mints its own tokens with it (a node token allowed
the fleet's node ids, a client token), so it still needs no setup.

It prints a link to each hub's live console (`/ui`, with an admin
token in the link's fragment, which the page keeps for its tab and never
sends in a URL); `--port` fixes the first hub's port, `--seconds` how long
the demo runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agent_sim.behaviour import get_profile
from agent_sim.client import HubClient
from agent_sim.fleet import Fleet
from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.core.errors import ConfigError
from hub.core.messages import Rejected, Result
from hub.core.principal import ADMIN, CLIENT, NODE
from hub.net.auth import mint_token

TIME_SCALE = 0.02
"""Simulated durations x 0.02: a median 1.2 s job takes 24 ms."""


@dataclass
class LoadStats:
    started: float = field(default_factory=time.monotonic)
    rtts_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def percentile(self, q: float) -> float:
        if not self.rtts_ms:
            return 0.0
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _redis_server() -> AsyncIterator[str]:
    """A throwaway redis-server on a free port; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError(
            "`hub demo --hubs 2` needs redis-server: install it "
            "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        )
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", workdir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            await proc.wait()


def _config(
    hub_id: str, redis_url: str | None, prefix: str, secret: str, port: int = 0
) -> HubConfig:
    return HubConfig(
        port=port,
        auth="jwt",
        jwt_secret=secret,
        hub_id=hub_id,
        deployment_mode="local" if redis_url is None else "cross_instance",
        redis_url=redis_url or "redis://127.0.0.1:6379/0",
        redis_prefix=prefix,
        heartbeat_interval_ms=1_000,
        node_timeout_ms=3_000,
        accept_timeout_ms=500,
        job_timeout_ms=3_000,
        log_level="WARNING",
    )


def _request(fleets: list[Fleet], rng: random.Random) -> dict[str, object]:
    """A job the fleet can mostly serve: a random node's pair, sometimes more demands."""
    agents = [agent for fleet in fleets for agent in fleet.agents]
    roll = rng.random()
    if roll < IMPOSSIBLE_SHARE:
        return {"src_lang": "xx", "tgt_lang": "yy"}  # nobody serves it: rejected no_node
    agent = rng.choice(agents)
    caps = agent.capabilities
    pair = rng.choice(caps.language_pairs)
    request: dict[str, object] = {"src_lang": pair.src, "tgt_lang": pair.tgt}
    if caps.features and rng.random() < 0.3:
        request["features"] = [rng.choice(caps.features)]
    if rng.random() < 0.05:
        request["preferred_node_id"] = agent.node_id
    elif rng.random() < 0.1 and caps.pool is not None:
        request["preferred_pool"] = caps.pool
    if rng.random() < 0.1:
        request["routing_key"] = f"session-{rng.randrange(20)}"
    return request


async def _client_load(
    clients: list[HubClient], fleets: list[Fleet], stats: LoadStats, *, seconds: float,
    in_flight: int, seed: int,
) -> None:
    rng = random.Random(f"{seed}:load")
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        client = clients[index % len(clients)]
        while time.monotonic() < deadline:
            started = time.perf_counter()
            handle = await client.submit(payload={"text": "hello"}, **_request(fleets, rng))  # type: ignore[arg-type]
            try:
                outcome = await asyncio.wait_for(handle.result, 30)
            except TimeoutError:
                stats.outcomes["lost"] += 1  # never expected: the hub answers every submit
                continue
            if isinstance(outcome, Rejected):
                # Why: nothing serves the pair by design, none of the nodes that could is
                # connected now, or (never, since the queue) they were only busy.
                detail = ""
                if outcome.code == "no_node" and outcome.reasons is not None:
                    capable = outcome.reasons.get("at_capacity", 0) + outcome.reasons.get(
                        "draining", 0
                    )
                    detail = " (busy)" if capable else " (nothing connected serves it)"
                stats.outcomes[f"rejected:{outcome.code}{detail}"] += 1
                continue
            assert isinstance(outcome, Result)
            stats.rtts_ms.append((time.perf_counter() - started) * 1000)
            stats.attempts[outcome.attempts] += 1
            key = "ok" if outcome.ok else f"failed:{outcome.error.code if outcome.error else '?'}"
            stats.outcomes[key] += 1

    await asyncio.gather(*(worker(i) for i in range(in_flight)))


def _status_line(stats: LoadStats, hubs: list[Hub]) -> str:
    elapsed = time.monotonic() - stats.started
    busy = sum(len(s.assignments) for hub in hubs for s in hub.service.registry.registered.values())
    nodes = sum(len(hub.service.registry.registered) for hub in hubs)
    failovers = sum(n for attempts, n in stats.attempts.items() if attempts > 1)
    failed = sum(n for k, n in stats.outcomes.items() if not k.startswith("ok"))
    # The admission queue: jobs waiting now, and their mean wait so far.
    queued = sum(len(hub.service.home.waiting) for hub in hubs)
    waited = [hub.metrics.queue_wait_seconds for hub in hubs]
    count = sum(h.count for h in waited)
    mean_wait_ms = 1000 * sum(h.total for h in waited) / count if count else 0.0
    return (
        f"{elapsed:5.1f}s  jobs {stats.done:6d}  {stats.done / max(elapsed, 1e-9):6.0f}/s  "
        f"p50 {stats.percentile(0.5):6.1f} ms  p99 {stats.percentile(0.99):7.1f} ms  "
        f"nodes {nodes:3d}  busy slots {busy:3d}  queued {queued:4d}  "
        f"wait {mean_wait_ms:6.1f} ms  failovers {failovers:4d}  not ok {failed:4d}"
    )


IMPOSSIBLE_SHARE = 0.03
"""Submits that ask for xx -> yy, a pair no node serves: answered `rejected` `no_node`."""


async def _start_hubs(
    stack: contextlib.AsyncExitStack, hubs: int, port: int
) -> tuple[list[Hub], str, str | None]:
    """The demo's hubs (two share a redis-server started for them), closed with `stack`;
    their token secret and the Redis URL (None in local mode). The first hub serves on
    `port`."""
    redis_url = None
    if hubs == 2:
        redis_url = await stack.enter_async_context(_redis_server())
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(32)
    running = [
        await stack.enter_async_context(
            Hub(_config(f"demo-hub-{i + 1}", redis_url, prefix, secret, port if i == 0 else 0))
        )
        for i in range(hubs)
    ]
    return running, secret, redis_url


async def run_demo(
    *, nodes: int = 50, seconds: float = 15.0, in_flight: int = 32, seed: int = 1,
    faults: bool = True, hubs: int = 1, linger: bool = False, port: int = 0,
) -> None:
    if hubs not in (1, 2):
        raise ConfigError("--hubs must be 1 or 2")
    profile = "faulty" if faults else "default"
    async with contextlib.AsyncExitStack() as stack:
        running, secret, redis_url = await _start_hubs(stack, hubs, port)
        ttl_s = seconds + 3600
        node_token = mint_token(
            secret, role=NODE, sub="demo-fleet", node_ids=["gpu*"], ttl_s=ttl_s
        )
        client_token = mint_token(secret, role=CLIENT, sub="demo-client", ttl_s=ttl_s)
        admin_token = mint_token(secret, role=ADMIN, sub="demo-operator", ttl_s=ttl_s)
        urls = [hub.url for hub in running]
        print(
            f"nodehub demo: {hubs} hub(s) at {', '.join(urls)}"
            f"{' sharing ' + redis_url if redis_url else ' (local mode)'}; "
            f"{nodes} simulated nodes, profile {profile!r}; {in_flight} jobs in flight "
            f"for {seconds:.0f}s; auth jwt (tokens minted by the demo)"
        )
        _how_to_look(running, admin_token, linger=linger)
        fleets = []
        for i in range(hubs):
            share = nodes // hubs + (1 if i < nodes % hubs else 0)
            fleet = Fleet(
                hub_urls=urls[i:] + urls[:i], nodes=share, seed=seed + i,
                profile=get_profile(profile, time_scale=TIME_SCALE), prefix=f"gpu{i + 1}",
                token=node_token,
            )
            fleets.append(await stack.enter_async_context(fleet))
        for fleet in fleets:
            await fleet.wait_registered(timeout_s=30)
        clients = [
            await stack.enter_async_context(HubClient(url, token=client_token)) for url in urls
        ]
        stats = LoadStats()
        load = asyncio.create_task(
            _client_load(clients, fleets, stats, seconds=seconds, in_flight=in_flight, seed=seed)
        )
        tty = sys.stdout.isatty()
        while not load.done():
            await asyncio.wait({load}, timeout=1.0)
            line = _status_line(stats, running)
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
        if tty:
            print()
        await load
        _summary(stats, running, fleets)
        if linger:
            print(f"\nthe hub(s) keep serving at {', '.join(urls)} (the fleet stays "
                  "connected) until Ctrl-C")
            await asyncio.Event().wait()


def _how_to_look(hubs: list[Hub], admin_token: str, *, linger: bool) -> None:
    """The hubs' consoles, and the commands that look at the first (with the demo's admin
    token)."""
    hub = hubs[0]
    when = "while it runs" if not linger else "while it runs, and after (--linger)"
    for each in hubs:
        print(f"console of {each.config.hub_id}: {each.http_url}/ui#token={admin_token}",
              flush=True)
    print(
        f"\nlook at it {when}, from another terminal:\n"
        f"  export NODEHUB_URL={hub.http_url}\n"
        f"  export NODEHUB_TOKEN={admin_token}\n"
        "  hub nodes; hub jobs; hub stats; hub drain NODE_ID; hub undrain NODE_ID\n"
        f"  curl -s -H \"Authorization: Bearer $NODEHUB_TOKEN\" {hub.http_url}/metrics\n"
        "(an admin token the demo minted with its own random secret: it is good for this "
        "run only)\n"
    )


def _summary(stats: LoadStats, hubs: list[Hub], fleets: list[Fleet]) -> None:
    elapsed = time.monotonic() - stats.started
    print("\nsummary")
    print(f"  jobs finished      {stats.done} in {elapsed:.1f}s ({stats.done / elapsed:.0f}/s)")
    for outcome, count in sorted(stats.outcomes.items()):
        print(f"    {outcome:46s} {count}")
    if stats.rtts_ms:
        print(
            f"  round trip (ms)    p50 {stats.percentile(0.5):.1f}  p99 "
            f"{stats.percentile(0.99):.1f}  mean {statistics.fmean(stats.rtts_ms):.1f}"
        )
    attempts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.attempts.items()))
    print(f"  attempts per job   {attempts}")
    agents = Counter[str]()
    for fleet in fleets:
        agents.update(fleet.stats())
    print(
        "  fleet              " + ", ".join(
            f"{k} {agents[k]}" for k in ("completed", "rejected", "cancelled", "lost", "connects")
            if k in agents
        )
    )
    for hub in hubs:
        jobs = hub.metrics.jobs.values
        print(f"  hub {hub.config.hub_id:12s} jobs by outcome: "
              + ", ".join(f"{k[0]} {int(v)}" for k, v in sorted(jobs.items())))
    print(EXPLAINED.format(impossible=f"{IMPOSSIBLE_SHARE:.0%}"))


EXPLAINED = """
what the outcomes mean
  ok                the job ran on a node and returned its result.
  rejected:<code>   the hub refused the submit: no job was created, nothing ran.
                    no_node (nothing connected serves it): about {impossible} of the demo's
                    submits ask for xx -> yy, a pair no node serves, on purpose, to show
                    the refusal; the others ask for a pair whose only nodes are
                    disconnected at that moment. The answer's `reasons` count why each
                    node did not fit.
  failed:<code>     the job was accepted and ended without a result. attempts_exhausted:
                    every attempt was rejected by its node, crashed or timed out;
                    no_node: its node failed and no other connected node serves the job;
                    timeout: the job's deadline passed; any other code is the node's own
                    error. The "faulty" profile causes these on purpose (rejects, crashes
                    mid-job, slow nodes, disconnects); --no-faults turns it off.
  attempts per job  1 for most; 2 or more means the job failed over to another node."""
