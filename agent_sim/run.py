"""`run_node`: serve jobs until the process is told to stop, then drain gracefully.

What a node's `main` needs (docs/sdk.md): start the agent, serve until
SIGTERM or SIGINT (a deploy, `kubectl delete pod`, Ctrl-C), then **drain**:
send `drain` (the hub sends no new jobs; any `job_assign` already on its way
is rejected with reason `draining` and fails over to another node), let the
running jobs finish, close. A second signal, or `drain_timeout_s`, stops at
once: the jobs still running are then cancelled and the hub fails them over
(`node_lost`).

    async def main() -> None:
        agent = NodeAgent(node_id=..., capabilities=..., hub_urls=[...], handler=...)
        await run_node(agent)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable

from loguru import logger

from agent_sim.agent import NodeAgent

__all__ = ["DRAIN_TIMEOUT_S", "run_node"]

DRAIN_TIMEOUT_S = 30.0
"""How long running jobs may finish after the first signal (the hub's own
`drain_timeout_ms` default is the same 30 s)."""


async def run_node(
    agent: NodeAgent,
    *,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    stop: asyncio.Event | None = None,
) -> bool:
    """Start `agent` (if it is not started yet), serve until one of `signals` arrives
    (or `stop` is set), then drain. Returns True when every running job finished
    within `drain_timeout_s`, False when some had to be cancelled (timeout or a
    second signal). The signal handlers are removed on return."""
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    hurry = asyncio.Event()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("{}: {} again: stopping now", agent.node_id, sig.name)
            hurry.set()
        else:
            logger.info("{}: {}: draining (again to stop now)", agent.node_id, sig.name)
            stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
        installed.append(sig)
    try:
        with contextlib.suppress(RuntimeError):  # started by the caller already
            await agent.start()
        await stop.wait()
        drain = asyncio.create_task(agent.drain(timeout_s=drain_timeout_s))
        hurried = asyncio.create_task(hurry.wait())
        await asyncio.wait({drain, hurried}, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        if drain.done():
            drained = drain.result()
        else:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            drained = False
        await agent.aclose()
        logger.info(
            "{}: stopped ({})", agent.node_id,
            "every job finished" if drained else "unfinished jobs were cancelled",
        )
        return drained
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
