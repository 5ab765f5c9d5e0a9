"""A job's story in the logs: flat JSON lines with the job's fields, lifecycle
events at INFO, one setting to turn them down, human lines that name the node."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from loguru import logger

from hub.app.logs import configure_logging
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_json_lines_tell_a_failed_over_job(
    make_hub: MakeHub, net: Net, log_stream: io.StringIO
) -> None:
    configure_logging("INFO", json=True, hub_id="hub-x", stream=log_stream)
    hub = await make_hub(hub_id="hub-x")
    first = await net.node(hub, "n1", caps(max_concurrency=1))
    second = await net.node(hub, "n2", caps(max_concurrency=1))
    client = await net.client(hub)
    accepted = await client.submitted("req-1")
    job_id = accepted["job_id"]
    taker, other = (first, second) if accepted["node_id"] == "n1" else (second, first)
    await taker.reject(await taker.assigned())
    await other.run_one()
    await client.expect("result", ok=True)

    records = lines(log_stream)
    for record in records:
        assert {"ts", "level", "msg", "hub_id"} <= record.keys(), record
        assert record["ts"].endswith("Z") and record["hub_id"] == "hub-x"
        assert all(not isinstance(v, dict | list) for v in record.values()), record  # flat
    story = [r for r in records if r.get("job_id") == job_id]
    assert [r["event"] for r in story] == [
        "accepted", "assigned", "rejected_by_node", "failover", "assigned", "result",
    ]
    assert all(r["level"] == "INFO" and r["request_id"] == "req-1" for r in story)
    assert [(r["node_id"], r["attempt"]) for r in story] == [
        (taker.node_id, 1), (taker.node_id, 1), (taker.node_id, 1),
        (other.node_id, 2), (other.node_id, 2), (other.node_id, 2),
    ]
    assert story[3]["reason"] == "rejected"
    assert story[-1]["outcome"] == "ok"
    # Session lines carry the node too.
    assert any(r.get("node_id") == "n1" and "registered" in r["msg"] for r in records)


async def test_no_node_and_timeouts_are_logged(
    make_hub: MakeHub, net: Net, log_stream: io.StringIO
) -> None:
    configure_logging("INFO", json=True, stream=log_stream)
    hub = await make_hub(accept_timeout_ms=100, max_attempts=1)
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await client.submit("nobody", "en", "xx")
    await client.expect("rejected", code="no_node")
    accepted = await client.submitted("slow")
    await node.assigned()  # never accepted
    await client.expect("result", ok=False)
    records = lines(log_stream)
    (rejected,) = [r for r in records if r.get("event") == "rejected"]
    assert rejected["request_id"] == "nobody" and rejected["reason"] == "no_node"
    events = [r["event"] for r in records if r.get("job_id") == accepted["job_id"]]
    assert events == ["accepted", "assigned", "timeout", "result"]


@pytest.mark.parametrize("setting", ["DEBUG", "OFF"])
async def test_job_log_level_turns_the_story_down(
    make_hub: MakeHub, net: Net, log_stream: io.StringIO, setting: str
) -> None:
    configure_logging("INFO", json=True, stream=log_stream)
    hub = await make_hub(job_log_level=setting)
    assert not hub.service.home.attempts.log.enabled
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await client.submitted("r1")
    await node.run_one()
    await client.expect("result", ok=True)
    assert not [r for r in lines(log_stream) if "event" in r]
    assert any("registered" in r["msg"] for r in lines(log_stream))  # the rest still logs


async def test_human_lines_name_the_node_and_the_job(
    make_hub: MakeHub, net: Net, log_stream: io.StringIO
) -> None:
    configure_logging("INFO", json=False, hub_id="hub-h", stream=log_stream)
    hub = await make_hub(hub_id="hub-h")
    node = await net.node(hub, "gpu-7")
    client = await net.client(hub)
    accepted = await client.submitted("r1")
    await node.run_one()
    await client.expect("result", ok=True)
    text = log_stream.getvalue()
    registered = next(line for line in text.splitlines() if "node registered" in line)
    assert "node_id=gpu-7" in registered and "| hub-h |" in registered
    result = next(line for line in text.splitlines() if "event=result" in line)
    assert f"job_id={accepted['job_id']}" in result and "node_id=gpu-7" in result
    assert "request_id=r1" in result and "attempt=1" in result


def test_exceptions_become_one_json_line(log_stream: io.StringIO) -> None:
    configure_logging("INFO", json=True, hub_id="h", stream=log_stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.bind(peer="c1").exception("internal error")
    (record,) = lines(log_stream)
    assert record["msg"] == "internal error" and record["peer"] == "c1"
    assert "ValueError: boom" in record["exc"] and record["level"] == "ERROR"


def test_hub_serve_log_json_writes_only_flat_json_lines(tmp_path: Any) -> None:
    """A real `hub serve --log-json` process: every line of its log is one JSON object
    with the hub's id, from the first line to the last."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request
    from pathlib import Path

    from tests.support.redis_server import free_port

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    log_path = tmp_path / "hub.log"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.app.cli", "serve", "--port", str(port), "--hub-id",
             "json-hub", "--log-json"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    text = log_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) >= 2, text
    assert all(r["hub_id"] == "json-hub" and {"ts", "level", "msg"} <= r.keys()
               for r in records)
    assert any("serving" in r["msg"] for r in records) and "hub stopped" in records[-1]["msg"]
    assert os.path.getsize(log_path) < 400 * len(records)  # not loguru's ~1 KB records
