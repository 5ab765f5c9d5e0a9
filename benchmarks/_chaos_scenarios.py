"""The chaos benchmark's named scenarios (see chaos.py).

Each runs in a fresh world (its own redis-server, two hub processes `a` and
`b`, node fleets in their own processes), drives a load through `HubClient`s
that record every submit in a `Ledger`, does its faults, waits for every
answer, and returns the ledger's summary. Sizes come from `Sizes` (`--quick`
is small). Random choices (which node, when) come from the seeded `rng`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from _chaos_ledger import Ledger
from _chaos_world import World

from agent_sim.client import HubClient

SETTLE_S = 60.0
"""How long a scenario waits for its last answers before counting the rest unanswered."""


@dataclass(frozen=True)
class Sizes:
    jobs: int
    """Submits of the load scenarios."""
    finished: int
    """home_kill: jobs finished in the dead home's inbox."""
    running: int
    """home_kill: jobs still running when the home dies."""
    restart_jobs: int
    rate: float
    """Submits per second of a paced load."""


TINY = Sizes(jobs=40, finished=20, running=5, restart_jobs=10, rate=80)
"""The seeded run of the test suite (tests/cross/test_chaos.py)."""
QUICK = Sizes(jobs=150, finished=60, running=10, restart_jobs=30, rate=100)
FULL = Sizes(jobs=2000, finished=600, running=100, restart_jobs=400, rate=300)

Scenario = Callable[[World, Sizes, random.Random], Awaitable[dict[str, Any]]]


async def paced(
    ledger: Ledger, clients: list[HubClient], count: int, rate: float, tag: str,
    *, at: dict[int, Callable[[], Awaitable[None]]] | None = None, ms: float | None = None,
) -> None:
    """`count` submits at `rate` per second, round robin over `clients`; `at[i]` runs
    right after submit number i (a fault in the middle of the load)."""
    started = time.monotonic()
    for i in range(count):
        await ledger.submit(clients[i % len(clients)], f"{tag}-{i}", ms=ms)
        if at and i in at:
            await at[i]()
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for anything


async def finish(
    world: World, ledger: Ledger, name: str, started: float, clients: list[HubClient]
) -> dict[str, Any]:
    """Wait for every answer, then for every slot to be free; the summary."""
    await ledger.settle(SETTLE_S)
    seconds = time.monotonic() - started
    leaked = await asyncio.to_thread(_leaked_slots, world)
    for client in clients:
        await client.aclose()
    return ledger.summary(name, world.collect(), leaked, seconds)


def _leaked_slots(world: World, wait_s: float = 10.0) -> int:
    """Slots still held once everything is answered: hub-side busy slots plus jobs the
    nodes still hold (polled for up to `wait_s`: a revoke may still be in flight)."""
    deadline = time.monotonic() + wait_s
    while True:
        busy = sum(
            int(world.hub_metric(name, "nodehub_busy_slots"))
            for name, hub in world.hubs.items() if hub.child is not None
        )
        held = sum(s["running"] for s in world.node_stats().values())
        if busy + held == 0 or time.monotonic() > deadline:
            return busy + held
        time.sleep(0.1)


async def clients_for(world: World, *orders: list[str], resubmit: bool = True) -> list[HubClient]:
    clients = []
    for order in orders:
        client = HubClient([world.hubs[h].url for h in order], resubmit=resubmit,
                           reconnect_timeout_s=30)
        await client.__aenter__()
        clients.append(client)
    return clients


async def until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def sees_nodes(world: World, hub: str, count: int) -> bool:
    return len(world.hub_json(hub, "/v1/nodes")) >= count


# --- the scenarios ---------------------------------------------------------------------


async def no_fault(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """The baseline: node_kill's world and load, without the fault."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=2, slots=20, service_ms=200)
    world.start_nodes("y", ["b", "a"], count=2, slots=20, service_ms=200)
    await until(lambda: sees_nodes(world, "a", 4) and sees_nodes(world, "b", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()
    await paced(ledger, clients, sizes.jobs, sizes.rate, "nf")
    return await finish(world, ledger, "no_fault", started, clients)


async def node_kill(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """A node process SIGKILLed mid-job: its jobs fail over to the others."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=2, slots=20, service_ms=200)
    world.start_nodes("y", ["b", "a"], count=2, slots=20, service_ms=200)
    await until(lambda: sees_nodes(world, "a", 4) and sees_nodes(world, "b", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()
    victim = rng.choice(["x", "y"])

    async def kill() -> None:
        await asyncio.to_thread(world.kill_nodes, victim)

    await paced(ledger, clients, sizes.jobs, sizes.rate, "nk", at={sizes.jobs // 3: kill})
    return await finish(world, ledger, "node_kill", started, clients)


async def node_flap(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Nodes leave their hub and come back on the other, again and again, under load."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=4, slots=20, service_ms=50, flap_ms=150,
                      seed=rng.randrange(1000))
    await until(lambda: sees_nodes(world, "a", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()
    world.command("x", "flap on")
    await paced(ledger, clients, sizes.jobs, sizes.rate, "nf")
    await ledger.settle(SETTLE_S)
    world.command("x", "flap off")
    await asyncio.sleep(0.5)  # the last flap's registration lands before counting slots
    return await finish(world, ledger, "node_flap", started, clients)


async def home_kill(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """The jobs' home SIGKILLed: results of jobs that finish after it died wait in its
    inbox, other jobs still run; every request is then resubmitted on the other hub."""
    world.start_hub("a")
    world.start_hub("b")
    total = sizes.finished + sizes.running
    world.start_nodes("x", ["b"], count=4, slots=total // 4 + 1, service_ms=20)
    await until(lambda: sees_nodes(world, "a", 4), "hub a to see the fleet")
    # The client resubmits on hub b by itself when hub a dies (the SDK's failover);
    # after that, every request is resubmitted once more by another client.
    (home,) = await clients_for(world, ["a", "b"])
    ledger = Ledger()
    started = time.monotonic()
    keys = [f"hk-{i}" for i in range(total)]
    for i, key in enumerate(keys):
        await ledger.submit(home, key, hold="fin" if i < sizes.finished else "run")
    await until(
        lambda: sum(s["running"] for s in world.node_stats().values()) == total,
        "every job to run",
    )
    await asyncio.to_thread(world.kill_hub, "a")
    await asyncio.to_thread(world.release, "fin")  # finished after their home died
    # Hub b buries hub a: its jobs still running are revoked (nobody awaits them).
    await until(
        lambda: sum(s["cancelled"] for s in world.node_stats().values()) >= sizes.running,
        "the running jobs to be revoked",
    )
    await asyncio.to_thread(world.release, "run")  # run again, they run through
    (back,) = await clients_for(world, ["b"])
    for key in keys:
        await ledger.submit(back, key)
    return await finish(world, ledger, "home_kill", started, [home, back])


async def owner_kill(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """The hub owning the nodes SIGKILLed under load: its nodes reconnect to the other,
    its jobs' attempts fail over."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["b", "a"], count=4, slots=20, service_ms=100)
    await until(lambda: sees_nodes(world, "a", 4), "hub a to see the fleet")
    clients = await clients_for(world, ["a", "b"])
    ledger = Ledger()
    started = time.monotonic()

    async def kill() -> None:
        await asyncio.to_thread(world.kill_hub, "b")

    await paced(ledger, clients, sizes.jobs, sizes.rate, "ok", at={sizes.jobs // 3: kill})
    return await finish(world, ledger, "owner_kill", started, clients)


async def hub_restart(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """The jobs' home SIGKILLed and restarted at once under the same id: the jobs still
    running on the other hub's nodes are recognised by its new run."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["b"], count=2, slots=sizes.restart_jobs, service_ms=20)
    await until(lambda: sees_nodes(world, "a", 2), "hub a to see the fleet")
    (first,) = await clients_for(world, ["a", "b"])
    ledger = Ledger()
    started = time.monotonic()
    keys = [f"hr-{i}" for i in range(sizes.restart_jobs)]
    for key in keys:
        await ledger.submit(first, key, hold="r")
    await until(
        lambda: sum(s["running"] for s in world.node_stats().values()) == len(keys),
        "every job to run",
    )
    await asyncio.to_thread(world.kill_hub, "a")
    await asyncio.to_thread(world.start_hub, "a")  # same id, same port, a new run
    (again,) = await clients_for(world, ["a", "b"])
    for key in keys:
        await ledger.submit(again, key)
    await asyncio.to_thread(world.release, "r")
    return await finish(world, ledger, "hub_restart", started, [first, again])


async def redis_kill(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Redis SIGKILLed under load and restarted empty a second later; submits refused
    meanwhile are submitted again once it is back."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=2, slots=20, service_ms=50)
    world.start_nodes("y", ["b", "a"], count=2, slots=20, service_ms=50)
    await until(lambda: sees_nodes(world, "a", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()

    async def outage() -> None:
        await asyncio.to_thread(world.kill_redis)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(world.start_redis)

    background = {sizes.jobs // 3: lambda: _background(outage())}  # the load goes on
    await paced(ledger, clients, sizes.jobs, sizes.rate, "rk", at=background)
    await _all_background()
    await retry_refused(world, ledger, clients, sizes.rate)
    return await finish(world, ledger, "redis_kill", started, clients)


async def redis_pause(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Redis frozen for 5 s (SIGSTOP, SIGCONT) under load: bindings whose replies never
    came are refused, and answered for real when submitted again."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=2, slots=20, service_ms=50)
    world.start_nodes("y", ["b", "a"], count=2, slots=20, service_ms=50)
    await until(lambda: sees_nodes(world, "a", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()

    async def freeze() -> None:
        world.pause_redis()
        await asyncio.sleep(5.0)
        world.resume_redis()

    pause = {sizes.jobs // 3: lambda: _background(freeze())}  # the load goes on
    await paced(ledger, clients, sizes.jobs, sizes.rate, "rp", at=pause)
    await _all_background()
    await ledger.settle(SETTLE_S)
    await retry_refused(world, ledger, clients, sizes.rate)
    return await finish(world, ledger, "redis_pause", started, clients)


async def _rolling_restart(
    world: World, sizes: Sizes, name: str, prefix: str, service_ms: int, pace: float
) -> dict[str, Any]:
    """Both hubs restarted one after the other under load (SIGTERM: drain, then start
    again under the same id), a submit every `pace / rate` s: nothing may fail."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=3, slots=20, service_ms=service_ms)
    world.start_nodes("y", ["b", "a"], count=3, slots=20, service_ms=service_ms)
    await until(lambda: sees_nodes(world, "a", 6) and sees_nodes(world, "b", 6), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()

    async def restarts() -> None:
        await asyncio.sleep(0.5)
        for hub in ("a", "b"):
            await asyncio.to_thread(world.drain_hub, hub)
            await asyncio.to_thread(world.start_hub, hub)
            await asyncio.sleep(0.5)

    # The load runs from before the first restart until after the second.
    rolling = asyncio.create_task(restarts())
    i = 0
    while not rolling.done():
        await ledger.submit(clients[i % len(clients)], f"{prefix}-{i}")
        i += 1
        await asyncio.sleep(pace / sizes.rate)  # pacing the load, not waiting for anything
    await rolling
    return await finish(world, ledger, name, started, clients)


async def rolling_restart(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Both hubs restarted one after the other under load: nothing may fail."""
    return await _rolling_restart(world, sizes, "rolling_restart", "rr", 200, 2)


async def _hub_freeze(
    world: World, sizes: Sizes, rng: random.Random, name: str, freeze_s: float,
    **timers: Any,
) -> dict[str, Any]:
    """Hub a frozen (SIGSTOP, then SIGCONT) under a cross-hub load: nodes on both hubs,
    clients on both. Its jobs and its nodes' jobs must each run to their end once."""
    world.start_hub("a", **timers)
    world.start_hub("b", **timers)
    world.start_nodes("x", ["a", "b"], count=2, slots=20, service_ms=300)
    world.start_nodes("y", ["b", "a"], count=2, slots=20, service_ms=300)
    await until(lambda: sees_nodes(world, "a", 4) and sees_nodes(world, "b", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()

    async def freeze() -> None:
        world.pause_hub("a")
        await asyncio.sleep(freeze_s)
        world.resume_hub("a")

    pause = {sizes.jobs // 3: lambda: _background(freeze())}  # the load goes on
    await paced(ledger, clients, sizes.jobs, sizes.rate, name[:3], at=pause)
    await _all_background()
    await ledger.settle(SETTLE_S)
    await retry_refused(world, ledger, clients, sizes.rate)
    return await finish(world, ledger, name, started, clients)


async def hub_freeze_short(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Hub a frozen 1.5 s: past `hub_timeout_ms` (1 s here), within `node_timeout_ms`."""
    return await _hub_freeze(world, sizes, rng, "hub_freeze_short", 1.5)


async def hub_freeze(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Hub a frozen 5 s: the other declares it dead, reaps its inbox and takes its
    nodes; it wakes holding jobs, nodes and results nobody may run twice."""
    return await _hub_freeze(world, sizes, rng, "hub_freeze", 5.0)


async def hub_freeze_defaults(
    world: World, sizes: Sizes, rng: random.Random
) -> dict[str, Any]:
    """Hub a frozen 5 s with the default timers (`hub_timeout_ms` 3 s, `node_timeout_ms`
    15 s, heartbeats every 5 s): excluded, not buried."""
    return await _hub_freeze(
        world, sizes, rng, "hub_freeze_defaults", 5.0, heartbeat_interval_ms=5000,
        node_timeout_ms=15000, hub_timeout_ms=3000, accept_timeout_ms=5000,
    )


async def hub_freeze_buried_defaults(
    world: World, sizes: Sizes, rng: random.Random
) -> dict[str, Any]:
    """Hub a frozen 36 s with the default timers: past its presence (`node_timeout_ms`
    15 s) and three heartbeats, so the other hub buries it and reaps its inbox; then it
    wakes. Long: the benchmark runs it, the test suite does not (`LONG`)."""
    return await _hub_freeze(
        world, sizes, rng, "hub_freeze_buried_defaults", 36.0, heartbeat_interval_ms=5000,
        node_timeout_ms=15000, hub_timeout_ms=3000, accept_timeout_ms=5000,
    )


async def rolling_restart_long(
    world: World, sizes: Sizes, rng: random.Random
) -> dict[str, Any]:
    """A rolling restart with jobs of 2 s, longer than `hub_timeout_ms` / 3: every
    submit answered, none failed (no `no_node`, no `hub_shutdown`)."""
    return await _rolling_restart(world, sizes, "rolling_restart_long", "rl", 2000, 4)


async def drain_then_resubmit(
    world: World, sizes: Sizes, rng: random.Random
) -> dict[str, Any]:
    """Hub a drains (SIGTERM, `drain_timeout_ms` 1 s) holding two 3 s jobs running on its
    two 1-slot nodes and three waiting; their client resubmits the same request ids on
    hub b: each must end with its result, none with `hub_shutdown`."""
    world.start_hub("a", drain_timeout_ms=1000)
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=2, slots=1, service_ms=3000)
    await until(lambda: sees_nodes(world, "b", 2), "hub b to see the fleet")
    (on_a,) = await clients_for(world, ["a"], resubmit=False)
    ledger = Ledger()
    started = time.monotonic()
    keys = [f"dr-{i}" for i in range(5)]
    for key in keys:
        await ledger.submit(on_a, key)
    await until(
        lambda: sum(s["running"] for s in world.node_stats().values()) == 2, "two to run"
    )
    await asyncio.to_thread(world.drain_hub, "a")
    await asyncio.sleep(0.5)  # as the issue tried it: the resubmit half a second later
    (on_b,) = await clients_for(world, ["b"])
    first = list(ledger.records)
    ledger.records.clear()  # the resubmits' answers are what counts
    for key in keys:
        await ledger.submit(on_b, key)
    summary = await finish(world, ledger, "drain_then_resubmit", started, [on_a, on_b])
    summary["first_answers"] = sorted(
        str(getattr(r.handle.result.result(), "error", None) or "ok")
        for r in first if r.handle.result.done()
    )
    return summary


async def redis_freeze_15s(world: World, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Redis frozen 15 s (SIGSTOP, SIGCONT) with nodes on both hubs: afterwards every hub
    sees every node again (presence healed), and the load goes through."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["a", "b"], count=2, slots=20, service_ms=50)
    world.start_nodes("y", ["b", "a"], count=2, slots=20, service_ms=50)
    await until(lambda: sees_nodes(world, "a", 4) and sees_nodes(world, "b", 4), "the fleet")
    clients = await clients_for(world, ["a", "b"], ["b", "a"])
    ledger = Ledger()
    started = time.monotonic()
    await paced(ledger, clients, sizes.jobs // 3, sizes.rate, "rf")
    world.pause_redis()
    await asyncio.sleep(15.0)
    world.resume_redis()
    # Within the heartbeats after the store answers, both hubs see all four nodes.
    await until(lambda: sees_nodes(world, "a", 4) and sees_nodes(world, "b", 4),
                "every hub to see every node again", timeout_s=10.0)
    await ledger.settle(SETTLE_S)
    await retry_refused(world, ledger, clients, sizes.rate)
    await paced(ledger, clients, sizes.jobs // 3, sizes.rate, "rg")
    return await finish(world, ledger, "redis_freeze_15s", started, clients)


async def same_request_two_hubs(
    world: World, sizes: Sizes, rng: random.Random
) -> dict[str, Any]:
    """Each request id submitted on both hubs at the same instant, half of them for a
    pair no node serves: one job (or one refusal) per request, an answer per submit."""
    world.start_hub("a")
    world.start_hub("b")
    world.start_nodes("x", ["b"], count=2, slots=100, service_ms=20)
    await until(lambda: sees_nodes(world, "a", 2), "hub a to see the fleet")
    on_a, on_b = await clients_for(world, ["a"], ["b"], resubmit=False)
    ledger = Ledger()
    started = time.monotonic()
    for i in range(sizes.jobs):
        key = f"sr-{i}"
        tgt = "zh" if i % 2 else "fr"  # nobody serves en -> fr
        await asyncio.gather(
            ledger.submit(on_a, key, tgt=tgt), ledger.submit(on_b, key, tgt=tgt)
        )
        if i % 20 == 19:
            await asyncio.sleep(0.01)  # pacing the load, not waiting for anything
    return await finish(world, ledger, "same_request_two_hubs", started, [on_a, on_b])


async def retry_refused(
    world: World, ledger: Ledger, clients: list[HubClient], rate: float
) -> None:
    """Submit again (same request ids, paced, once the store answers) what was refused
    `store_unavailable`: each gets its real answer."""
    await ledger.settle(SETTLE_S)
    refused = ledger.rejected_with("store_unavailable")
    if not refused:
        return
    await until(lambda: all(world.http_status(h, "/readyz") == 200 for h in world.hubs.values()),
                "the hubs to be ready again")
    started = time.monotonic()
    for i, handle in enumerate(refused):
        await ledger.submit(clients[i % len(clients)], handle.request_id)
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for anything


_background_tasks: set[asyncio.Task[None]] = set()


async def _background(coro: Awaitable[None]) -> None:
    """Start a fault that takes time (an outage) without holding the load up."""
    task = asyncio.ensure_future(coro)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)


async def _all_background() -> None:
    """Wait for the background faults to be over (re-raising what broke in them)."""
    while _background_tasks:
        await asyncio.gather(*_background_tasks)


BASELINE = "no_fault"

SCENARIOS: dict[str, Scenario] = {
    BASELINE: no_fault,
    "node_kill": node_kill,
    "node_flap": node_flap,
    "home_kill": home_kill,
    "owner_kill": owner_kill,
    "hub_restart": hub_restart,
    "redis_kill": redis_kill,
    "redis_pause": redis_pause,
    "rolling_restart": rolling_restart,
    "same_request_two_hubs": same_request_two_hubs,
    "hub_freeze_short": hub_freeze_short,
    "hub_freeze": hub_freeze,
    "hub_freeze_defaults": hub_freeze_defaults,
    "rolling_restart_long": rolling_restart_long,
    "drain_then_resubmit": drain_then_resubmit,
    "redis_freeze_15s": redis_freeze_15s,
    "hub_freeze_buried_defaults": hub_freeze_buried_defaults,
}
LONG = frozenset({"hub_freeze_buried_defaults"})
"""Scenarios too long for the test suite (the benchmark runs every one)."""
