"""One peer never hurts the others: a bystander's latency and throughput under bad peers.

Separate processes on uvloop: the hub (`hub serve`, via benchmarks/_hub_proc.py,
local mode), node fleets (benchmarks/_nodes.py), the bystander and one bad-peer
process per scenario (benchmarks/_bad_peers.py).

The first scenarios (`legacy`), one after the other on one hub without auth,
with the no-op fleet of the bystander (`--nodes`, pair en->de), a fleet whose
results are `--output-bytes` big (pair en->big, for the stalled client) and
as the bystander the load generator (benchmarks/_loadgen.py, a new process per
scenario: RTT over `--jobs` sequential jobs after a warmup, then throughput
with `--in-flight` jobs in flight until `--tp-jobs` are done):

- `quiet`: the bystander alone (the baseline, measured in the same run);
- `stall`: (a) a client that stops reading its socket with 64 jobs of
  `--output-bytes` (200 KB) results in flight, again and again (the hub closes
  it with 4006 after `slow_peer_timeout_ms`; it reconnects and stalls again);
- `churn`: (b) a node registering at the capability limit (1024 entries,
  short names) every 100 ms, with a new node id each time;
- `idle`: (c) 2,000 idle client connections;
- `quiet-after`: the bystander alone again (did anything linger?).

Their targets: bystander RTT p99 within 3x of the quiet p99, 0 bystander
failures; the hub's RSS (VmRSS every 100 ms: before, peak, after) is printed.
That hub runs with `slow_peer_timeout_ms` = `--slow-peer-timeout-ms` (1000
by default, so that the stalled client comes back several times).

The floods (`floods`): what one *authenticated* peer can do today. Each runs
on a fresh hub with `auth = "jwt"` (HS256; the bad peer has its own token:
clients tenant `flood`, the bystander tenant `default`) and the hub's defaults
(`slow_peer_timeout_ms` 10 s) plus `--hub-flag`s; the bystander is 1 node and
1 client running one job at a time back to back (benchmarks/_bystander.py,
5 ms between jobs). Its quiet baseline is its `--before-s` seconds alone on
the same hub right before the flood; then the flood runs (`--flood-s`), the
bad peer is stopped, and the bystander runs `--after-s` more. How each flood
is made (benchmarks/_bad_peer_floods.py):

- `caps_flood`: one node sending its largest valid `capabilities` update
  (1024 language pairs whose codes are 256 characters: ~536 KiB; two sets in
  turn, so each is a change) as fast as its socket takes them;
- `big_submits`: one client sending submits with a payload string of
  `--big-payload-bytes` (850,000: ~830 KiB) as fast as its socket takes them
  (no window: `--big-window` 0), for a pair a no-op fleet serves (2 nodes x 64
  slots: they are held while they run, and answered);
- `big_submits_list`: the same with a payload of as many values as those bytes
  hold (a list of 0s): the most hub CPU a submit that size costs;
- `no_node_flood`: with `--no-node-fleet` (2,000) idle nodes registered (en->es,
  one process), one client sending small submits for en->yy, a pair no node
  serves, as fast as its socket takes them: each ends `rejected` `no_node`
  with its reasons counted over the fleet;
- `register_churn`: one node token (node ids `churn-*`) looping connect ->
  register with the largest valid capabilities (as `caps_flood`) -> close, a
  new node id each time, back to back, for `--churn-s` (45) seconds;
- `held_memory`: behind a node that accepts its one job and never answers,
  two client sessions each queue `--held-jobs` (1024: `max_jobs_per_session`)
  submits with a ~1,000 KiB payload and 24 h timeouts; the flood lasts until
  all are sent, and `--hold-s` more;
- `stalled_readers`: four clients that submit `--stall-jobs` (1024) jobs with
  `--stall-output-bytes` (400,000) results each and never read their sockets
  (again after the hub closes them).

Per flood: the bystander's RTT p50/p99 (and jobs done) before, during and
after, its failures, the hub's CPU over the flood, its RSS before the flood,
its peak growth, its growth at the flood's end and after, its 4006 closes and
what the bad peer saw. A flood whose hub grows more than `--rss-cap-mb`
(2,560 MiB) is stopped early (`capped`: the box is shared). `--rounds N` runs
every flood N times (round after round, a fresh hub each) and shows medians.

Flood targets ("done when"): bystander p50 during the flood within 3x of its
quiet p50 and under 25 ms, 0 failures; the hub's RSS peak growth within its
configured memory bounds, `max_held_payload_bytes` (`--max-held-payload-mb`,
1024: payloads and queues of peers that fell behind) and `max_archive_bytes`
(`--max-archive-mb`, 256: the results it keeps), plus a fixed overhead
(`--held-overhead-mb`, 256 MiB: buffers, copies, the allocator);
`register_churn`: RSS growth by its end under 32 MiB. `/v1/stats`
`held_bytes` (admin token) is read every 0.5 s: its peak is shown.

Usage:
    python benchmarks/bad_peers.py [--scenarios all|legacy|floods|NAME,...] [--quick]
        [--rounds 1] [--json PATH] [--keep-logs]
        [--jobs 2000] [--tp-jobs 20000] [--in-flight 64] [--nodes 8]
        [--output-bytes 200000] [--idle 2000] [--slow-peer-timeout-ms 1000]
        [--before-s 8] [--flood-s 20] [--churn-s 45] [--after-s 3]
        [--hub-flag=--some-key --hub-flag=VALUE ...] [--rss-cap-mb 2560]
        [--tree PATH] [--baseline-tree PATH]
    --quick: legacy 500 RTT / 5,000 throughput jobs; floods 3 s quiet, 10 s
    floods, 15 s churn (the memory floods keep their sizes).
    --tree: the flood hubs run that checkout's `hub` package (PYTHONPATH);
    --baseline-tree: every flood also runs on that checkout's hub, each round
    on both in turn, rows `before` and `after` (e.g. `git worktree add --detach
    /tmp/before f6017bb`, the tree before issue 27's fixes).
    Results: benchmarks/results/bad-peers.json and .txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _bad_peer_floods import FLOODS, median_row, run_flood
from _procs import (
    ROOT,
    Child,
    ProcGroup,
    http_get,
    install_exit_on_sigterm,
    metric_value,
    rss_kb,
)
from _topology import _start_hub

TARGET_P99_RATIO = 3.0
LEGACY = ("quiet", "stall", "churn", "idle", "quiet-after")
SCENARIOS = (*LEGACY, *FLOODS)
GROUPS = {"legacy": LEGACY, "floods": tuple(FLOODS), "all": SCENARIOS}
"""Names `--scenarios` also takes, for several scenarios at once."""
TARGET_FLOOD_P50_RATIO = 3.0
TARGET_FLOOD_P50_MS = 25.0
TARGET_CHURN_RSS_MB = 32.0
QUICK = {
    "jobs": 500, "tp_jobs": 5000, "before_s": 3.0, "flood_s": 10.0, "churn_s": 15.0,
    "after_s": 2.0, "hold_s": 2.0,
}
"""`--quick`: the sizes it sets (each flood 10-20 s; the memory floods keep their sizes)."""


class RssSampler:
    """The hub's VmRSS every `interval` seconds, in a thread: the peak since `start`."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.peak = rss_kb(self.pid)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _bad_peer(procs: ProcGroup, name: str, url: str, args: argparse.Namespace) -> Child | None:
    # Back to reading 1 s after the hub's deadline: within the 2 s grace the hub gives a
    # closing handshake, so it sees the 4006 before it stalls again.
    hold = args.slow_peer_timeout_ms / 1000 + 1
    argv = {
        "stall": ("--mode", "stall", "--jobs", "64", "--tgt", "big", "--hold", f"{hold:.1f}"),
        "churn": ("--mode", "churn", "--entries", "1024", "--interval", "0.1"),
        "idle": ("--mode", "idle", "--count", str(args.idle)),
    }.get(name)
    if argv is None:
        return None
    bad = procs.spawn(f"bad-{name}", "_bad_peers.py", "--url", url, *argv)
    bad.expect("ready", timeout=300)
    if name == "stall":
        time.sleep(0.5)  # its results pile up in the hub before the bystander starts
    return bad


def _bystander(procs: ProcGroup, url: str, args: argparse.Namespace, prefix: str
               ) -> dict[str, Any]:
    gen = procs.spawn(
        "bystander", "_loadgen.py", "--url", url, "--target", "hub",
        "--warmup", str(args.warmup), "--rtt-jobs", str(args.jobs),
        "--tp-jobs", str(args.tp_jobs), "--in-flight", str(args.in_flight),
        "--prefix", prefix, "--timeout", "300",
    )
    try:
        result = gen.expect("result", timeout=900)
        gen.wait(timeout=30)
    finally:
        procs.stop(gen)
    return result


def _trees(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """The hubs' trees, by label: `before` (`--baseline-tree`) first, then `after`
    (`--tree`, else this checkout)."""
    trees: list[tuple[str, Path | None]] = []
    if args.baseline_tree is not None:
        trees.append(("before", args.baseline_tree.resolve()))
    trees.append(("after" if args.baseline_tree is not None else "this",
                  args.tree.resolve() if args.tree is not None else None))
    return trees


def run(args: argparse.Namespace) -> dict[str, Any]:
    scenarios: list[dict[str, Any]] = []
    legacy = [name for name in args.scenarios if name in LEGACY]
    if legacy:
        scenarios += run_legacy(legacy, args)
    floods = [name for name in args.scenarios if name in FLOODS]
    trees = _trees(args)
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {
        (name, label): [] for name in floods for label, _ in trees}
    # Round after round of every flood (not one flood's rounds in a row), and each
    # flood on every tree in turn (the order alternating): what others run on this
    # shared box then weighs on every flood and tree alike.
    for index in range(args.rounds if floods else 0):
        for name in floods:
            order = trees if index % 2 == 0 else list(reversed(trees))
            for label, tree in order:
                print(f"  {name} [{label}] (round {index + 1} of {args.rounds}): a fresh hub, "
                      f"its fleets, {args.before_s:g} s quiet, then the flood...", flush=True)
                row = run_flood(name, args, tree)
                row["tree"] = label
                rounds[(name, label)].append(row)
                b, d = row["before"], row["during"]
                held = row["held_peak_kb"]
                print(f"    bystander p50 {b['p50_ms']} -> {d['p50_ms']} ms, p99 {b['p99_ms']} "
                      f"-> {d['p99_ms']} ms, {row['failures']} failures; hub CPU "
                      f"{row['hub_cpu_pct']}%, RSS {row['rss_before_kb'] / 1024:.0f} MiB, peak +"
                      f"{(row['rss_peak_kb'] - row['rss_before_kb']) / 1024:.0f} MiB, end +"
                      f"{(row['rss_end_kb'] - row['rss_before_kb']) / 1024:.0f} MiB"
                      f"{'' if held is None else f', held peak {held / 1024:.0f} MiB'}; "
                      f"bad peer: {json.dumps(row['bad_peer'])}", flush=True)
    for name in floods:
        for label, _ in trees:
            row = median_row(rounds[(name, label)])
            row["tree"] = label
            scenarios.append(row)
    return summarize(scenarios, args)


def run_legacy(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The first scenarios, one after the other on one hub without auth (the load
    generator's RTT and throughput phases as the bystander)."""
    scenarios: list[dict[str, Any]] = []
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        hub, url = _start_hub(
            procs, "hub", extra=("--slow-peer-timeout-ms", str(args.slow_peer_timeout_ms)),
            env={"BENCH_HUB_NOFILE": str(args.idle + 4096)},
        )
        for name, extra in (
            ("bystander-nodes", ("--tgt", "de", "--count", str(args.nodes))),
            ("big-nodes", ("--tgt", "big", "--count", "4", "--max-concurrency", "32",
                           "--output-bytes", str(args.output_bytes))),
        ):
            fleet = procs.spawn(name, "_nodes.py", "--url", url, "--mode", "hub", *extra,
                                "--prefix", name)
            fleet.expect("ready", timeout=60)
        def closed_slow() -> float:
            text = http_get(url.replace("ws://", "http://") + "/metrics").decode()
            return metric_value(text, "nodehub_slow_consumers_total") or 0.0

        for index, name in enumerate(names):
            slow_before = closed_slow()
            before = rss_kb(hub.pid)
            sampler = RssSampler(hub.pid)
            sampler.start()
            bad = _bad_peer(procs, name, url, args)
            measured = _bystander(procs, url, args, f"s{index}.")
            summary: dict[str, Any] = {}
            if bad is not None:
                bad.signal(signal.SIGTERM)
                summary = bad.expect("summary", timeout=60)["summary"]
                procs.stop(bad)
            time.sleep(1.0)  # let the hub let go of what the bad peer held
            peak = sampler.stop()
            after = rss_kb(hub.pid)
            summary["hub_closed_4006"] = closed_slow() - slow_before
            scenarios.append({
                "scenario": name,
                "kind": "legacy",
                **{k: measured[k] for k in ("rtt_p50_us", "rtt_p99_us", "jobs_per_s",
                                            "failures", "failure_sample")},
                "rss_before_kb": before, "rss_peak_kb": peak, "rss_after_kb": after,
                "bad_peer": summary if bad is not None else {},
            })
            row = scenarios[-1]
            print(f"  {name}: p50 {row['rtt_p50_us']:.0f} us, p99 {row['rtt_p99_us']:.0f} us, "
                  f"{row['jobs_per_s']:.0f} jobs/s, {row['failures']} failures, "
                  f"RSS +{(peak - before) / 1024:.1f} MiB peak; bad peer: {summary}",
                  flush=True)
    return scenarios


def _memory_cap_mb(args: argparse.Namespace) -> int:
    """The RSS growth a flood may cause: the hub's configured memory bounds
    (`max_held_payload_bytes`, `max_archive_bytes`) plus the fixed overhead."""
    return int(args.max_held_payload_mb + args.max_archive_mb + args.held_overhead_mb)


def evaluate_floods(scenarios: list[dict[str, Any]], memory_cap_mb: int) -> None:
    """Each flood's ratios and targets (in place)."""
    for s in scenarios:
        if s["kind"] != "flood":
            continue
        before, during = s["before"]["p50_ms"], s["during"]["p50_ms"]
        # No bystander job finished during the flood: as bad as it gets.
        s["p50_vs_quiet"] = during / before if before and during is not None else None
        s["rss_peak_growth_mb"] = (s["rss_peak_kb"] - s["rss_before_kb"]) / 1024
        s["rss_end_growth_mb"] = (s["rss_end_kb"] - s["rss_before_kb"]) / 1024
        s["rss_after_growth_mb"] = (s["rss_after_kb"] - s["rss_before_kb"]) / 1024
        s["targets"] = {
            "p50<=3x_quiet": s["p50_vs_quiet"] is not None
            and s["p50_vs_quiet"] <= TARGET_FLOOD_P50_RATIO,
            "p50<25ms": during is not None and during < TARGET_FLOOD_P50_MS,
            "no_failures": s["failures"] == 0,
        }
        if s["scenario"] == "register_churn":
            s["targets"]["rss_growth<32MB"] = s["rss_end_growth_mb"] < TARGET_CHURN_RSS_MB
        else:
            s["targets"]["rss<=budget"] = s["rss_peak_growth_mb"] <= memory_cap_mb


def summarize(scenarios: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    legacy = [s for s in scenarios if s["kind"] == "legacy"]
    quiet = next((s for s in legacy if s["scenario"] == "quiet"), legacy[0] if legacy else None)
    for s in legacy:
        assert quiet is not None
        s["p99_vs_quiet"] = s["rtt_p99_us"] / quiet["rtt_p99_us"]
        s["p50_vs_quiet"] = s["rtt_p50_us"] / quiet["rtt_p50_us"]
        s["throughput_vs_quiet"] = s["jobs_per_s"] / quiet["jobs_per_s"]
        s["targets"] = {
            "p99<=3x_quiet": s["p99_vs_quiet"] <= TARGET_P99_RATIO,
            "no_failures": s["failures"] == 0,
        }
    evaluate_floods(scenarios, _memory_cap_mb(args))
    return {
        "benchmark": "bad_peers",
        "scenarios": scenarios,
        "all_targets_met": all(all(s["targets"].values()) for s in scenarios),
        "settings": {
            "rtt_jobs": args.jobs, "tp_jobs": args.tp_jobs, "in_flight": args.in_flight,
            "nodes": args.nodes, "output_bytes": args.output_bytes, "idle": args.idle,
            "slow_peer_timeout_ms": args.slow_peer_timeout_ms, "quick": args.quick,
            "floods": {
                "auth": "jwt", "hub_flags": args.hub_flag, "rounds": args.rounds,
                "slow_peer_timeout_ms": args.flood_slow_peer_timeout_ms,
                "bystander_in_flight": args.bystander_in_flight,
                "bystander_pause_ms": args.bystander_pause_ms,
                "before_s": args.before_s, "flood_s": args.flood_s, "churn_s": args.churn_s,
                "after_s": args.after_s, "hold_s": args.hold_s,
                "big_payload_bytes": args.big_payload_bytes, "big_window": args.big_window,
                "no_node_fleet": args.no_node_fleet, "held_jobs": args.held_jobs,
                "held_payload_bytes": args.held_payload_bytes, "stall_jobs": args.stall_jobs,
                "stall_output_bytes": args.stall_output_bytes, "rss_cap_mb": args.rss_cap_mb,
                "max_held_payload_mb": args.max_held_payload_mb,
                "held_overhead_mb": args.held_overhead_mb,
                "max_archive_mb": args.max_archive_mb,
                "trees": {label: str(tree) if tree is not None else str(ROOT)
                          for label, tree in _trees(args)},
            },
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg": os.getloadavg()},
    }


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


def print_table(out: dict[str, Any]) -> None:
    s = out["settings"]
    legacy = [row for row in out["scenarios"] if row["kind"] == "legacy"]
    floods = [row for row in out["scenarios"] if row["kind"] == "flood"]
    print()
    print(f"bad peers benchmark, {out['machine']['cpus']} CPUs (shared, noisy; load average "
          f"{out['machine']['loadavg'][0]:.2f} at the end)")
    if legacy:
        print(f"bystander: RTT over {s['rtt_jobs']} jobs, throughput {s['in_flight']} in "
              f"flight x {s['tp_jobs']} jobs; slow_peer_timeout_ms {s['slow_peer_timeout_ms']}; "
              "no auth")
        print(f"{'scenario':<12}{'p50 us':>9}{'p99 us':>9}{'p99/quiet':>10}{'jobs/s':>9}"
              f"{'tp/quiet':>9}{'fail':>6}{'RSS peak+':>11}{'RSS end+':>10}  targets")
        for row in legacy:
            t = row["targets"]
            print(f"{row['scenario']:<12}{row['rtt_p50_us']:>9.0f}{row['rtt_p99_us']:>9.0f}"
                  f"{row['p99_vs_quiet']:>10.2f}{row['jobs_per_s']:>9.0f}"
                  f"{row['throughput_vs_quiet']:>9.2f}{row['failures']:>6}"
                  f"{(row['rss_peak_kb'] - row['rss_before_kb']) / 1024:>8.1f} MiB"
                  f"{(row['rss_after_kb'] - row['rss_before_kb']) / 1024:>7.1f} MiB"
                  f"  p99 <= 3x quiet {_ok(t['p99<=3x_quiet'])}, 0 failures "
                  f"{_ok(t['no_failures'])}")
        for row in legacy:
            if row["bad_peer"]:
                print(f"  {row['scenario']}: {json.dumps(row['bad_peer'])}")
            if row["failure_sample"]:
                print(f"  {row['scenario']}: failure e.g. {row['failure_sample'][:200]}")
    if floods:
        _print_floods(floods, s["floods"])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _print_floods(floods: list[dict[str, Any]], f: dict[str, Any]) -> None:
    cap = f["max_held_payload_mb"] + f.get("max_archive_mb", 0) + f["held_overhead_mb"]
    print()
    print(f"floods: a fresh hub each (auth jwt, slow_peer_timeout_ms "
          f"{f['slow_peer_timeout_ms']}{', ' + ' '.join(f['hub_flags']) if f['hub_flags'] else ''}"
          f"); bystander: 1 node, 1 client, {f['bystander_in_flight']} job in flight, "
          f"{f['bystander_pause_ms']:g} ms between jobs; quiet = its {f['before_s']:g} s before "
          f"the flood on the same hub; medians of {f['rounds']} round(s)")
    print("trees: " + ", ".join(f"{label} {path}" for label, path in f["trees"].items()))
    print(f"{'scenario':<18}{'tree':<7}{'quiet p50':>10}{'p99':>7}{'flood p50':>10}{'p99':>7}"
          f"{'x quiet':>8}{'RSS peak+':>10}{'after+':>8}{'held':>7}{'budget':>8}  met?")
    for row in floods:
        b, d = row["before"], row["during"]
        ratio = row["p50_vs_quiet"]
        held = row.get("held_peak_kb")
        budget = f"{TARGET_CHURN_RSS_MB:g}" if row["scenario"] == "register_churn" else f"{cap}"
        missed = [name for name, flag in row["targets"].items() if not flag]
        print(f"{row['scenario']:<18}{row['tree']:<7}{_ms(b['p50_ms']):>10}{_ms(b['p99_ms']):>7}"
              f"{_ms(d['p50_ms']):>10}{_ms(d['p99_ms']):>7}"
              f"{'-' if ratio is None else f'{ratio:.1f}':>8}"
              f"{row['rss_peak_growth_mb']:>10.0f}{row['rss_after_growth_mb']:>8.0f}"
              f"{'-' if held is None else f'{held / 1024:.0f}':>7}{budget:>8}  "
              f"{'met' if not missed else 'MISSED ' + ', '.join(missed)}"
              f"{'  capped' if row['capped'] else ''}")
    print(f"(ms; RSS peak+/after+: the hub's VmRSS growth over its RSS when the flood "
          f"started, at its peak and {f['after_s']:g} s after the flood, MiB; held: peak "
          f"/v1/stats held_bytes, MiB; budget: max_held_payload_bytes "
          f"({f['max_held_payload_mb']} MiB) + max_archive_bytes ({f.get('max_archive_mb', 0)} "
          f"MiB) + {f['held_overhead_mb']} MiB overhead, "
          f"register_churn: RSS growth by its end)")
    print(f"targets: bystander p50 during <= {TARGET_FLOOD_P50_RATIO:g}x quiet and < "
          f"{TARGET_FLOOD_P50_MS:g} ms, 0 failures; RSS peak growth <= the budget")
    print()
    print(f"{'scenario':<18}{'tree':<7}{'flood s':>8}{'jobs':>6}{'fail':>5}{'hub CPU':>8}"
          f"{'RSS MiB':>8}{'end+':>7}{'4006':>5}")
    for row in floods:
        print(f"{row['scenario']:<18}{row['tree']:<7}{row['flood_seconds']:>8.1f}"
              f"{row['during']['jobs']:>6.0f}{row['failures']:>5}{row['hub_cpu_pct']:>7.0f}%"
              f"{row['rss_before_kb'] / 1024:>8.0f}{row['rss_end_growth_mb']:>7.0f}"
              f"{row['hub_closed_4006']:>5.0f}")
    for row in floods:
        print(f"  {row['scenario']} [{row['tree']}]: {json.dumps(row['bad_peer'])}")
        if row["failure_sample"]:
            print(f"  {row['scenario']} [{row['tree']}]: failure e.g. "
                  f"{row['failure_sample'][:200]}")


def _scenarios(text: str) -> list[str]:
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            names.extend(GROUPS.get(item, (item,)))
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: " + ", ".join(f"{k} {v:g}" for k, v in QUICK.items()))
    parser.add_argument("--scenarios", default="all",
                        help=f"comma-separated, of {', '.join(SCENARIOS)}; or "
                             f"{', '.join(GROUPS)}")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    first = parser.add_argument_group("the first scenarios (quiet ... quiet-after)")
    first.add_argument("--jobs", type=int, default=2000, help="timed sequential jobs (RTT)")
    first.add_argument("--warmup", type=int, default=200)
    first.add_argument("--tp-jobs", type=int, default=20000, help="jobs in the throughput phase")
    first.add_argument("--in-flight", type=int, default=64)
    first.add_argument("--nodes", type=int, default=8, help="the bystander's nodes")
    first.add_argument("--output-bytes", type=int, default=200_000,
                       help="result size of the stalled client's jobs")
    first.add_argument("--idle", type=int, default=2000, help="idle connections")
    first.add_argument("--slow-peer-timeout-ms", type=int, default=1000)
    fl = parser.add_argument_group("the floods (caps_flood ... stalled_readers)")
    fl.add_argument("--rounds", type=int, default=1,
                    help="runs of each flood (a fresh hub each); the table shows medians")
    fl.add_argument("--before-s", type=float, default=8.0, help="quiet bystander before")
    fl.add_argument("--flood-s", type=float, default=20.0, help="each flood's length")
    fl.add_argument("--churn-s", type=float, default=45.0, help="register_churn's length")
    fl.add_argument("--after-s", type=float, default=3.0, help="bystander after the flood")
    fl.add_argument("--hold-s", type=float, default=5.0,
                    help="held_memory: seconds after the last submit is sent")
    fl.add_argument("--held-timeout-s", type=float, default=180.0,
                    help="held_memory: longest wait for every submit to be sent")
    fl.add_argument("--bystander-in-flight", type=int, default=1)
    fl.add_argument("--bystander-pause-ms", type=float, default=5.0)
    fl.add_argument("--big-payload-bytes", type=int, default=850_000,
                    help="big_submits: each submit's payload (~830 KiB)")
    fl.add_argument("--big-window", type=int, default=0,
                    help="big_submits: unanswered submits at most (0: any)")
    fl.add_argument("--big-slots", type=int, default=64,
                    help="big_submits: slots of each of its 2 nodes")
    fl.add_argument("--big-service-ms", type=float, default=0.0,
                    help="big_submits: its nodes' time per job (0: they answer at once)")
    fl.add_argument("--no-node-fleet", type=int, default=2000,
                    help="no_node_flood: idle registered nodes")
    fl.add_argument("--no-node-src", default="en",
                    help="no_node_flood: the submits' src_lang (en: the fleet's, xx: none's)")
    fl.add_argument("--no-node-window", type=int, default=0,
                    help="no_node_flood: unanswered submits at most (0: any)")
    fl.add_argument("--held-jobs", type=int, default=1024,
                    help="held_memory: submits per session (2 sessions)")
    fl.add_argument("--held-payload-bytes", type=int, default=1_024_000,
                    help="held_memory: each submit's payload (1,000 KiB)")
    fl.add_argument("--stall-jobs", type=int, default=1024,
                    help="stalled_readers: jobs each client submits before it stalls")
    fl.add_argument("--stall-output-bytes", type=int, default=400_000,
                    help="stalled_readers: each result's output")
    fl.add_argument("--flood-slow-peer-timeout-ms", type=int, default=10_000,
                    help="the flood hubs' slow_peer_timeout_ms (the hub's default)")
    fl.add_argument("--hub-flag", action="append", default=[], metavar="FLAG",
                    help="one more `hub serve` argument for the flood hubs (repeat; "
                         "e.g. --hub-flag=--max-jobs-per-session --hub-flag=256)")
    fl.add_argument("--tree", type=Path, default=None,
                    help="run the flood hubs from this checkout's `hub` (default: this one)")
    fl.add_argument("--baseline-tree", type=Path, default=None,
                    help="also run every flood with this checkout's hub (e.g. a worktree of "
                         "the commit before a fix), interleaved: before/after rows")
    fl.add_argument("--rss-cap-mb", type=int, default=2560,
                    help="stop a flood whose hub grows more than this (a shared box)")
    fl.add_argument("--max-held-payload-mb", type=int, default=1024,
                    help="target: the hub's max_held_payload_bytes, MiB")
    fl.add_argument("--max-archive-mb", type=int, default=256,
                    help="target: the hub's max_archive_bytes, MiB (results kept in memory)")
    fl.add_argument("--from-json", metavar="PATH",
                    help="print (and judge again) the results of an earlier run")
    fl.add_argument("--held-overhead-mb", type=int, default=256,
                    help="target: RSS growth allowed over max_held_payload_bytes, MiB")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):  # an explicit flag wins
                setattr(args, key, value)
    args.scenarios = _scenarios(args.scenarios)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.from_json:
        out = json.loads(Path(args.from_json).read_text())
        floods = out["settings"]["floods"]
        floods["max_archive_mb"] = args.max_archive_mb
        evaluate_floods(out["scenarios"], floods["max_held_payload_mb"] + args.max_archive_mb
                        + floods["held_overhead_mb"])
        out["all_targets_met"] = all(all(s["targets"].values()) for s in out["scenarios"])
        print_table(out)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    install_exit_on_sigterm()
    out = run(args)
    print_table(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
