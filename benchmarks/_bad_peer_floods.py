"""The flood scenarios of benchmarks/bad_peers.py: one authenticated peer floods a hub.

Each flood gets a fresh hub (`auth = "jwt"`, local mode; so that what one
flood leaves behind, held payloads or a grown heap, is not the next one's
baseline) with its bystander: 1 node (pair en->de) and 1 client running jobs
back to back (benchmarks/_bystander.py, `--bystander-in-flight` loops, a
`--bystander-pause-ms` pause between two jobs of a loop). Per flood:

1. the fleet the flood needs registers (see `FLOODS`), then the bystander
   runs alone for `before_s` seconds: its quiet baseline, on the same hub,
   in the same run;
2. the bad peer (benchmarks/_bad_peers.py, its own process and token) floods
   for `flood_s` seconds (`churn_s` for `register_churn`; `held_memory`
   until every submit is sent, and `hold_s` more);
3. it is stopped (SIGTERM: its connections drop), 1 s to settle, and the
   bystander runs alone `after_s` more seconds.

The bystander's RTTs are split by the wall-clock time of each submit; the
hub's VmRSS is sampled every 100 ms (before: when the flood starts; peak:
from then until the end; end: when it is stopped; after: at the end), and
its CPU time (utime + stime) over the flood. A flood whose hub grows past
`rss_cap_mb` over its baseline is stopped early (`capped`): the box is shared.

With a `tree` (bad_peers.py `--tree`, `--baseline-tree`) the hub runs that
checkout's `hub` package (PYTHONPATH), everything else this one's: the same
floods against an older hub, for "before" figures in the same run.

The hub's held bytes (`/v1/stats` `held_bytes`, jobs + outbound, with an admin
token) are read every 0.5 s during the flood, where the hub has them: their
peak is `held_peak_kb` (None for a hub without the budget).

Tokens: each hub gets its own HS256 secret. The bystander's client is tenant
`default`; the bad clients are tenant `flood` (sub `flood`), so that a fix that
shares by tenant can tell them apart; the fleets have one node token, each
bad node its own (node ids `caps-bad`, `churn-*`).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import Child, ProcGroup, http_get, rss_kb
from _topology import _start_hub

from hub.net.auth import mint_token

TOKEN_TTL_S = 24 * 3600
BYSTANDER_SLOTS = 4
DAY_MS = 86_400_000
CAPS_ENTRIES = 1024
"""`max_capability_entries`' default: the largest capabilities a node may send."""
NAME_CHARS = 256
"""The longest language code (`Name`)."""


@dataclass(frozen=True)
class Flood:
    """One flood: the fleets it needs beside the bystander's node, its bad peer."""

    fleets: Callable[[argparse.Namespace], list[tuple[str, ...]]]
    """`_nodes.py` arguments of each fleet (after `--url`, `--token`)."""
    bad: Callable[[argparse.Namespace], tuple[str, ...]]
    """`_bad_peers.py` arguments (after `--url`, `--token`)."""
    role: str
    """The bad peer's token: `client` or `node`."""
    node_ids: tuple[str, ...] = ()
    duration: str = "flood_s"
    """Which setting is the flood's length."""
    until_sent: bool = False
    """Flood until the bad peer says every submit is sent (then `hold_s` more)."""


def _caps(args: argparse.Namespace) -> tuple[str, ...]:
    return ("--mode", "caps", "--node-id", "caps-bad", "--entries", str(CAPS_ENTRIES),
            "--layout", "pairs", "--name-chars", str(NAME_CHARS))


def _big_submits(kind: str) -> Callable[[argparse.Namespace], tuple[str, ...]]:
    def bad(args: argparse.Namespace) -> tuple[str, ...]:
        return ("--mode", "submits", "--src", "en", "--tgt", "bulk", "--count", "0",
                "--window", str(args.big_window), "--payload-bytes", str(args.big_payload_bytes),
                "--payload-kind", kind)

    return bad


def _bulk_fleet(args: argparse.Namespace) -> list[tuple[str, ...]]:
    return [("--mode", "hub", "--src", "en", "--tgt", "bulk", "--count", "2",
             "--max-concurrency", str(args.big_slots), "--service-ms", str(args.big_service_ms),
             "--prefix", "bulk")]


def _no_node(args: argparse.Namespace) -> tuple[str, ...]:
    return ("--mode", "submits", "--src", args.no_node_src, "--tgt", "yy", "--count", "0",
            "--window", str(args.no_node_window), "--payload-bytes", "1")


def _churn(args: argparse.Namespace) -> tuple[str, ...]:
    return ("--mode", "churn", "--node-id", "churn", "--entries", str(CAPS_ENTRIES),
            "--layout", "pairs", "--name-chars", str(NAME_CHARS), "--interval", "0")


def _held(args: argparse.Namespace) -> tuple[str, ...]:
    n = str(args.held_jobs)
    return ("--mode", "submits", "--sessions", "2", "--src", "en", "--tgt", "held",
            "--count", n, "--window", n, "--payload-bytes", str(args.held_payload_bytes),
            "--timeout-ms", str(DAY_MS), "--queue-timeout-ms", str(DAY_MS))


def _stalled(args: argparse.Namespace) -> tuple[str, ...]:
    # Back to reading 1 s after the hub's deadline (10 s by default: the flood hubs
    # keep the hub's defaults), to see how it ended the session.
    hold = args.flood_slow_peer_timeout_ms / 1000 + 1
    return ("--mode", "stall", "--clients", "4", "--jobs", str(args.stall_jobs),
            "--src", "en", "--tgt", "big", "--hold", f"{hold:.1f}")


FLOODS: dict[str, Flood] = {
    # One node sending its largest valid `capabilities` update, as fast as its socket
    # takes them.
    "caps_flood": Flood(lambda a: [], _caps, "node", ("caps-bad",)),
    # One client sending the largest submits (a string payload), for a pair a no-op
    # fleet serves, as fast as its socket takes them: every one is decoded, held, sent
    # on to a node and answered.
    "big_submits": Flood(_bulk_fleet, _big_submits("str"), "client"),
    # The same with a payload of as many values as the bytes hold (a list of 0s): the
    # most hub CPU a submit of that size can ask for (decode, check, encode again).
    "big_submits_list": Flood(_bulk_fleet, _big_submits("list"), "client"),
    # One client sending small submits for a pair none of 2,000 idle nodes serves:
    # each is `rejected` `no_node`, its reasons counted over the whole fleet.
    "no_node_flood": Flood(
        lambda a: [("--mode", "idle", "--src", "en", "--tgt", "es",
                    "--count", str(a.no_node_fleet), "--prefix", "idle")],
        _no_node, "client",
    ),
    # One node token: connect, register at the capability limit (a new node id each
    # time: the token allows `churn-*`), close; back to back.
    "register_churn": Flood(lambda a: [], _churn, "node", ("churn-*",), duration="churn_s"),
    # Two sessions of one client each queue submits of ~1,000 KiB behind a node that
    # accepts its one job and never answers, with 24 h timeouts.
    "held_memory": Flood(
        lambda a: [("--mode", "hub", "--src", "en", "--tgt", "held", "--count", "1",
                    "--max-concurrency", "1", "--service-ms", str(DAY_MS), "--prefix", "held")],
        _held, "client", until_sent=True,
    ),
    # Four clients that submit jobs with big results and never read their sockets
    # (again after the hub closes them).
    "stalled_readers": Flood(
        lambda a: [("--mode", "hub", "--src", "en", "--tgt", "big", "--count", "4",
                    "--max-concurrency", "64", "--output-bytes", str(a.stall_output_bytes),
                    "--prefix", "big")],
        _stalled, "client",
    ),
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (/proc/PID/stat), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # clock ticks: USER_HZ is 100 on Linux


class RssSeries:
    """The hub's VmRSS every `interval` seconds, in a thread, with the wall-clock time
    of each sample; past `cap_kb` over the RSS at `arm()`, `on_cap` is called once."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.capped_at: float | None = None
        self._limit: int | None = None
        self._on_cap: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = rss_kb(self.pid)
            except (OSError, RuntimeError):  # the hub is gone
                return
            self.samples.append((time.time(), rss))
            limit, on_cap = self._limit, self._on_cap
            if limit is not None and rss > limit and self.capped_at is None:
                self.capped_at = time.time()
                if on_cap is not None:
                    on_cap()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def arm(self, cap_kb: int, on_cap: Callable[[], None]) -> int:
        """From now on, `on_cap` past `cap_kb` over the current RSS; that RSS."""
        base = rss_kb(self.pid)
        self._on_cap = on_cap
        self._limit = base + cap_kb
        return base

    def peak(self, since: float) -> int:
        return max((rss for t, rss in self.samples if t >= since), default=0)

    def series_mb(self, since: float, step: float = 1.0) -> list[list[float]]:
        """[seconds since `since`, MiB] every `step` seconds (for the JSON)."""
        out: list[list[float]] = []
        next_t = since
        for t, rss in self.samples:
            if t >= next_t:
                out.append([round(t - since, 1), round(rss / 1024, 1)])
                next_t = t + step
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class HeldSeries:
    """The hub's held bytes (`/v1/stats` `held_bytes`: jobs + outbound) every `interval`
    seconds, in a thread; `available` False when the hub has no such figure."""

    def __init__(self, url: str, token: str, interval: float = 0.5) -> None:
        self.url = url.replace("ws://", "http://", 1) + "/v1/stats"
        self.token = token
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.available = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="held", daemon=True)

    def read(self) -> dict[str, int] | None:
        request = urllib.request.Request(
            self.url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            held = json.loads(response.read()).get("held_bytes")
        return held if isinstance(held, dict) else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self.read()
            except OSError:  # busy or gone: the next try
                held = {}
            if held is None:
                self.available = False
                return
            if held:
                self.samples.append((time.time(), held["jobs"] + held["outbound"]))
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def peak_kb(self, since: float) -> int | None:
        if not self.available:
            return None
        return max((b for t, b in self.samples if t >= since), default=0) // 1024

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _window(samples: list[list[float]], start: float, end: float) -> dict[str, Any]:
    rtts = sorted(rtt for t, rtt in samples if start <= t < end)

    def pct(q: float) -> float | None:
        if not rtts:
            return None
        return round(rtts[min(len(rtts) - 1, max(0, round(q * len(rtts) + 0.5) - 1))], 3)

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(rtts[-1], 3) if rtts else None, "jobs": len(rtts),
            "jobs_per_s": round(len(rtts) / (end - start), 1) if end > start else None}


@dataclass
class Tokens:
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def client(self, sub: str, tenant: str) -> str:
        return str(mint_token(self.secret, role="client", sub=sub, tenant=tenant,
                              ttl_s=TOKEN_TTL_S))

    def admin(self) -> str:
        return str(mint_token(self.secret, role="admin", sub="bench", ttl_s=TOKEN_TTL_S))

    def node(self, sub: str, node_ids: tuple[str, ...]) -> str:
        return str(mint_token(self.secret, role="node", sub=sub, node_ids=node_ids,
                              ttl_s=TOKEN_TTL_S))


def _slow_closes(url: str) -> float:
    """Sessions the hub closed with 4006 `slow_consumer` so far (every endpoint)."""
    text = http_get(url.replace("ws://", "http://", 1) + "/metrics").decode()
    name = "nodehub_slow_consumers_total"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def run_flood(name: str, args: argparse.Namespace, tree: Path | None = None
              ) -> dict[str, Any]:
    """One flood on a fresh hub (`tree`: that checkout's `hub`, else this one's)."""
    flood = FLOODS[name]
    tokens = Tokens()
    env = {"NODEHUB_AUTH": "jwt", "NODEHUB_JWT_SECRET": tokens.secret,
           "BENCH_HUB_NOFILE": str(args.no_node_fleet + 4096)}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    # /metrics without a token: the harness reads the hub's slow-consumer closes.
    extra = ("--slow-peer-timeout-ms", str(args.flood_slow_peer_timeout_ms), "--metrics-public",
             *args.hub_flag)
    fleet_token = tokens.node("fleet", ("bystander-*", "bulk-*", "idle-*", "held-*", "big-*"))
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        hub, url = _start_hub(procs, f"hub-{name}", extra=extra, env=env)
        fleets = [("--mode", "hub", "--src", "en", "--tgt", "de", "--count", "1",
                   "--max-concurrency", str(BYSTANDER_SLOTS), "--prefix", "bystander"),
                  *flood.fleets(args)]
        for i, fleet_args in enumerate(fleets):
            fleet = procs.spawn(f"fleet{i}-{name}", "_nodes.py", "--url", url,
                                "--token", fleet_token, *fleet_args)
            fleet.expect("ready", timeout=300)
        bystander = procs.spawn(
            "bystander", "_bystander.py", "--url", url,
            "--in-flight", str(args.bystander_in_flight),
            "--pause-ms", str(args.bystander_pause_ms),
            "--token", tokens.client("bystander", "default"),
        )
        bystander.expect("ready", timeout=30)
        loadavg = os.getloadavg()[0]
        rss = RssSeries(hub.pid)
        rss.start()
        held = HeldSeries(url, tokens.admin())
        held.start()
        try:
            before_from = time.time()
            time.sleep(args.before_s)
            token = (tokens.client("flood", "flood") if flood.role == "client"
                     else tokens.node("bad-node", flood.node_ids))
            closed = _slow_closes(url)
            out = _flood(procs, name, flood, url, token, hub, rss, bystander, before_from, args)
            out["hub_closed_4006"] = _slow_closes(url) - closed
            out["held_peak_kb"] = held.peak_kb(out.pop("armed_at"))
            out["loadavg_1m_at_start"] = loadavg
        finally:
            held.stop()
            rss.stop()
    return out


def _expect_any(child: Child, keys: tuple[str, ...], timeout: float) -> dict[str, Any] | None:
    """The next stdout JSON line of `child` holding one of `keys`; None at its end or
    after `timeout` seconds (`Child.expect` drops the lines that do not match)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            item = child.lines.get(timeout=remaining)
        except queue.Empty:
            return None
        if item is None:
            child.lines.put(None)  # the end, for whoever reads next
            return None
        if any(key in item for key in keys):
            return item
    return None


def _flood(procs: ProcGroup, name: str, flood: Flood, url: str, token: str, hub: Child,
           rss: RssSeries, bystander: Child, before_from: float,
           args: argparse.Namespace) -> dict[str, Any]:
    cut = threading.Event()
    armed_at = time.time()
    bad = procs.spawn(f"bad-{name}", "_bad_peers.py", "--url", url, "--token", token,
                      *flood.bad(args))

    def on_cap() -> None:
        bad.signal(signal.SIGTERM)
        cut.set()

    rss_before = rss.arm(args.rss_cap_mb * 1024, on_cap)
    cpu_before = cpu_seconds(hub.pid)
    ready = bad.expect("ready", timeout=120)
    flood_from = time.time()
    end = flood_from + getattr(args, flood.duration)
    summary: dict[str, Any] | None = None
    sent_after: float | None = None
    if flood.until_sent:
        item = _expect_any(bad, ("sent", "summary"), args.held_timeout_s)
        if item is not None and "sent" in item:
            sent_after = item.get("seconds")
        elif item is not None:
            summary = item["summary"]  # stopped (capped) before it sent everything
        end = max(end, time.time() + args.hold_s)
    cut.wait(max(0.0, end - time.time()))
    flood_to = time.time()
    rss_end = rss_kb(hub.pid)
    cpu = cpu_seconds(hub.pid) - cpu_before
    bad.signal(signal.SIGTERM)
    if summary is None:
        item = _expect_any(bad, ("summary",), 60)
        summary = item["summary"] if item is not None else {"error": "no summary"}
    procs.stop(bad)
    time.sleep(1.0)  # let the hub let go of what the bad peer held
    after_from = time.time()
    time.sleep(args.after_s)
    after_to = time.time()
    rss_after = rss_kb(hub.pid)
    bystander.signal(signal.SIGTERM)
    report = bystander.expect("samples", timeout=60)
    samples = report["samples"]
    if sent_after is not None:
        summary["sent_all_after_s"] = sent_after
    summary.update({k: v for k, v in ready.items() if k != "ready"})
    return {
        "scenario": name,
        "kind": "flood",
        "flood_seconds": round(flood_to - flood_from, 1),
        "before": _window(samples, before_from, armed_at),
        "during": _window(samples, flood_from, flood_to),
        "after": _window(samples, after_from, after_to),
        "failures": report["failures"],
        "failure_sample": report.get("failure_sample"),
        "hub_cpu_s": round(cpu, 2),
        "hub_cpu_pct": round(100 * cpu / (flood_to - armed_at), 1),
        "rss_before_kb": rss_before,
        "rss_peak_kb": max(rss.peak(armed_at), rss_end),
        "rss_end_kb": rss_end,
        "rss_after_kb": rss_after,
        "rss_series_mb": rss.series_mb(before_from),
        "capped": rss.capped_at is not None,
        "bad_peer": summary,
        "armed_at": armed_at,
    }


def _median(values: list[Any]) -> Any:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    middle = len(known) // 2
    if len(known) % 2:
        return known[middle]
    return (known[middle - 1] + known[middle]) / 2


def median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One flood's figures over its rounds: the median of each (failures: their sum,
    `capped`: any), with every round's own row under `rounds`."""
    row: dict[str, Any] = {"scenario": rounds[0]["scenario"], "kind": "flood"}
    for key in ("flood_seconds", "hub_cpu_s", "hub_cpu_pct", "rss_before_kb", "rss_peak_kb",
                "rss_end_kb", "rss_after_kb", "hub_closed_4006", "held_peak_kb"):
        row[key] = _median([r[key] for r in rounds])
    for window in ("before", "during", "after"):
        row[window] = {key: _median([r[window][key] for r in rounds])
                       for key in rounds[0][window]}
    row["failures"] = sum(r["failures"] for r in rounds)
    row["failure_sample"] = next((r["failure_sample"] for r in rounds if r["failure_sample"]),
                                 None)
    row["capped"] = any(r["capped"] for r in rounds)
    row["bad_peer"] = rounds[0]["bad_peer"]
    row["rounds"] = rounds
    return row
