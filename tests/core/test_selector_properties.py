"""Property tests: select_node and breakdown against a brute-force oracle.

The oracle loops over every node and applies the capability rules (written
out here, not read from the stage table: `capability_mismatch` and `unmet`
must agree),
status, load, exclusions and pool directly, in `REASON_ORDER`. Requests have
one direction, both directions between two languages (a two-way job), or a
few arbitrary ones. Small alphabets make matches (and near misses) common.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.core.capabilities import (
    AT_CAPACITY,
    DRAINING,
    EXCLUDED,
    OFFLINE,
    POOL_MISMATCH,
    REASON_ORDER,
    NodeCapabilities,
    Requirements,
    capability_mismatch,
    checks_of,
    unmet,
)
from hub.core.messages import Pipeline
from hub.core.selector import breakdown, select_node
from hub.core.snapshot import NodeState, Snapshot
from hub.core.stages import both_ways

LANGS = ["en", "de", "fr"]
FEATURES = ["emo", "spk", "clone"]
POOLS = [0, 1, 2]

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

langs = st.sampled_from(LANGS)
lang_sets = st.frozensets(langs)
pairs = st.frozensets(st.tuples(langs, langs).filter(lambda p: p[0] != p[1]), max_size=4)


@st.composite
def node_states(draw: st.DrawFn, node_id: str) -> NodeState:
    max_concurrency = draw(st.integers(1, 4))
    c = NodeCapabilities(
        language_pairs=draw(pairs),
        asr_languages=draw(lang_sets),
        tts_languages=draw(lang_sets),
        features=draw(st.frozensets(st.sampled_from(FEATURES))),
        max_concurrency=max_concurrency,
        pool=draw(st.sampled_from(POOLS)),
    )
    status = draw(st.sampled_from(["online"] * 6 + ["draining", "offline"]))
    running = draw(st.integers(0, max_concurrency + 1))
    return NodeState.create(node_id, c, status=status, running=running)


@st.composite
def fleets(draw: st.DrawFn, max_size: int = 40) -> list[NodeState]:
    n = draw(st.integers(0, max_size))
    return [draw(node_states(f"n{i}")) for i in range(n)]


@st.composite
def requirements(draw: st.DrawFn, ids: list[str]) -> Requirements:
    src = draw(langs)
    tgt = draw(langs.filter(lambda t: t != src))
    node_ids = st.sampled_from([*ids, "ghost"]) if ids else st.just("ghost")
    directions = draw(st.sampled_from(["one", "one", "both", "any"]))
    return Requirements(
        src_lang=src,
        tgt_lang=tgt,
        directions=(
            () if directions == "one"
            else both_ways(src, tgt) if directions == "both"
            else tuple(draw(st.lists(st.tuples(langs, langs), min_size=1, max_size=3)))
        ),
        pipeline=draw(st.sampled_from(
            [Pipeline()] * 4
            + [Pipeline(asr=False), Pipeline(tts=False), Pipeline(nmt=False),
               Pipeline(asr=False, tts=False), Pipeline(asr=False, nmt=False, tts=False)]
        )),
        features=draw(st.frozensets(st.sampled_from(FEATURES), max_size=2)),
        preferred_node_id=draw(st.none() | node_ids),
        preferred_pool=draw(st.none() | st.sampled_from([*POOLS, 7])),
        routing_key=draw(st.none() | st.text("abc", min_size=1, max_size=4)),
        excluded=draw(st.frozensets(node_ids, max_size=3)),
    )


def oracle_capability(caps: NodeCapabilities, req: Requirements) -> str | None:
    """docs/protocol.md's rules, each stage in every direction before the next stage."""
    directions = req.directions
    pipeline = req.pipeline
    if pipeline.nmt and any(d not in caps.language_pairs for d in directions):
        return "lang_pair_unsupported"
    if pipeline.asr and any(src not in caps.asr_languages for src, _ in directions):
        return "asr_lang_unsupported"
    if pipeline.tts and any(tgt not in caps.tts_languages for _, tgt in directions):
        return "tts_lang_unsupported"
    if not req.features <= caps.features:
        return "feature_missing"
    return None


def oracle_reason(state: NodeState, req: Requirements, pool: int | None) -> str | None:
    if state.node_id in req.excluded:
        return EXCLUDED
    if pool is not None and state.caps.pool != pool:
        return POOL_MISMATCH
    mismatch = oracle_capability(state.caps, req)
    assert capability_mismatch(state.caps, req) == mismatch
    checks = checks_of(req.pipeline, req.directions)
    assert unmet(state.caps, checks, req.features) == mismatch
    if mismatch is not None:
        return mismatch
    if state.status == "offline":
        return OFFLINE
    if state.status == "draining":
        return DRAINING
    if state.running >= state.caps.max_concurrency:
        return AT_CAPACITY
    return None


def oracle_eligible(states: list[NodeState], req: Requirements, pool: int | None) -> list[str]:
    return [s.node_id for s in states if oracle_reason(s, req, pool) is None]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[NodeState], Requirements, int]:
    states = draw(fleets())
    req = draw(requirements([s.node_id for s in states]))
    return states, req, draw(st.integers(0, 2**32))


@SETTINGS
@given(scenarios())
def test_selection_agrees_with_oracle(scenario: tuple[list[NodeState], Requirements, int]) -> None:
    states, req, seed = scenario
    snap = Snapshot.of(states)
    sel = select_node(snap, req, random.Random(seed))
    wide = oracle_eligible(states, req, None)
    if sel.node_id is None:
        assert wide == [], "no node only when the oracle finds none in either attempt"
        assert sel.considered == len(snap) == sum(sel.reasons.values())
        counts = Counter(oracle_reason(s, req, None) for s in states)
        assert sel.reasons == {r: counts[r] for r in REASON_ORDER if counts[r]}
        return
    # The chosen node satisfies every constraint.
    chosen = snap.get(sel.node_id)
    assert chosen is not None
    assert oracle_reason(chosen, req, None) is None
    assert sel.node_id in wide
    if req.preferred_node_id is not None and req.preferred_node_id in wide:
        assert (sel.node_id, sel.via, sel.preferred_reason) == (req.preferred_node_id,
                                                                "preferred", None)
        return
    if req.preferred_node_id is not None:
        assert sel.preferred_reason is not None
    if req.preferred_pool is not None:
        narrow = oracle_eligible(states, req, req.preferred_pool)
        if narrow:
            assert sel.attempt == 1 and sel.node_id in narrow
        else:
            assert sel.attempt == 2
    else:
        assert sel.attempt == 1
    assert sel.via == ("load" if req.routing_key is None else "routing_key")


@SETTINGS
@given(scenarios(), st.sampled_from([None, *POOLS, 7]))
def test_breakdown_matches_oracle(
    scenario: tuple[list[NodeState], Requirements, int], pool: int | None
) -> None:
    states, req, _ = scenario
    snap = Snapshot.of(states)
    counts = Counter(oracle_reason(s, req, pool) or "eligible" for s in states)
    expected = {r: counts[r] for r in (*REASON_ORDER, "eligible") if counts[r]}
    got = breakdown(snap, req, pool)
    assert got == expected
    assert sum(got.values()) == len(snap)


@SETTINGS
@given(scenarios())
def test_same_seed_same_choice(scenario: tuple[list[NodeState], Requirements, int]) -> None:
    states, req, seed = scenario
    snap = Snapshot.of(states)
    # The same snapshot built incrementally must answer the same way.
    incremental = Snapshot()
    for s in states:
        incremental = incremental.with_node(s)
    first = select_node(snap, req, random.Random(seed))
    assert select_node(snap, req, random.Random(seed)) == first
    assert select_node(incremental, req, random.Random(seed)) == first


@SETTINGS
@given(fleets(max_size=30), st.data())
def test_routing_key_affinity(states: list[NodeState], data: st.DataObject) -> None:
    req = data.draw(requirements([s.node_id for s in states]))
    req = Requirements(
        src_lang=req.src_lang, tgt_lang=req.tgt_lang, pipeline=req.pipeline,
        features=req.features, routing_key=data.draw(st.text("abcd", min_size=1, max_size=5)),
        excluded=req.excluded, directions=req.directions,
    )
    snap = Snapshot.of(states)
    first = select_node(snap, req, random.Random(0)).node_id
    if first is None:
        return
    # Nodes that cannot serve the request join and leave: no effect.
    others = [data.draw(node_states(f"x{i}")) for i in range(data.draw(st.integers(1, 8)))]
    unrelated = [s for s in others if oracle_reason(s, req, None) is not None]
    grown = snap
    for s in unrelated:
        grown = grown.with_node(s)
    assert select_node(grown, req, random.Random(1)).node_id == first
    shrunk = grown
    for s in unrelated[: len(unrelated) // 2]:
        shrunk = shrunk.without_node(s.node_id)
    assert select_node(shrunk, req, random.Random(2)).node_id == first
    # Unrelated existing nodes leave, and eligible nodes other than the chosen one leave.
    leaving = data.draw(st.lists(st.sampled_from([s.node_id for s in states]), max_size=10))
    smaller = snap
    for node_id in leaving:
        if node_id != first:
            smaller = smaller.without_node(node_id)
    assert select_node(smaller, req, random.Random(3)).node_id == first
    # Load changes of other nodes do not move the key either.
    busy = snap
    for s in states:
        if s.node_id != first:
            busy = busy.with_running(s.node_id, s.caps.max_concurrency)
    assert select_node(busy, req, random.Random(4)).node_id == first
