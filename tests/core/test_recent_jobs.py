"""`RecentJobs`: the console's last minutes, checked against exact figures."""

from __future__ import annotations

import math
import random

from hub.core.recent_jobs import (
    MAX_REASON_CHARS,
    MAX_REASONS,
    OTHER,
    RecentJobs,
    quantiles_ms,
)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_points_totals_and_quantiles() -> None:
    recent = RecentJobs(bucket_s=2.0, buckets=10)
    rng = random.Random(5)
    latencies: list[float] = []
    # 3 buckets of jobs: t in [100, 106)
    for i in range(600):
        now = 100.0 + i * 0.01
        seconds = rng.lognormvariate(math.log(0.004), 0.8)
        latencies.append(seconds)
        recent.finished(now, code=None, seconds=seconds)
    recent.finished(104.5, code="timeout", seconds=None)
    recent.finished(104.6, code="model_oom", seconds=12.0)  # a failure's time is not a round trip
    recent.rejected(105.0, "no_node")
    recent.rejected(105.1, "no_node")
    view = recent.view(107.0)  # bucket 53 (106..108) is current: not a point yet
    series = view["series"]
    assert len(series["ago_s"]) == 9  # buckets - 1 complete ones
    assert series["ago_s"][-1] == 1.0 and series["ago_s"][0] == 17.0  # 107 - 106, 107 - 90
    # Buckets 50, 51, 52 (100..106) are the last three points.
    assert series["ok"][-3:] == [200, 200, 200]
    assert series["finished"][-3:] == [200, 200, 202]
    assert series["rejected"][-3:] == [0, 0, 2]
    assert series["finished"][:-3] == [0] * 6 and series["p50_ms"][:-3] == [None] * 6
    assert view["finished"] == 602 and view["ok"] == 600 and view["finished_total"] == 602
    assert view["failed"] == {"model_oom": 1, "timeout": 1}
    assert view["rejected"] == {"no_node": 2}
    for q, key in ((0.5, "p50_ms"), (0.99, "p99_ms")):
        want = exact(latencies, q) * 1000
        assert abs(view[key] - want) / want < 0.05, (key, view[key], want)
    # A point's quantiles are its own bucket's.
    first = latencies[:200]
    assert abs(series["p50_ms"][-3] - exact(first, 0.5) * 1000) / (exact(first, 0.5) * 1000) < 0.05


def test_old_buckets_leave_the_window() -> None:
    recent = RecentJobs(bucket_s=1.0, buckets=5)
    recent.finished(10.2, code=None, seconds=0.01)
    recent.rejected(10.3, "overloaded")
    assert recent.view(12.0)["finished"] == 1
    assert recent.view(14.9)["ok"] == 1  # bucket 10 is still one of 10..14
    later = recent.view(15.0)
    assert later["finished"] == 0 and later["ok"] == 0 and later["rejected"] == {}
    assert later["p50_ms"] is None and sum(later["series"]["finished"]) == 0
    assert later["finished_total"] == 1  # since start: never forgotten
    # A new job far later drops the old buckets from memory too.
    recent.finished(100.0, code=None, seconds=0.01)
    assert len(recent._buckets) == 1


def test_reasons_are_bounded() -> None:
    recent = RecentJobs()
    for i in range(MAX_REASONS + 10):
        recent.finished(1.0, code=f"node-code-{i}", seconds=None)
    recent.finished(1.0, code="x" * 500, seconds=None)
    failed = recent.view(1.5)["failed"]
    assert len(failed) == MAX_REASONS + 1  # + "other"
    assert failed[OTHER] == 11  # ten new codes and the long one past the cap
    recent2 = RecentJobs()
    recent2.finished(1.0, code="y" * 500, seconds=None)
    assert list(recent2.view(1.5)["failed"]) == ["y" * MAX_REASON_CHARS]


def test_quantiles_of_an_empty_histogram() -> None:
    assert quantiles_ms({}, (0.5, 0.99)) == [None, None]


def test_extreme_latencies_stay_in_range() -> None:
    recent = RecentJobs()
    recent.finished(1.0, code=None, seconds=0.0)
    recent.finished(1.0, code=None, seconds=10**9)
    view = recent.view(1.0)
    assert view["p50_ms"] is not None and view["p50_ms"] < 0.02  # the first bin: ~10 us
    assert view["p99_ms"] is not None and view["p99_ms"] > 3_600_000  # the last: hours
