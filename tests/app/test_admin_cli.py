"""The operator's CLI against a real hub over its real port: `hub nodes`,
`hub jobs`, `hub job`, `hub drain`, `hub undrain`, `hub cancel`, `hub stats`; tables and
`--json`, the token, one-line errors with exit status 2 or 1.

The commands block (urllib), so they run in a thread while the test's event loop
serves the hub."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.app.cli import main
from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.auth import SECRET, token
from tests.support.hubtest import caps
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


async def hub_cmd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_nodes_pages_through_every_node(
    hub: Hub, net: Net, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.app.admin_cli.PAGE", 2)  # 5 nodes: three pages
    for i in range(5):
        await net.node(hub, f"gpu-{i}", caps([("en", "de"), ("en", "fr")], pool=i % 2))
    status, out, err = await hub_cmd(capsys, "nodes", "--url", hub.url, "--json")
    assert status == 0, err
    assert [n["node_id"] for n in json.loads(out)] == [f"gpu-{i}" for i in range(5)]
    status, out, _ = await hub_cmd(capsys, "nodes", "--url", hub.http_url, "--pool", "1")
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "HUB", "POOL", "STATUS", "RUNNING", "MAX", "PAIRS",
                                "VERSION"]
    assert [line.split()[0] for line in lines[1:-1]] == ["gpu-1", "gpu-3"]
    assert "en>de,en>fr" in lines[1] and lines[-1] == "2 node(s)"


async def test_drain_undrain_jobs_job_cancel_stats(
    hub: Hub, net: Net, capsys: pytest.CaptureFixture[str]
) -> None:
    node = await net.node(hub, "n1", caps(max_concurrency=1))
    client = await net.client(hub)
    accepted = await client.submitted("req-a")
    await node.assigned()
    await client.submit("req-b", queue_timeout_ms=10_000)
    queued = await client.expect("accepted", queued=True)

    status, out, _ = await hub_cmd(capsys, "jobs", "--url", hub.url)
    assert status == 0
    rows = [line.split() for line in out.splitlines()[1:-1]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (accepted["job_id"], "active", "n1"), (queued["job_id"], "queued", "-")
    ]
    status, out, _ = await hub_cmd(capsys, "jobs", "--url", hub.url, "--state", "queued",
                                   "--json")
    assert [j["job_id"] for j in json.loads(out)] == [queued["job_id"]]
    status, out, _ = await hub_cmd(capsys, "job", accepted["job_id"], "--url", hub.url)
    assert status == 0 and f"job_id       {accepted['job_id']}" in out
    assert "request_id   req-a" in out and "attempts" in out

    status, out, _ = await hub_cmd(capsys, "cancel", queued["job_id"], "--url", hub.url)
    assert (status, out.strip()) == (0, f"job {queued['job_id']}: cancelled")
    result = await client.expect("result", ok=False, job_id=queued["job_id"])
    assert result["error"]["code"] == "cancelled"

    status, out, _ = await hub_cmd(capsys, "drain", "n1", "--url", hub.url)
    assert (status, out.strip()) == (0, "node n1: draining")
    assert hub.service.registry.registered["n1"].draining
    status, out, _ = await hub_cmd(capsys, "stats", "--url", hub.url)
    assert "nodes    online 0  draining 1  offline 0" in out
    assert "slots    total 1  busy 1" in out and "jobs     active 1  queued 0" in out
    status, out, _ = await hub_cmd(capsys, "undrain", "n1", "--url", hub.url, "--json")
    assert status == 0 and json.loads(out)["action"] == "undrain"
    assert not hub.service.registry.registered["n1"].draining


async def test_errors_are_one_line_with_their_exit_status(
    make_hub: MakeHub, net: Net, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = await make_hub(auth="jwt", jwt_secret=SECRET)
    status, out, err = await hub_cmd(capsys, "nodes", "--url", hub.url)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "401 unauthorized" in err and "--token" in err
    status, _, err = await hub_cmd(capsys, "stats", "--url", hub.url, "--token",
                                   token("client"))
    assert status == 2 and err.count("\n") == 1 and "403 forbidden" in err
    admin = token("admin")
    status, _, err = await hub_cmd(capsys, "drain", "ghost", "--url", hub.url, "--token", admin)
    assert status == 1 and err.strip() == (
        "hub drain: 404 unknown_node: no node ghost in the fleet"
    )
    status, _, err = await hub_cmd(capsys, "cancel", "x.y.1", "--url", hub.url,
                                   "--token", admin)
    assert status == 1 and "404 unknown_job" in err
    status, out, _ = await hub_cmd(capsys, "stats", "--url", hub.url, "--token", admin,
                                   "--json")
    assert status == 0 and json.loads(out)["nodes"]["online"] == 0


def test_unreachable_hub_and_env_settings() -> None:
    """A real `hub` process: the URL and token from the environment; an unreachable hub
    is one line and exit status 2."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NODEHUB_URL": url,
           "NODEHUB_TOKEN": "t"}
    proc = subprocess.run(
        [sys.executable, "-m", "hub.app.cli", "nodes"], cwd=ROOT, capture_output=True,
        text=True, timeout=60, env=env, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"hub nodes: cannot reach the hub at {url}")
    assert "Traceback" not in proc.stderr
