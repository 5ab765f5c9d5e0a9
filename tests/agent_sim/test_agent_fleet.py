"""Fleet and CLI against the scripted hub from test_agent_session (real sockets)."""

from __future__ import annotations

import asyncio

import pytest

from agent_sim import cli
from agent_sim.fleet import Fleet, node_id_for
from hub.core.messages import Drain, JobAccept, JobProgress, JobResult
from tests.agent_sim.test_agent_session import TIMEOUT_S, HubConn, ScriptedHub, assign


def test_node_ids_and_deterministic_capabilities() -> None:
    assert node_id_for("sim", 7) == "sim-00007"
    a = Fleet(hub_urls=["ws://127.0.0.1:1"], nodes=30, seed=5, profile="faulty")
    b = Fleet(hub_urls=["ws://127.0.0.1:1"], nodes=30, seed=5, profile="faulty")
    c = Fleet(hub_urls=["ws://127.0.0.1:1"], nodes=30, seed=6, profile="faulty")
    assert [x.node_id for x in a.agents][:2] == ["sim-00000", "sim-00001"]
    assert [x.capabilities for x in a.agents] == [x.capabilities for x in b.agents]
    assert [x.capabilities for x in a.agents] != [x.capabilities for x in c.agents]
    assert a.slow_nodes == b.slow_nodes


async def test_fleet_registers_serves_and_drains() -> None:
    nodes = 25
    async with ScriptedHub(heartbeat_interval_ms=200) as hub:
        fleet = Fleet(
            hub_urls=[hub.url],
            nodes=nodes,
            seed=1,
            profile="uniform",
            connect_stagger_s=0.0,
            reconnect_min_s=0.01,
            reconnect_max_s=0.1,
        )
        async with fleet:
            await fleet.wait_registered(TIMEOUT_S)
            conns: list[HubConn] = [await hub.next_conn() for _ in range(nodes)]
            assert sorted(c.register.node_id for c in conns if c.register) == [
                f"sim-{i:05d}" for i in range(nodes)
            ]
            for i, conn in enumerate(conns[:5]):
                await conn.send(assign(f"j{i}", payload={"text": "hello world"}))
            for i, conn in enumerate(conns[:5]):
                assert (await conn.expect(JobAccept)).job_id == f"j{i}"
                while True:
                    message = await conn.expect(JobResult | JobProgress)  # type: ignore[arg-type]
                    if isinstance(message, JobResult):
                        break
                assert message.ok
                assert message.output["node_id"] == conn.register.node_id  # type: ignore[union-attr]
                assert message.output["text"] == "[en->zh] hello world"
            stats = fleet.stats()
            assert stats["nodes"] == stats["registered"] == stats["connects"] == nodes
            assert stats["accepted"] == stats["completed"] == 5
            assert await fleet.drain(timeout_s=TIMEOUT_S)
            for conn in conns:
                assert isinstance(await conn.expect(Drain), Drain)
                await conn.wait_closed()
            assert fleet.stats()["registered"] == 0


async def test_cli_runs_for_a_duration_and_prints_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with ScriptedHub() as hub:
        args = cli.build_parser().parse_args(
            ["--hub", hub.url, "--nodes", "3", "--profile", "uniform", "--duration-s", "0.3"]
        )
        line = await asyncio.wait_for(cli.run(args), TIMEOUT_S * 2)
    # How many agents connected within the duration depends on the machine's load.
    assert line.startswith("agent-sim: nodes=3 registered=0 running=0")
    assert "connects=" in line and "disconnects=0" in line and "drained=yes" in line
