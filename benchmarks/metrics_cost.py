"""What metrics cost per job: the hub's hand-written `hub/core/metrics.py` against
`prometheus_client` (the ecosystem's library), measured in the same run, same process.

One "job" is what the hub observes for an ordinary successful job: a submit
counted (total and by language pair), the selection timed, the attempt counted
accepted and ok, the dispatch and the job timed, the job counted by outcome
(8 observations). Variants:

- `hand-written`: `Metrics` as the hub uses it;
- `prometheus_client`: the same metrics as `prometheus_client` Counters and
  Histograms, label children looked up per call (`.labels(...)`, as code that
  does not cache them does);
- `prometheus_client, cached children`: label children looked up once (the best
  a careful integration can do; it cannot cache the free-text pair labels).

Also a scrape: rendering these metrics (after the run) in each library.
Each figure is the best of `--repeats` timings of `--n` jobs (the best, not the
mean: the machine is shared and noisy).

Usage: python benchmarks/metrics_cost.py [--n 100000] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PCounter
from prometheus_client import Histogram as PHistogram

from hub.core.metrics import DEFAULT_BUCKETS, Metrics, buckets_up_to

PAIRS = [("en", "de"), ("en", "fr"), ("de", "en"), ("en", "zh"), ("ja", "en")]
JOB_BUCKETS = buckets_up_to(906.0)


def hand_written() -> tuple[Callable[[int], None], Callable[[], str]]:
    metrics = Metrics()

    def job(i: int) -> None:
        src, tgt = PAIRS[i % 5]
        metrics.submit("accepted", src, tgt)
        metrics.selection_seconds.observe(3e-6)
        metrics.attempts.inc("accepted")
        metrics.attempts.inc("ok")
        metrics.dispatch_seconds.observe(2e-4)
        metrics.job_seconds.observe(0.8)
        metrics.jobs.inc("ok")

    return job, metrics.render


def library(cached: bool) -> tuple[Callable[[int], None], Callable[[], str]]:
    registry = CollectorRegistry(auto_describe=False)
    submits = PCounter("nodehub_submits", "Submits by result.", ["result"], registry=registry)
    pairs = PCounter("nodehub_pair_submits", "By pair.", ["src", "tgt", "result"],
                     registry=registry)
    attempts = PCounter("nodehub_attempts", "Attempts.", ["outcome"], registry=registry)
    jobs = PCounter("nodehub_jobs", "Jobs.", ["outcome"], registry=registry)
    selection = PHistogram("nodehub_selection_seconds", "Selection.", registry=registry,
                           buckets=DEFAULT_BUCKETS)
    dispatch = PHistogram("nodehub_dispatch_seconds", "Dispatch.", registry=registry,
                          buckets=DEFAULT_BUCKETS)
    job_seconds = PHistogram("nodehub_job_seconds", "Job.", registry=registry,
                             buckets=JOB_BUCKETS)

    if cached:
        accepted = submits.labels("accepted")
        att_accepted, att_ok = attempts.labels("accepted"), attempts.labels("ok")
        jobs_ok = jobs.labels("ok")

        def job(i: int) -> None:
            src, tgt = PAIRS[i % 5]
            accepted.inc()
            pairs.labels(src, tgt, "accepted").inc()
            selection.observe(3e-6)
            att_accepted.inc()
            att_ok.inc()
            dispatch.observe(2e-4)
            job_seconds.observe(0.8)
            jobs_ok.inc()
    else:

        def job(i: int) -> None:
            src, tgt = PAIRS[i % 5]
            submits.labels("accepted").inc()
            pairs.labels(src, tgt, "accepted").inc()
            selection.observe(3e-6)
            attempts.labels("accepted").inc()
            attempts.labels("ok").inc()
            dispatch.observe(2e-4)
            job_seconds.observe(0.8)
            jobs.labels("ok").inc()

    return job, lambda: generate_latest(registry).decode()


def best_ns_per_job(job: Callable[[int], None], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for i in range(n):
            job(i)
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


def best_scrape_us(render: Callable[[], str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        render()
        best = min(best, (time.perf_counter_ns() - started) / 1000)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name, factory in (
        ("hand-written", hand_written),
        ("prometheus_client", lambda: library(cached=False)),
        ("prometheus_client, cached children", lambda: library(cached=True)),
    ):
        job, render = factory()
        per_job = best_ns_per_job(job, args.n, args.repeats)
        scrape = best_scrape_us(render, args.repeats)
        rows.append({"variant": name, "ns_per_job": round(per_job, 1),
                     "scrape_us": round(scrape, 1)})
    base = rows[0]["ns_per_job"]
    for row in rows:
        row["extra_ns_per_job_vs_hand_written"] = round(row["ns_per_job"] - base, 1)
        row["ratio_vs_hand_written"] = round(row["ns_per_job"] / base, 2)
    return {
        "benchmark": "metrics_cost",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"n": args.n, "repeats": args.repeats, "observations_per_job": 8},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="jobs per timing")
    parser.add_argument("--repeats", type=int, default=7, help="timings; the best is kept")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    out = run(args)
    print(f"metrics cost per job ({out['settings']['observations_per_job']} observations), "
          f"best of {args.repeats} x {args.n} jobs, {out['machine']['cpus']} CPUs (shared)")
    print(f"{'variant':<38}{'ns/job':>10}{'vs hand':>10}{'extra ns':>10}{'scrape us':>11}")
    for row in out["rows"]:
        print(f"{row['variant']:<38}{row['ns_per_job']:>10.0f}"
              f"{row['ratio_vs_hand_written']:>9.2f}x"
              f"{row['extra_ns_per_job_vs_hand_written']:>10.0f}{row['scrape_us']:>11.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
