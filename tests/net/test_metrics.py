"""`/metrics` read by the ecosystem's own parser (`prometheus_client`), and the metrics
of the metrics: exact numbers, buckets reaching the timeouts, process and build info,
slots per pool, submits by pair, `no_node` per submit, store latency and errors."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.app.hub import Hub
from hub.core.errors import StoreUnavailable
from hub.core.metrics import MAX_PAIR_LABELS, Metrics, number
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, http_get
from tests.support.redis_server import RedisServer


async def scrape(hub: Hub) -> dict[str, Any]:
    """Every family of `/metrics`, parsed by prometheus_client (which raises on any
    malformed line)."""
    status, headers, body = await http_get(hub.http_url, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples if name is None or s.name == name
    }


async def test_exposition_parses_and_has_every_family(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1", caps(pool=2, max_concurrency=3))
    client = await net.client(hub)
    await client.submitted("r1")
    assign = await node.assigned()
    families = await scrape(hub)
    for name in (
        "nodehub_jobs", "nodehub_submits", "nodehub_attempts", "nodehub_no_node",
        "nodehub_nodes_passed_over", "nodehub_pair_submits", "nodehub_store_command_seconds",
        "nodehub_store_errors", "nodehub_job_seconds", "nodehub_queue_wait_seconds",
        "nodehub_pool_slots", "nodehub_pool_busy_slots", "nodehub_build_info",
        "process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
        "process_start_time_seconds",
    ):
        assert name in families, name
    assert samples(families["nodehub_pool_slots"]) == {(("pool", "2"),): 3}
    assert samples(families["nodehub_pool_busy_slots"]) == {(("pool", "2"),): 1}
    (build,) = families["nodehub_build_info"].samples
    assert build.value == 1 and build.labels["mode"] == "local" and build.labels["version"]
    assert samples(families["nodehub_pair_submits"], "nodehub_pair_submits_total") == {
        (("result", "accepted"), ("src", "en"), ("tgt", "de")): 1
    }
    assert families["process_resident_memory_bytes"].samples[0].value > 1_000_000
    await node.accept(assign)
    await node.result(assign, "ok")
    await client.expect("result", ok=True)


async def test_no_node_counts_submits_not_nodes(hub: Hub, net: Net) -> None:
    for i in range(3):
        await net.node(hub, f"n{i}")  # en->de nodes
    client = await net.client(hub)
    await client.submit("r1", "en", "fr")
    await client.expect("rejected", code="no_node")
    families = await scrape(hub)
    # One submit, three nodes passed over.
    assert samples(families["nodehub_no_node"], "nodehub_no_node_total") == {
        (("reason", "lang_pair_unsupported"),): 1
    }
    assert samples(families["nodehub_nodes_passed_over"], "nodehub_nodes_passed_over_total") == {
        (("reason", "lang_pair_unsupported"),): 3
    }
    assert samples(families["nodehub_pair_submits"], "nodehub_pair_submits_total") == {
        (("result", "no_node"), ("src", "en"), ("tgt", "fr")): 1
    }


async def test_job_seconds_buckets_reach_the_job_budget(make_hub: MakeHub) -> None:
    hub = await make_hub(job_timeout_ms=300_000, accept_timeout_ms=2_000, max_attempts=3,
                         queue_timeout_ms=600_000)
    families = await scrape(hub)

    def top_bound(family: str) -> float:
        bounds = [float(s.labels["le"]) for s in families[family].samples
                  if s.name.endswith("_bucket")]
        return max(b for b in bounds if not math.isinf(b))

    assert top_bound("nodehub_job_seconds") >= 3 * 302
    assert top_bound("nodehub_queue_wait_seconds") >= 600


def test_numbers_are_exact() -> None:
    metrics = Metrics()
    metrics.jobs.inc("ok", amount=1_234_568)
    metrics.job_seconds.observe(0.1)
    metrics.protocol_errors.inc("client", 'a "quoted"\nline\\')
    text = metrics.render()
    assert 'nodehub_jobs_total{outcome="ok"} 1234568\n' in text
    assert "e+06" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["nodehub_protocol_errors"].samples
    assert sample.labels["code"] == 'a "quoted"\nline\\'
    assert samples(families["nodehub_jobs"], "nodehub_jobs_total") == {
        (("outcome", "ok"),): 1_234_568
    }
    assert number(2**53 + 1) == str(2**53 + 1)
    assert number(0.1) == "0.1" and number(1e-06) == "1e-06" and number(7.0) == "7"
    assert number(math.inf) == "+Inf" and number(math.nan) == "NaN"


def test_pair_labels_are_bounded() -> None:
    metrics = Metrics()
    for i in range(MAX_PAIR_LABELS + 50):
        metrics.submit("accepted", f"s{i}", "t")
    metrics.submit("accepted", "s0", "t")
    values = metrics.pair_submits.values
    assert len(values) == MAX_PAIR_LABELS + 1
    assert values[("other", "other", "accepted")] == 50
    assert values[("s0", "t", "accepted")] == 2
    # Junk pairs nobody serves cannot take every label.
    junk = Metrics()
    for i in range(1000):
        junk.submit("no_node", f"x{i}", "y")
    junk.submit("accepted", "en", "de")
    assert junk.pair_submits.values[("en", "de", "accepted")] == 1
    assert junk.pair_submits.values[("other", "other", "no_node")] == 1000 - 64


async def test_store_calls_are_timed_and_failures_counted(make_hub: MakeHub, net: Net) -> None:
    redis_server = RedisServer()  # its own: this test stops it
    redis_server.start()
    try:
        await _store_metrics(make_hub, redis_server, net)
    finally:
        redis_server.close()


async def _store_metrics(make_hub: MakeHub, redis_server: RedisServer, net: Net) -> None:
    hub = await make_hub(deployment_mode="cross_instance", redis_url=redis_server.url,
                         redis_prefix=f"m-{uuid.uuid4().hex[:8]}")
    await net.node(hub, "n1")
    client = await net.client(hub)
    await client.submitted("r1")
    families = await scrape(hub)
    counts = samples(
        families["nodehub_store_command_seconds"], "nodehub_store_command_seconds_count"
    )
    assert counts[(("op", "bind_requests"),)] >= 1
    assert counts[(("op", "claim_nodes"),)] >= 1
    assert (("op", "read_inbox"),) not in counts  # blocks on purpose: not timed
    # Redis goes away: a failing call is counted by operation and kind.
    redis_server.close()
    with pytest.raises(StoreUnavailable):
        await hub.store.load_job("nope")
    families = await scrape(hub)
    errors = samples(families["nodehub_store_errors"], "nodehub_store_errors_total")
    assert errors.get((("kind", "unavailable"), ("op", "load_job")), 0) >= 1
