"""`run_node` (the SDK's main loop with a graceful drain) and `JobRejected`, against a real
hub. The examples run it as a real process on SIGTERM (tests/examples);
here the signal is SIGUSR1 sent to this process, or the `stop` event."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from agent_sim import JobContext, JobRejected, NodeAgent, run_node
from hub.app.hub import Hub
from hub.core.messages import Capabilities, LanguagePair
from hub.core.snapshot import DRAINING
from tests.conftest import Net
from tests.support.hubtest import wait_until

CAPS = Capabilities(
    language_pairs=[LanguagePair(src="en", tgt="de")], asr_languages=["en"],
    tts_languages=["de"], max_concurrency=2,
)


class Gate:
    """A handler that holds every job until released; counts what it started."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self, job: JobContext) -> Any:
        self.started += 1
        await self.release.wait()
        return {"by": job.node_id}


def agent(hub: Hub, node_id: str, handler: Any) -> NodeAgent:
    return NodeAgent(node_id=node_id, capabilities=CAPS, hub_urls=[hub.url], handler=handler)


async def test_a_signal_drains_running_jobs_finish(hub: Hub, net: Net) -> None:
    gate = Gate()
    node = agent(hub, "n1", gate)
    runner = asyncio.create_task(run_node(node, signals=(signal.SIGUSR1,)))
    await node.wait_registered(5)
    client = await net.client(hub)
    await client.submitted("r1")
    await wait_until(lambda: gate.started == 1, what="the job running")
    os.kill(os.getpid(), signal.SIGUSR1)
    await wait_until(
        lambda: (s := hub.fleet.snapshot.get("n1")) is not None and s.status == DRAINING,
        what="n1 draining at the hub")
    # Draining: no new job reaches it.
    await client.submit("r2")
    assert (await client.expect("rejected", request_id="r2"))["reasons"] == {"draining": 1}
    assert not runner.done()
    gate.release.set()
    result = await client.expect("result", request_id="r1")
    assert result["ok"] and result["output"] == {"by": "n1"}
    assert await asyncio.wait_for(runner, 5) is True
    await wait_until(lambda: "n1" not in hub.service.registry.registered, what="n1 gone")
    # The handler is removed: SIGUSR1 is no longer ours.
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)


async def test_a_second_signal_stops_at_once(hub: Hub, net: Net) -> None:
    gate = Gate()  # never released
    node = agent(hub, "n1", gate)
    runner = asyncio.create_task(run_node(node, signals=(signal.SIGUSR1,)))
    await node.wait_registered(5)
    client = await net.client(hub)
    await client.submitted("r1")
    await wait_until(lambda: gate.started == 1, what="the job running")
    os.kill(os.getpid(), signal.SIGUSR1)
    await wait_until(
        lambda: (s := hub.fleet.snapshot.get("n1")) is not None and s.status == DRAINING,
        what="n1 draining")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert await asyncio.wait_for(runner, 5) is False
    # The job was not finished by the node: the hub fails it over (here: nowhere to go).
    result = await client.expect("result", request_id="r1")
    assert result["ok"] is False
    assert node.lost == 1


async def test_the_drain_timeout(hub: Hub, net: Net) -> None:
    gate = Gate()  # never released
    node = agent(hub, "n1", gate)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_node(node, stop=stop, signals=(), drain_timeout_s=0.2))
    await node.wait_registered(5)
    client = await net.client(hub)
    await client.submitted("r1")
    await wait_until(lambda: gate.started == 1, what="the job running")
    stop.set()
    assert await asyncio.wait_for(runner, 5) is False
    assert (await client.expect("result", request_id="r1"))["ok"] is False


async def test_a_handler_gives_a_job_back_with_job_rejected(hub: Hub, net: Net) -> None:
    async def refuses(job: JobContext) -> Any:
        raise JobRejected("model not loaded")

    async def serves(job: JobContext) -> Any:
        return {"by": job.node_id}

    first = agent(hub, "a-first", refuses)
    second = agent(hub, "b-second", serves)
    async with first, second:
        await first.wait_registered(5)
        await second.wait_registered(5)
        client = await net.client(hub)
        await client.submitted("r1", preferred_node_id="a-first")
        result = await client.expect("result", request_id="r1")
        assert result["ok"] and result["output"] == {"by": "b-second"}
        assert result["attempts"] == 2
        assert first.rejected == 1 and first.failed == 0 and first.completed == 0
        assert result["node_id"] == "b-second"
