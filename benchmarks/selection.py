"""How fast is node selection, and how fast is deriving the next snapshot?

Builds seeded synthetic fleets that look like real ones and measures, per
fleet size, the latency of `hub.core.selector.select_node` against a naive
selector written here that scans every node of the snapshot, on the same
requests in the same run. It also measures what keeping the snapshot fresh
costs: one load change (`Snapshot.with_running`), one node join
(`Snapshot.with_node` of a new node), one leave (`Snapshot.without_node`),
building a whole snapshot in one pass (`Snapshot.of`, the fleet generation
not counted), and a `register` at `max_capability_entries` (1,024 entries:
pairs, ASR and TTS languages and features together) joining at 10,000
nodes. Targets: join and leave p99 <= 500 us at 100,000 nodes, a
100,000-node build <= 3 s.

Selection is timed warm (an untimed pass over every request first: a
ring's condition bitmaps are made the first time a selection asks for them
in a chunk, then kept) and, separately, cold: the first pass right after a
bulk build (the `cold p99` column), which pays for making them.

Last, the persistent map under the snapshot: `immutables.Map` (the one the
hub uses) against the hand-written `PMap` it replaced
(`benchmarks/_pmap_baseline.py`), lookup and set at 100,000 keys.

The fleet: about 40 languages with Zipf-like popularity; 2-6 translation
pairs per node, with ASR languages = the pairs' sources and TTS languages =
their targets for most nodes (a few lack one side); 16 model features with
skewed popularity; 8-32 pools; `max_concurrency` from 1 to 8; mixed load
with some full nodes; about 3% draining and 1% offline.

The requests: a popular pair, a rare pair, a pair with features, a preferred
node (sometimes valid, sometimes not), a preferred pool, a routing key, a
failover (one excluded node) and an impossible request, drawn with
realistic weights.

Method: every call is timed alone with `time.perf_counter_ns`; the garbage
collector is disabled during timed loops (and re-enabled after); every timed
loop is preceded by an untimed warm-up pass over part of the same inputs.
The naive selector is slow by design, so it gets fewer requests at large
sizes (see `NAIVE_REQUESTS`); its percentiles are over that subset, which is
drawn from the same request stream.

Usage:
    python benchmarks/selection.py [--sizes 100,1000,10000,100000] [--seed 1]
                                   [--requests 20000] [--big-at 10000] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import immutables
from _pmap_baseline import PMap

from hub.core.capabilities import NodeCapabilities, Requirements, capability_mismatch
from hub.core.messages import Pipeline
from hub.core.selector import select_node
from hub.core.snapshot import DRAINING, OFFLINE, ONLINE, NodeState, NodeStatus, Snapshot

LANGUAGES = (
    "en", "zh", "es", "hi", "ar", "fr", "pt", "ru", "ja", "de", "ko", "it", "tr", "vi", "id",
    "pl", "nl", "th", "uk", "fa", "ro", "el", "cs", "sv", "hu", "he", "da", "fi", "no", "sk",
    "bg", "hr", "sr", "lt", "sl", "lv", "et", "ms", "bn", "ta",
)
FEATURES = (
    "speaker_identification", "emotion_detection", "voice_cloning", "punctuation",
    "diarization", "profanity_filter", "timestamps", "noise_suppression", "formality",
    "glossary", "accent_adaptation", "summarization", "code_switching", "singing_voice",
    "whisper_mode", "lip_sync",
)

SIZES = (100, 1_000, 10_000, 100_000)
NAIVE_REQUESTS = {100: 5_000, 1_000: 2_000, 10_000: 500, 100_000: 200}
"""Requests timed for the naive selector per size (the first N of the same stream)."""

REQUEST_KINDS: dict[str, float] = {
    "popular_pair": 0.40,
    "rare_pair": 0.08,
    "features": 0.15,
    "preferred_node": 0.10,
    "pool": 0.10,
    "routing_key": 0.10,
    "failover": 0.04,
    "impossible": 0.03,
}


def _zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(n)]


LANG_WEIGHTS = _zipf_weights(len(LANGUAGES), 1.1)
FEATURE_INCLUDE = [min(0.6, 0.6 / (rank + 1) ** 0.8) for rank in range(len(FEATURES))]


# --- the synthetic fleet -------------------------------------------------------


def make_caps(rng: random.Random, pools: int) -> NodeCapabilities:
    pairs: set[tuple[str, str]] = set()
    for _ in range(rng.randint(2, 6)):
        src, tgt = rng.choices(LANGUAGES, LANG_WEIGHTS, k=2)
        while tgt == src:
            tgt = rng.choices(LANGUAGES, LANG_WEIGHTS)[0]
        pairs.add((src, tgt))
    asr = {s for s, _ in pairs}
    tts = {t for _, t in pairs}
    roll = rng.random()
    if roll < 0.04:
        asr = set()  # text/TTS-only node
    elif roll < 0.08:
        tts = set()  # ASR/MT-only node
    elif roll < 0.12:
        asr.discard(next(iter(sorted(asr))))  # one source without speech recognition
    features = {f for f, p in zip(FEATURES, FEATURE_INCLUDE, strict=True) if rng.random() < p}
    # Pools: skewed, a few big ones and a long tail.
    pool = min(int(rng.paretovariate(1.2)) - 1, pools - 1)
    return NodeCapabilities(
        language_pairs=frozenset(pairs),
        asr_languages=frozenset(asr),
        tts_languages=frozenset(tts),
        features=frozenset(features),
        max_concurrency=rng.choice((1, 1, 2, 2, 4, 4, 4, 8, 8, 3, 6)),
        pool=pool,
        labels=(("region", rng.choice(("eu", "us", "ap"))),),
    )


def make_state(rng: random.Random, node_id: str, pools: int) -> NodeState:
    caps = make_caps(rng, pools)
    roll = rng.random()
    status: NodeStatus = OFFLINE if roll < 0.01 else DRAINING if roll < 0.04 else ONLINE
    cap = caps.max_concurrency
    running = cap if rng.random() < 0.15 else rng.randint(0, cap - 1)
    return NodeState.create(node_id, caps, hub_id=f"hub-{rng.randrange(3)}",
                            status=status, running=running)


def make_fleet(size: int, seed: int) -> tuple[list[NodeState], int]:
    rng = random.Random(f"fleet-{size}-{seed}")
    pools = rng.randint(8, 32)
    return [make_state(rng, f"gpu-{i:06d}", pools) for i in range(size)], pools


def make_requests(
    states: Sequence[NodeState], pools: int, count: int, seed: int
) -> list[tuple[str, Requirements]]:
    rng = random.Random(f"requests-{len(states)}-{seed}")
    pair_counts = Counter(p for s in states for p in s.caps.language_pairs)
    pairs = list(pair_counts)
    weights = [pair_counts[p] for p in pairs]
    ordered = sorted(pairs, key=lambda p: pair_counts[p])
    rare = ordered[: max(1, len(ordered) // 10)]
    kinds = list(REQUEST_KINDS)
    kind_weights = list(REQUEST_KINDS.values())
    ids = [s.node_id for s in states]
    out: list[tuple[str, Requirements]] = []
    for i in range(count):
        kind = rng.choices(kinds, kind_weights)[0]
        src, tgt = rng.choices(pairs, weights)[0]
        pipeline = Pipeline()
        if rng.random() < 0.1:
            pipeline = Pipeline(asr=False, tts=rng.random() < 0.5)
        req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline)
        if kind == "rare_pair":
            src, tgt = rng.choice(rare)
            req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline)
        elif kind == "features":
            k = rng.choice((1, 1, 2))
            feats = frozenset(rng.choices(FEATURES, FEATURE_INCLUDE, k=k))
            req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline, features=feats)
        elif kind == "preferred_node":
            node = states[rng.randrange(len(states))]
            if rng.random() < 0.6:
                # Usually valid: ask for one of its own pairs.
                src, tgt = rng.choice(sorted(node.caps.language_pairs))
                req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline,
                                   preferred_node_id=node.node_id)
            else:
                wrong = node.node_id if rng.random() < 0.7 else f"gone-{i}"
                req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline,
                                   preferred_node_id=wrong)
        elif kind == "pool":
            req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline,
                               preferred_pool=min(int(rng.paretovariate(1.2)) - 1, pools - 1))
        elif kind == "routing_key":
            req = Requirements(src_lang=src, tgt_lang=tgt, pipeline=pipeline,
                               routing_key=f"session-{rng.randrange(10_000)}")
        elif kind == "failover":
            req = req.excluding(rng.choice(ids))
        elif kind == "impossible":
            req = Requirements(src_lang="xx", tgt_lang=tgt, features=frozenset({"teleport"}))
        out.append((kind, req))
    return out


# --- the naive selector: what selection costs without indexes ---------------------


def naive_select(snapshot: Snapshot, req: Requirements, rng: random.Random) -> str | None:
    """Scan every node: preferred node, then narrow and wide attempts, max-free random pick."""
    if req.preferred_node_id is not None:
        pref = snapshot.get(req.preferred_node_id)
        if (
            pref is not None
            and pref.node_id not in req.excluded
            and capability_mismatch(pref.caps, req) is None
            and pref.status == ONLINE
            and pref.running < pref.caps.max_concurrency
        ):
            return pref.node_id
    scopes: tuple[int | None, ...] = (
        (None,) if req.preferred_pool is None else (req.preferred_pool, None)
    )
    for pool in scopes:
        best: list[str] = []
        best_free = 0
        for state in snapshot:
            if state.node_id in req.excluded:
                continue
            caps = state.caps
            if pool is not None and caps.pool != pool:
                continue
            if capability_mismatch(caps, req) is not None or state.status != ONLINE:
                continue
            free = caps.max_concurrency - state.running
            if free <= 0 or free < best_free:
                continue
            if free > best_free:
                best, best_free = [state.node_id], free
            else:
                best.append(state.node_id)
        if best:
            return rng.choice(best)
    return None


# --- measurement ------------------------------------------------------------------


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted nanosecond samples, in microseconds."""
    if not sorted_ns:
        return float("nan")
    rank = min(len(sorted_ns) - 1, max(0, round(q / 100 * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[rank] / 1000


def timed(calls: Sequence[Callable[[], object]], warmup: int) -> list[int]:
    """Run each call once, timing it alone; GC off during the loop; sorted ns."""
    clock = time.perf_counter_ns
    for call in calls[:warmup]:
        call()
    samples: list[int] = []
    append = samples.append
    gc.collect()
    gc.disable()
    try:
        for call in calls:
            t0 = clock()
            call()
            append(clock() - t0)
    finally:
        gc.enable()
    samples.sort()
    return samples


def time_selection(
    select: Callable[[Snapshot, Requirements, random.Random], object],
    snapshot: Snapshot,
    requests: Sequence[tuple[str, Requirements]],
    seed: int,
    *,
    warmup: int | None = None,
) -> tuple[list[int], dict[str, list[int]]]:
    """Time each request once; `warmup` untimed requests first (default: a tenth)."""
    rng = random.Random(seed)
    clock = time.perf_counter_ns
    count = max(50, len(requests) // 10) if warmup is None else warmup
    for _, req in requests[:count]:  # warm-up
        select(snapshot, req, rng)
    samples: list[int] = []
    per_kind: dict[str, list[int]] = {kind: [] for kind in REQUEST_KINDS}
    gc.collect()
    gc.disable()
    try:
        for kind, req in requests:
            t0 = clock()
            select(snapshot, req, rng)
            dt = clock() - t0
            samples.append(dt)
            per_kind[kind].append(dt)
    finally:
        gc.enable()
    samples.sort()
    for values in per_kind.values():
        values.sort()
    return samples, per_kind


def time_apply(snapshot: Snapshot, states: Sequence[NodeState], pools: int, seed: int,
               count: int) -> tuple[list[int], list[int], list[int]]:
    """Latency of one load change, one node join and one leave, each on the same base
    snapshot."""
    rng = random.Random(f"apply-{seed}")
    loads = []
    for _ in range(count):
        s = states[rng.randrange(len(states))]
        running = (s.running + 1 + rng.randrange(s.caps.max_concurrency)) % (
            s.caps.max_concurrency + 1
        )
        loads.append((s.node_id, running))
    load_calls = [
        (lambda n=n, r=r: snapshot.with_running(n, r)) for n, r in loads
    ]
    joins = [make_state(rng, f"new-{i:06d}", pools) for i in range(min(count, 2_000))]
    join_calls = [(lambda s=s: snapshot.with_node(s)) for s in joins]
    leaving = [states[rng.randrange(len(states))].node_id for _ in range(min(count, 2_000))]
    leave_calls = [(lambda n=n: snapshot.without_node(n)) for n in leaving]
    return (
        timed(load_calls, warmup=count // 5),
        timed(join_calls, warmup=len(join_calls) // 5),
        timed(leave_calls, warmup=len(leave_calls) // 5),
    )


def big_caps(rng: random.Random, entries: int = 1_024) -> NodeCapabilities:
    """A node at `max_capability_entries`: 400 pairs, 40 ASR and 40 TTS languages and
    the rest features (1,024 entries together by default)."""
    langs = [f"x{i:02d}" for i in range(40)]
    pairs = [(a, b) for a in langs for b in langs if a != b]
    rng.shuffle(pairs)
    pairs = pairs[:400]
    features = [f"feature-{i}" for i in range(entries - 400 - 80)]
    return NodeCapabilities(
        language_pairs=frozenset(pairs), asr_languages=frozenset(langs),
        tts_languages=frozenset(langs), features=frozenset(features), max_concurrency=8,
    )


def time_big_register(size: int, seed: int, count: int = 20) -> tuple[list[int], int]:
    """A node with 1,024 capability entries joining a `size`-node snapshot (the index
    part of a `register`), on the same base snapshot each time."""
    states, _ = make_fleet(size, seed)
    snapshot = Snapshot.of(states)
    rng = random.Random(f"big-{seed}")
    nodes = [NodeState.create(f"big-{i}", big_caps(rng)) for i in range(count)]
    entries = len(nodes[0].caps.language_pairs) + 80 + len(nodes[0].caps.features)
    return timed([(lambda s=s: snapshot.with_node(s)) for s in nodes], warmup=2), entries


def time_maps(keys: int = 100_000, count: int = 50_000) -> dict[str, float]:
    """Lookup and set at `keys` keys: immutables.Map vs the hand-written PMap."""
    data = {f"gpu-{i:06d}": i for i in range(keys)}
    rng = random.Random(7)
    picks = [f"gpu-{rng.randrange(keys):06d}" for _ in range(count)]
    out: dict[str, float] = {}
    for name, m in (("immutables", immutables.Map(data)), ("pmap", PMap.from_mapping(data))):
        get = m.__getitem__
        setter = m.set
        clock = time.perf_counter_ns
        gc.disable()
        try:
            t0 = clock()
            for k in picks:
                get(k)
            out[f"{name}_get_ns"] = (clock() - t0) / count
            t0 = clock()
            for k in picks:
                setter(k, 0)
            out[f"{name}_set_us"] = (clock() - t0) / count / 1000
        finally:
            gc.enable()
    return out


def run(sizes: Sequence[int], seed: int, requests: int, big_at: int = 10_000) -> dict[str, Any]:
    print(
        f"# select_node vs naive full scan; seed={seed}; python {platform.python_version()}; "
        f"per-call time.perf_counter_ns, gc disabled in timed loops, "
        f"warm: an untimed pass over every request first; cold p99: the first pass "
        f"after the bulk build"
    )
    print(
        f"# {requests} requests per size for select_node; naive: "
        + ", ".join(f"{n}->{NAIVE_REQUESTS.get(n, 200)}" for n in sizes)
        + " (first N of the same request stream); times in microseconds"
    )
    header = (
        f"{'nodes':>7} {'p50':>6} {'p99':>6} {'cold p99':>8} {'naive p50':>10} "
        f"{'naive p99':>10} {'speedup':>8} {'load p50':>8} {'load p99':>8} {'join p50':>8} "
        f"{'join p99':>8} {'leave p50':>9} {'leave p99':>9} {'build s':>8}"
    )
    print(header)
    result: dict[str, Any] = {"seed": seed, "requests": requests, "sizes": []}
    for size in sizes:
        states, pools = make_fleet(size, seed)
        gc.collect()
        t0 = time.perf_counter()
        snapshot = Snapshot.of(states)
        build_s = time.perf_counter() - t0
        reqs = make_requests(states, pools, requests, seed)
        # Cold: the first pass right after the bulk build (no untimed warm-up).
        cold, _ = time_selection(select_node, snapshot, reqs, seed, warmup=0)
        # Warm: the steady state, every request seen once before.
        fast, fast_kinds = time_selection(select_node, snapshot, reqs, seed, warmup=len(reqs))
        naive_reqs = reqs[: NAIVE_REQUESTS.get(size, 200)]
        naive, _ = time_selection(naive_select, snapshot, naive_reqs, seed)
        load, join, leave = time_apply(snapshot, states, pools, seed, count=20_000)
        row: dict[str, Any] = {
            "nodes": size,
            "pools": pools,
            "p50_us": percentile(fast, 50),
            "p99_us": percentile(fast, 99),
            "max_us": fast[-1] / 1000,
            "cold_p50_us": percentile(cold, 50),
            "cold_p99_us": percentile(cold, 99),
            "naive_requests": len(naive_reqs),
            "naive_p50_us": percentile(naive, 50),
            "naive_p99_us": percentile(naive, 99),
            "apply_load_p50_us": percentile(load, 50),
            "apply_load_p99_us": percentile(load, 99),
            "apply_join_p50_us": percentile(join, 50),
            "apply_join_p99_us": percentile(join, 99),
            "apply_leave_p50_us": percentile(leave, 50),
            "apply_leave_p99_us": percentile(leave, 99),
            "build_s": build_s,
            "per_kind": {
                kind: {"n": len(v), "p50_us": percentile(v, 50), "p99_us": percentile(v, 99)}
                for kind, v in fast_kinds.items()
            },
        }
        row["speedup_p50"] = row["naive_p50_us"] / row["p50_us"]
        result["sizes"].append(row)
        print(
            f"{size:>7} {row['p50_us']:>6.2f} {row['p99_us']:>6.2f} {row['cold_p99_us']:>8.1f} "
            f"{row['naive_p50_us']:>10.1f} {row['naive_p99_us']:>10.1f} "
            f"{row['speedup_p50']:>7.0f}x {row['apply_load_p50_us']:>8.2f} "
            f"{row['apply_load_p99_us']:>8.2f} {row['apply_join_p50_us']:>8.1f} "
            f"{row['apply_join_p99_us']:>8.1f} {row['apply_leave_p50_us']:>9.1f} "
            f"{row['apply_leave_p99_us']:>9.1f} {build_s:>8.2f}",
            flush=True,
        )
        del snapshot, states
    print("# per request kind, select_node p50/p99 (us):")
    for row in result["sizes"]:
        kinds = "  ".join(
            f"{k}={v['p50_us']:.1f}/{v['p99_us']:.1f}" for k, v in row["per_kind"].items()
        )
        print(f"#  {row['nodes']:>7}: {kinds}")
    # Headline apply costs: the largest size measured (the hardest case).
    last = result["sizes"][-1]
    for name in ("load", "join", "leave"):
        for q in ("p50", "p99"):
            result[f"apply_{name}_{q}_us"] = last[f"apply_{name}_{q}_us"]
    result["build_s"] = last["build_s"]
    if big_at:
        big, entries = time_big_register(big_at, seed)
        result["big_register"] = {
            "nodes": big_at, "entries": entries,
            "p50_us": percentile(big, 50), "p99_us": percentile(big, 99),
        }
        print(
            f"# a node with {entries} capability entries joining {big_at} nodes "
            f"(Snapshot.with_node): p50 {percentile(big, 50) / 1000:.2f} ms, "
            f"p99 {percentile(big, 99) / 1000:.2f} ms"
        )
    maps = time_maps()
    result["maps_100k"] = maps
    print(
        "# persistent map at 100,000 keys: immutables.Map get "
        f"{maps['immutables_get_ns']:.0f} ns, set {maps['immutables_set_us']:.2f} us; "
        f"hand-written PMap get {maps['pmap_get_ns']:.0f} ns, set {maps['pmap_set_us']:.2f} us"
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES),
                        help="comma-separated fleet sizes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20_000,
                        help="requests timed per size for select_node (default: %(default)s)")
    parser.add_argument("--big-at", type=int, default=10_000,
                        help="fleet size a 1,024-entry node joins (0: skip; default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    result = run(sizes, args.seed, args.requests, args.big_at)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
