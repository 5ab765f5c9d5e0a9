"""Unit tests for each rule of the selector's module docstring."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hub.core.capabilities import REASON_ORDER, Requirements
from hub.core.messages import Pipeline, Submit
from hub.core.selector import breakdown, node_reason, select_node
from hub.core.snapshot import DRAINING, OFFLINE, NodeState, NodeStatus, Snapshot
from hub.core.stages import both_ways
from tests.core.test_snapshot import caps


def node(
    node_id: str,
    pairs: list[tuple[str, str]] | None = None,
    *,
    running: int = 0,
    status: NodeStatus = "online",
    max_concurrency: int = 4,
    **kw: object,
) -> NodeState:
    c = caps(pairs, max_concurrency=max_concurrency, **kw)  # type: ignore[arg-type]
    return NodeState.create(node_id, c, running=running, status=status)


def req(**kw: object) -> Requirements:
    base: dict[str, object] = {"src_lang": "en", "tgt_lang": "de"}
    base.update(kw)
    return Requirements(**base)  # type: ignore[arg-type]


RNG = random.Random(0)


def test_plain_selection() -> None:
    snap = Snapshot.of([node("a"), node("b", [("de", "en")])])
    sel = select_node(snap, req(), RNG)
    assert (sel.node_id, sel.attempt, sel.via, sel.preferred_reason) == ("a", 1, "load", None)


def test_valid_preferred_node_is_used() -> None:
    others = [node(f"n{i}", max_concurrency=8) for i in range(20)]
    snap = Snapshot.of([*others, node("p", running=3)])
    sel = select_node(snap, req(preferred_node_id="p"), RNG)
    assert (sel.node_id, sel.attempt, sel.via, sel.preferred_reason) == ("p", 1, "preferred", None)


EMO_SPK = frozenset({"emo", "spk"})
PREFERRED_FAILURES = [
    ("unknown_node", "ghost", [], {}),
    ("excluded", "p", [node("p")], {"excluded": frozenset({"p"})}),
    ("lang_pair_unsupported", "p", [node("p", [("de", "en")])], {}),
    ("asr_lang_unsupported", "p", [node("p", asr=[])], {}),
    ("tts_lang_unsupported", "p", [node("p", tts=["fr"])], {}),
    ("feature_missing", "p", [node("p", features=["emo"])], {"features": EMO_SPK}),
    ("offline", "p", [node("p", status=OFFLINE)], {}),
    ("draining", "p", [node("p", status=DRAINING)], {}),
    ("at_capacity", "p", [node("p", running=4)], {}),
]


@pytest.mark.parametrize(("reason", "pref", "nodes", "extra"), PREFERRED_FAILURES,
                         ids=[c[0] for c in PREFERRED_FAILURES])
def test_invalid_preferred_node_falls_back(
    reason: str, pref: str, nodes: list[NodeState], extra: dict[str, object]
) -> None:
    fallback = node("f", features=["emo", "spk"])
    snap = Snapshot.of([*nodes, fallback])
    r = req(preferred_node_id=pref, **extra)
    assert node_reason(snap.get(pref), r) == reason
    sel = select_node(snap, r, RNG)
    assert (sel.node_id, sel.via, sel.preferred_reason) == ("f", "load", reason)


def test_preferred_node_with_pool_argument() -> None:
    p = node("p", pool=3)
    assert node_reason(p, req(), pool=3) is None
    assert node_reason(p, req(), pool=4) == "pool_mismatch"
    assert node_reason(p, req(excluded=frozenset({"p"})), pool=4) == "excluded"


def test_pipeline_flags_change_what_is_required() -> None:
    # t: text-only translation node (no ASR, no TTS). s: speech, no pair.
    t = node("t", asr=[], tts=[])
    s = node("s", [("fr", "ja")], asr=["en"], tts=["de"])
    snap = Snapshot.of([t, s])
    assert select_node(snap, req(), RNG).node_id is None
    text = req(pipeline=Pipeline(asr=False, tts=False))
    assert select_node(snap, text, RNG).node_id == "t"
    speech_only = req(pipeline=Pipeline(nmt=False))  # ASR en + TTS de, no translation
    assert select_node(snap, speech_only, RNG).node_id == "s"
    asr_only = req(pipeline=Pipeline(nmt=False, tts=False))
    assert select_node(snap, asr_only, RNG).node_id == "s"
    tts_only = req(pipeline=Pipeline(nmt=False, asr=False))
    assert select_node(snap, tts_only, RNG).node_id == "s"
    nothing = req(pipeline=Pipeline(asr=False, nmt=False, tts=False))
    assert select_node(snap, nothing, RNG).node_id in {"t", "s"}
    # The non-translation pipelines still need the other side's language.
    s2 = node("s2", [("fr", "ja")], asr=["en"], tts=["fr"])
    assert select_node(Snapshot.of([s2]), speech_only, RNG).node_id is None
    assert select_node(Snapshot.of([s2]), asr_only, RNG).node_id == "s2"


def test_preferred_pool_narrow_then_wide() -> None:
    in_pool = node("in", pool=5)
    elsewhere = [node(f"o{i}", pool=1, max_concurrency=8) for i in range(10)]
    snap = Snapshot.of([in_pool, *elsewhere])
    for seed in range(20):
        sel = select_node(snap, req(preferred_pool=5), random.Random(seed))
        assert (sel.node_id, sel.attempt) == ("in", 1)
    # Pool 5 full: the wide attempt takes any node.
    full = snap.with_running("in", 4)
    sel = select_node(full, req(preferred_pool=5), RNG)
    assert sel.attempt == 2 and sel.node_id is not None and sel.node_id.startswith("o")
    # Unknown pool: wide attempt.
    assert select_node(snap, req(preferred_pool=9), RNG).attempt == 2
    # No preferred pool: one wide attempt, reported as attempt 1.
    assert select_node(snap, req(), RNG).attempt == 1


def test_hard_exclusions_hold_in_both_attempts() -> None:
    snap = Snapshot.of([node("a", pool=5), node("b", pool=1)])
    r = req(preferred_pool=5, excluded=frozenset({"a"}))
    sel = select_node(snap, r, RNG)
    assert (sel.node_id, sel.attempt) == ("b", 2)
    none = select_node(snap, r.excluding("b"), RNG)
    assert none.node_id is None
    assert none.reasons == {"excluded": 2}
    with_key = select_node(snap, req(routing_key="k", excluded=frozenset({"a", "b"})), RNG)
    assert with_key.node_id is None


def test_requirements_from_submit_and_excluding() -> None:
    sub = Submit(request_id="r", src_lang="en", tgt_lang="de", features=["emo"],
                 preferred_pool=3, routing_key="rk", preferred_node_id="p")
    r = Requirements.from_submit(sub)
    assert (r.features, r.preferred_pool, r.routing_key, r.preferred_node_id) == (
        frozenset({"emo"}), 3, "rk", "p")
    assert Requirements.from_submit(sub, routing_key="other").routing_key == "other"
    r2 = r.excluding("x").excluding("y")
    assert r2.excluded == {"x", "y"} and r.excluded == frozenset()
    assert r2.features == r.features and r2.routing_key == r.routing_key


def test_never_a_full_node() -> None:
    nodes = [node(f"n{i}", running=4) for i in range(50)]
    snap = Snapshot.of(nodes)
    for seed in range(10):
        assert select_node(snap, req(), random.Random(seed)).node_id is None
        assert select_node(snap, req(routing_key=f"k{seed}"), random.Random(seed)).node_id is None


@pytest.mark.parametrize("count", [3, 200])
def test_one_free_node_among_many_full_is_chosen(count: int) -> None:
    nodes = [node(f"n{i}", running=4) for i in range(count)]
    nodes.append(node("free", running=3))
    snap = Snapshot.of(nodes)
    for seed in range(20):
        assert select_node(snap, req(), random.Random(seed)).node_id == "free"
        assert select_node(snap, req(routing_key=f"k{seed}"), random.Random(seed)).node_id == "free"


def test_one_capable_node_among_many_without_the_feature() -> None:
    nodes = [node(f"n{i}", features=["emo"]) for i in range(300)]
    nodes.append(node("rare", features=["emo", "clone"]))
    snap = Snapshot.of(nodes)
    r = req(features=frozenset({"clone", "emo"}))
    for seed in range(10):
        assert select_node(snap, r, random.Random(seed)).node_id == "rare"


def test_load_aware_prefers_more_free_slots() -> None:
    snap = Snapshot.of([node("small", running=7, max_concurrency=8),
                        node("big", running=1, max_concurrency=8)])
    rng = random.Random(42)
    picks = Counter(select_node(snap, req(), rng).node_id for _ in range(1000))
    assert picks["big"] > 4 * picks["small"]


def test_load_aware_in_a_large_ring() -> None:
    # 100 nearly full nodes and 100 nearly empty ones: power of two choices
    # should send most jobs to the emptier half.
    nodes = [node(f"busy{i}", running=7, max_concurrency=8) for i in range(100)]
    nodes += [node(f"idle{i}", running=0, max_concurrency=8) for i in range(100)]
    snap = Snapshot.of(nodes)
    rng = random.Random(1)
    picks = Counter(
        (select_node(snap, req(), rng).node_id or "").rstrip("0123456789") for _ in range(2000)
    )
    assert picks["idle"] > 0.7 * 2000


def test_routing_key_is_sticky() -> None:
    nodes = [node(f"n{i}") for i in range(60)]
    snap = Snapshot.of(nodes)
    for key in ("alice", "bob", "carol"):
        picks = {select_node(snap, req(routing_key=key), random.Random(s)).node_id
                 for s in range(20)}
        assert len(picks) == 1
        sel = select_node(snap, req(routing_key=key), RNG)
        assert sel.via == "routing_key" and sel.node_id is not None
        # Only its node filling up moves the key; it comes back when there is room.
        moved = select_node(snap.with_running(sel.node_id, 4), req(routing_key=key), RNG)
        assert moved.node_id not in (None, sel.node_id)
        back = snap.with_running(sel.node_id, 4).with_running(sel.node_id, 3)
        assert select_node(back, req(routing_key=key), RNG).node_id == sel.node_id
    # Different keys spread over the ring.
    spread = {select_node(snap, req(routing_key=f"k{i}"), RNG).node_id for i in range(200)}
    assert len(spread) > 30


def test_no_node_breakdown() -> None:
    nodes = [
        node("ex"),
        node("pair", [("fr", "ja")]),
        node("asr", asr=["fr"]),
        node("tts", tts=[]),
        node("feat"),
        node("off", features=["emo"], status=OFFLINE),
        node("drain", features=["emo"], status=DRAINING),
        node("full", features=["emo"], running=4),
        node("full2", features=["emo"], running=9),
    ]
    snap = Snapshot.of(nodes)
    r = req(features=frozenset({"emo"}), excluded=frozenset({"ex", "not-in-snapshot"}),
            preferred_node_id="off")
    sel = select_node(snap, r, RNG)
    assert sel.node_id is None and sel.attempt == 0 and sel.via == "none"
    assert sel.preferred_reason == "offline"
    assert sel.reasons == {
        "excluded": 1, "lang_pair_unsupported": 1, "asr_lang_unsupported": 1,
        "tts_lang_unsupported": 1, "feature_missing": 1, "offline": 1, "draining": 1,
        "at_capacity": 2,
    }
    assert list(sel.reasons) == [k for k in REASON_ORDER if k in sel.reasons]
    assert sum(sel.reasons.values()) == sel.considered == len(snap)


def test_breakdown_with_pool_and_eligible() -> None:
    snap = Snapshot.of([node("a", pool=1), node("b", pool=2), node("c", pool=2, running=4)])
    assert breakdown(snap, req(), pool=2) == {"pool_mismatch": 1, "at_capacity": 1, "eligible": 1}
    assert breakdown(snap, req()) == {"at_capacity": 1, "eligible": 2}
    assert breakdown(snap, req(excluded=frozenset({"b"})), pool=2) == {
        "excluded": 1, "pool_mismatch": 1, "at_capacity": 1}


def test_empty_snapshot_and_impossible_request() -> None:
    empty = select_node(Snapshot(), req(), RNG)
    assert empty.node_id is None and empty.reasons == {} and empty.considered == 0
    snap = Snapshot.of([node(f"n{i}") for i in range(10)])
    sel = select_node(snap, req(src_lang="xx", features=frozenset({"teleport"})), RNG)
    assert sel.reasons == {"lang_pair_unsupported": 10} and sel.considered == 10


def test_same_seed_same_choice() -> None:
    snap = Snapshot.of([node(f"n{i}", running=i % 4) for i in range(100)])
    a = [select_node(snap, req(), random.Random(5)).node_id for _ in range(5)]
    assert len(set(a)) == 1


# --- two-way: every enabled stage in both directions ----------------------------------------

EN_DE_BOTH = both_ways("en", "de")
TWO_WAY_FLEET = [
    # Serves en->de and de->en: pairs, ASR and TTS of both languages.
    node("both", [("en", "de"), ("de", "en")], asr=["en", "de"], tts=["en", "de"]),
    # One way only; no reverse pair (and no ASR of de, no TTS of en either).
    *(node(f"one{i}", [("en", "de")]) for i in range(40)),
    # The reverse direction only: not in the en->de pair ring at all.
    *(node(f"rev{i}", [("de", "en")]) for i in range(10)),
    # Both pairs, but ASR of en only, or TTS of de only.
    *(node(f"asr{i}", [("en", "de"), ("de", "en")], asr=["en"], tts=["en", "de"])
      for i in range(20)),
    *(node(f"tts{i}", [("en", "de"), ("de", "en")], asr=["en", "de"], tts=["de"])
      for i in range(20)),
    # Lacks the reverse pair and ASR of the first direction's source: the pair rule
    # comes first, whichever direction breaks it.
    node("pair_and_asr", [("en", "de")], asr=["de"], tts=["en", "de"]),
    # Serves both ways, but is full.
    node("full", [("en", "de"), ("de", "en")], asr=["en", "de"], tts=["en", "de"], running=4),
]


def test_a_two_way_job_goes_only_to_a_node_that_serves_it_both_ways() -> None:
    snap = Snapshot.of(TWO_WAY_FLEET)
    two_way = req(directions=EN_DE_BOTH)
    for seed in range(20):
        rng = random.Random(seed)
        assert select_node(snap, two_way, rng).node_id == "both"
        assert select_node(snap, req(directions=EN_DE_BOTH, routing_key=f"k{seed}"),
                           rng).node_id == "both"
        assert select_node(snap, req(directions=EN_DE_BOTH, preferred_pool=0),
                           rng).node_id == "both"
    # Reversed, the directions name the same job (another ring is searched).
    assert select_node(snap, req(directions=both_ways("de", "en")), RNG).node_id == "both"
    sel = select_node(snap, req(directions=EN_DE_BOTH, preferred_node_id="one0"), RNG)
    assert (sel.node_id, sel.preferred_reason) == ("both", "lang_pair_unsupported")
    sel = select_node(snap, req(directions=EN_DE_BOTH, preferred_node_id="tts0"), RNG)
    assert (sel.node_id, sel.preferred_reason) == ("both", "tts_lang_unsupported")
    busy = snap.with_running("both", 4)
    assert select_node(busy, two_way, RNG).node_id is None


@pytest.mark.parametrize(("pipeline", "served_by"), [
    (Pipeline(asr=False, tts=False), {"both", "full", "asr", "tts"}),  # the two pairs
    (Pipeline(nmt=False, tts=False), {"both", "full", "tts"}),  # ASR of en and de
    (Pipeline(nmt=False, asr=False), {"both", "full", "asr", "pair_and_asr"}),  # TTS
    (Pipeline(nmt=False), {"both", "full"}),
])
def test_each_enabled_stage_is_needed_both_ways(pipeline: Pipeline, served_by: set[str]) -> None:
    snap = Snapshot.of(TWO_WAY_FLEET)
    r = req(pipeline=pipeline, directions=EN_DE_BOTH)
    capable = {
        s.node_id.rstrip("0123456789") for s in TWO_WAY_FLEET
        if node_reason(s, r) in (None, "at_capacity")
    }
    assert capable == served_by
    picks = {select_node(snap, r, random.Random(seed)).node_id for seed in range(30)}
    assert {p.rstrip("0123456789") for p in picks if p} <= served_by - {"full"}


def test_two_way_breakdown_counts_a_one_way_node_under_the_first_rule_it_breaks() -> None:
    snap = Snapshot.of(TWO_WAY_FLEET).with_running("both", 4)
    sel = select_node(snap, req(directions=EN_DE_BOTH), RNG)
    assert sel.node_id is None
    assert sel.reasons == {
        "lang_pair_unsupported": 40 + 10 + 1,  # one*, rev*, pair_and_asr
        "asr_lang_unsupported": 20,
        "tts_lang_unsupported": 20,
        "at_capacity": 2,
    }
    assert sum(sel.reasons.values()) == sel.considered == len(snap)
    assert breakdown(snap, req(directions=EN_DE_BOTH), pool=0) == sel.reasons
    # From the other end (the de->en ring is searched), the same rules break.
    assert breakdown(snap, req(directions=both_ways("de", "en"))) == sel.reasons
    # The two nodes that serve both ways lack the feature: that is the rule they break.
    assert breakdown(snap, req(directions=EN_DE_BOTH, features=frozenset({"emo"}))) == {
        "lang_pair_unsupported": 51, "asr_lang_unsupported": 20, "tts_lang_unsupported": 20,
        "feature_missing": 2,
    }


def test_one_direction_is_as_before() -> None:
    snap = Snapshot.of(TWO_WAY_FLEET)
    one_way = req()
    assert one_way.directions == (("en", "de"),)
    stated = req(directions=(("en", "de"),))
    assert stated == one_way
    for seed in range(10):
        assert (select_node(snap, one_way, random.Random(seed))
                == select_node(snap, stated, random.Random(seed)))
    # Each one-way node serves en->de; only the reverse-only ones and the one
    # without ASR of en are passed over.
    assert breakdown(snap, one_way) == {
        "lang_pair_unsupported": 10, "asr_lang_unsupported": 1, "at_capacity": 1,
        "eligible": 81,
    }
