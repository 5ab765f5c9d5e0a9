"""Figures from the benchmarks' JSON results: PNGs for the README and the results page.

Reads `benchmarks/results/*.json` as the benchmarks write them (`--json PATH`)
and draws, each when its input exists (a missing input is skipped with a note
saying which command makes it):

- `selection.png` (selection.json, benchmarks/selection.py): select_node p50/p99
  against the naive full scan, over fleet sizes 100..100,000, log-log;
- `dispatch_rtt.png` (dispatch-local.json, dispatch-cross_instance.json,
  benchmarks/dispatch.py): the round trip of one job in flight, the hub (and
  cross-hub) against the raw relay floor: the distribution (CDF) when the
  results carry `rtt_quantiles_us` (every recent run), otherwise the
  p50 / p90 / p99 of each round;
- `throughput.png` (the same files): jobs per second, local / cross / floor,
  the median of the rounds with their range;
- `saturation.png` (saturation*.json, benchmarks/saturation.py): goodput as a share
  of capacity with the admission queue, without it (v1) and at the queue floor
  (benchmarks/queue_floor.py: what the rig allows), queue wait, and the share
  of each client while both were backlogged;
- `storm.png` (storm*.json, benchmarks/storm.py): the bystander's round trip
  before and during a reconnect storm, with the storm's size and how long
  registration took.

matplotlib is a benchmark-only dependency: `pip install -e '.[bench]'`.

Usage:
    python benchmarks/report.py [--results benchmarks/results] [--out DIR]

The figures go to `<results>/figures/` unless `--out` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, ScalarFormatter

RESULTS = Path(__file__).resolve().parent / "results"

HUB = "#2a9d8f"
CROSS = "#e76f51"
FLOOR = "#8d99ae"
NAIVE = "#bc4749"
QUEUE = "#2a9d8f"
V1 = "#adb5bd"

COMMANDS = {
    "selection": "python benchmarks/selection.py --json benchmarks/results/selection.json",
    "dispatch": "python benchmarks/dispatch.py --rounds 3 --memory --json "
                "benchmarks/results/dispatch-local.json (and --mode cross_instance --json "
                "benchmarks/results/dispatch-cross_instance.json)",
    "saturation": "python benchmarks/saturation.py --json benchmarks/results/saturation.json",
    "storm": "python benchmarks/storm.py --agents 10000 --json benchmarks/results/storm.json",
}


_minor_ticks = FuncFormatter(lambda x, _: f"{x:g}" if str(int(x))[0] in "25" else "")
"""Label the 2s and 5s between the powers of ten of a log axis."""


class Missing(Exception):
    """An input a figure needs is not there: the figure is skipped with this note."""


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise Missing(f"no {path.name}") from None
    except json.JSONDecodeError as exc:
        raise Missing(f"{path.name} is not JSON: {exc}") from None


def _style(fig: Figure, title: str, note: str) -> None:
    fig.suptitle(title, fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.text(0.01, 0.005, note, fontsize=7.5, color="#555555", ha="left", va="bottom")


def _machine(out: dict[str, Any]) -> str:
    machine = out.get("machine") or {}
    cpus = machine.get("cpus") or (out.get("settings") or {}).get("cpus") or out.get("cpus")
    return f"{cpus} CPUs" if cpus else "CPUs not recorded"


# --- selection ---------------------------------------------------------------------------


def selection(results: Path) -> Figure:
    data = _load(results / "selection.json")
    sizes = data.get("sizes") or []
    if not sizes:
        raise Missing("selection.json has no sizes")
    nodes = [row["nodes"] for row in sizes]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ax.plot(nodes, [r["p50_us"] for r in sizes], "o-", color=HUB, label="select_node p50")
    ax.plot(nodes, [r["p99_us"] for r in sizes], "o--", color=HUB, label="select_node p99")
    ax.plot(nodes, [r["naive_p50_us"] for r in sizes], "s-", color=NAIVE, label="naive scan p50")
    ax.plot(nodes, [r["naive_p99_us"] for r in sizes], "s--", color=NAIVE,
            label="naive scan p99")
    for row in sizes:  # the speedup, between the two p50 curves
        middle = (row["naive_p50_us"] * row["p50_us"]) ** 0.5
        ax.annotate(f"{row['naive_p50_us'] / row['p50_us']:,.0f}x faster", (row["nodes"], middle),
                    ha="center", va="center", fontsize=8, color="#333333")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes in the fleet")
    ax.set_ylabel("time per selection (µs)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _style(fig, "Node selection vs a naive full scan",
           f"benchmarks/selection.py, seed {data.get('seed')}, {data.get('requests')} requests "
           "per size; labels: speedup at p50")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


# --- dispatch ---------------------------------------------------------------------------


def _dispatch_files(results: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for mode in ("local", "cross_instance"):
        path = results / f"dispatch-{mode}.json"
        if path.exists():
            found[mode] = _load(path)
    if not found:
        raise Missing("no dispatch-local.json or dispatch-cross_instance.json")
    return found


def _targets(mode: str) -> list[tuple[str, str, str]]:
    """(key in a round, label, colour) of each measurement of a dispatch run."""
    if mode == "local":
        return [("hub", "hub (local)", HUB), ("floor", "raw relay floor", FLOOR)]
    return [("cross", "hub, cross-instance", CROSS), ("local", "hub, local", HUB),
            ("floor", "raw relay floor", FLOOR)]


def _median_quantiles(rounds: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    curves = [r[key]["rtt_quantiles_us"] for r in rounds if "rtt_quantiles_us" in r.get(key, {})]
    if not curves:
        return [], []
    qs = curves[0]["q"]
    us = [statistics.median(c["us"][i] for c in curves) for i in range(len(qs))]
    return qs, us


def dispatch_rtt(results: Path) -> Figure:
    runs = _dispatch_files(results)
    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.4), squeeze=False)
    for ax, (mode, out) in zip(axes[0], runs.items(), strict=True):
        rounds = out.get("rounds") or []
        drawn = False
        for key, label, colour in _targets(mode):
            qs, us = _median_quantiles(rounds, key)
            if qs:
                ax.plot(us, [q * 100 for q in qs], color=colour, label=label, lw=1.8)
                drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(_minor_ticks)
            ax.set_xlabel("round trip, submit to result (µs)")
            ax.set_ylabel("percentile")
            ax.set_ylim(0, 100)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{mode}: distribution (median of {len(rounds)} rounds)", fontsize=10)
        else:
            _rtt_bars(ax, mode, out)
        ax.legend(fontsize=8, loc="lower right" if drawn else "upper left")
    _style(fig, "Dispatch round trip: the hub against a raw relay floor",
           f"benchmarks/dispatch.py, one job in flight, no-op nodes; {_machine(out)}; "
           "a shared, noisy machine: compare within a figure")
    fig.tight_layout(rect=(0, 0.03, 1, 0.93))
    return fig


def _rtt_bars(ax: Any, mode: str, out: dict[str, Any]) -> None:
    """Results written before the distribution was recorded: p50 / p90 / p99 per round."""
    rounds = out.get("rounds") or []
    stats = ("rtt_p50_us", "rtt_p90_us", "rtt_p99_us")
    targets = [t for t in _targets(mode) if rounds and t[0] in rounds[0]]
    width = 0.8 / max(1, len(targets))
    for i, (key, label, colour) in enumerate(targets):
        medians = [statistics.median(r[key][s] for r in rounds) for s in stats]
        lows = [min(r[key][s] for r in rounds) for s in stats]
        highs = [max(r[key][s] for r in rounds) for s in stats]
        xs = [j + i * width for j in range(len(stats))]
        ax.bar(xs, medians, width, color=colour, label=label,
               yerr=[[m - lo for m, lo in zip(medians, lows, strict=True)],
                     [hi - m for m, hi in zip(medians, highs, strict=True)]],
               capsize=3)
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(stats))],
                  ["p50", "p90", "p99"])
    ax.set_ylabel("round trip (µs)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"{mode}: median of {len(rounds)} rounds (bars: their range)", fontsize=10)


def throughput(results: Path) -> Figure:
    runs = _dispatch_files(results)
    bars: list[tuple[str, str, list[float]]] = []
    local = runs.get("local")
    if local:
        bars.append(("local", HUB, [r["hub"]["jobs_per_s"] for r in local["rounds"]]))
    cross = runs.get("cross_instance")
    if cross:
        if not local:
            bars.append(("local", HUB, [r["local"]["jobs_per_s"] for r in cross["rounds"]]))
        bars.append(("cross-instance", CROSS, [r["cross"]["jobs_per_s"] for r in cross["rounds"]]))
    floor_run = local or cross
    assert floor_run is not None
    bars.append(("raw relay floor", FLOOR, [r["floor"]["jobs_per_s"] for r in floor_run["rounds"]]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (_label, colour, values) in enumerate(bars):
        median = statistics.median(values)
        ax.bar(i, median, 0.6, color=colour,
               yerr=[[median - min(values)], [max(values) - median]], capsize=4)
        ax.annotate(f"{median:,.0f}/s", (i, max(values)), textcoords="offset points",
                    xytext=(0, 5), ha="center", fontsize=9)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylabel("jobs per second")
    ax.grid(True, axis="y", alpha=0.3)
    settings = floor_run.get("settings", {})
    _style(fig, "Throughput: local, cross-instance and the floor",
           f"benchmarks/dispatch.py, {settings.get('in_flight', '?')} jobs in flight, "
           f"{settings.get('nodes', '?')} no-op nodes; median of rounds (bars: their range)")
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    return fig


# --- saturation ----------------------------------------------------------------


def saturation(results: Path) -> Figure:
    paths = sorted(results.glob("saturation*.json"))
    if not paths:
        raise Missing("no saturation*.json")
    runs = sorted(
        ((p.stem.replace("saturation", "").strip("-") or "local", _load(p)) for p in paths),
        key=lambda run: (run[0] != "local", run[0]),
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    goodput, wait, shares = axes
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        """A legend label the first time it is drawn."""
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for i, (_name, out) in enumerate(runs):
        v1 = out.get("v1_baseline") or {}
        floor = out.get("floor_baseline") or {}
        goodput.bar(i - 0.27, out["goodput_ratio"] * 100, 0.27, color=QUEUE,
                    label=once("with the queue"))
        if v1:
            goodput.bar(i, v1["goodput_ratio"] * 100, 0.27, color=V1,
                        label=once("v1: no queue"))
        if floor:
            goodput.bar(i + 0.27, floor["goodput_ratio"] * 100, 0.27, color=FLOOR,
                        label=once("queue floor (a hub that does nothing else)"))
        wait.bar(i - 0.2, out["wait_p50_ms"], 0.4, color=QUEUE, label=once("p50"))
        wait.bar(i + 0.2, out["wait_p99_ms"], 0.4, color=CROSS, label=once("p99"))
        clients = sorted((out.get("shares") or {}).items())
        for j, (client, share) in enumerate(clients):
            if share is not None:
                shares.bar(i + (j - (len(clients) - 1) / 2) * 0.3, share * 100, 0.3,
                           color=(HUB, CROSS, FLOOR)[j % 3], label=once(f"client {client}"))
    # Each run's settings beyond the first's, under its name (the file names say them
    # too: -service20, -load3, ...).
    names = []
    for name, out in runs:
        s = out.get("settings", {})
        names.append(f"{name}\n{s.get('service_ms', 0):g} ms, {s.get('load', 0):g}x")
    for ax in axes:
        ax.set_xticks(range(len(runs)), names, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    goodput.axhline(95, color="#333333", lw=0.8, ls=":")
    goodput.set_ylim(0, 140)  # room for the legend above the bars
    goodput.set_yticks(range(0, 101, 20))
    goodput.set_ylabel("goodput, % of capacity")
    goodput.set_title("goodput at saturation (target 95%, dotted)", fontsize=10)
    goodput.legend(fontsize=7, loc="upper center", ncol=2)
    wait.set_ylabel("queue wait (ms)")
    wait.set_title("queue wait of ok jobs", fontsize=10)
    wait.legend(fontsize=8)
    shares.axhline(50, color="#333333", lw=0.8, ls=":")
    shares.set_ylim(0, 100)
    shares.set_ylabel("% of ok results while both backlogged")
    shares.set_title("fairness (equal share: 50%; no bars: never both backlogged)",
                     fontsize=10)
    if shares.get_legend_handles_labels()[0]:
        shares.legend(fontsize=8)
    else:
        shares.text(0.5, 0.6, "the clients were never\nboth backlogged", ha="center",
                    transform=shares.transAxes, fontsize=9, color="#555555")
    s = runs[0][1].get("settings", {})
    _style(fig, "A saturated fleet: the admission queue",
           f"benchmarks/saturation.py, {s.get('nodes')} nodes x {s.get('slots')} slots, "
           f"2 clients in the ratio {s.get('weights')}, {s.get('duration_s')} s; under each "
           f"run: service time, offered load / capacity")
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    return fig


# --- reconnect storm -----------------------------------------------------------


def storm(results: Path) -> Figure:
    paths = sorted(results.glob("storm*.json"))
    if not paths:
        raise Missing("no storm*.json")
    runs = [_load(p) for p in paths]
    fig, ax = plt.subplots(figsize=(max(6.5, 3.2 * len(runs)), 4.4))
    labels = []
    for i, out in enumerate(runs):
        for j, (key, label, colour) in enumerate((
            ("bystander_p50_ms_before", "p50 before", FLOOR),
            ("bystander_p99_ms_before", "p99 before", "#5c677d"),
            ("bystander_p50_ms_during", "p50 during", HUB),
            ("bystander_p99_ms_during", "p99 during", CROSS),
        )):
            ax.bar(i + (j - 1.5) * 0.2, out[key], 0.2, color=colour,
                   label=label if i == 0 else None)
            ax.annotate(f"{out[key]:.1f}", (i + (j - 1.5) * 0.2, out[key]),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        labels.append(f"{out['agents']:,} agents, {out.get('mode', 'local')}\n"
                      f"registered in {out['register_seconds']:.1f} s")
    ax.axhline(50, color="#333333", lw=0.8, ls=":")
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    ax.set_ylabel("bystander round trip (ms)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _style(fig, "Reconnect storm: a bystander's jobs while N agents register at once",
           "benchmarks/storm.py; dotted: the p99 target during the storm (50 ms)")
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    return fig


FIGURES: dict[str, tuple[Callable[[Path], Figure], str]] = {
    "selection": (selection, "selection"),
    "dispatch_rtt": (dispatch_rtt, "dispatch"),
    "throughput": (throughput, "dispatch"),
    "saturation": (saturation, "saturation"),
    "storm": (storm, "storm"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the folder of the results JSON (default benchmarks/results)")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default <results>/figures)")
    args = parser.parse_args(argv)
    out_dir: Path = args.out or args.results / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    made = 0
    for name, (draw, command) in FIGURES.items():
        try:
            fig = draw(args.results)
        except Missing as note:
            print(f"skipped {name}.png: {note} (make it with: {COMMANDS[command]})")
            continue
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        made += 1
        print(f"wrote {path}")
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
