"""Snapshot derivation: node changes, index (ring) correctness, structural sharing."""

from __future__ import annotations

import random

import pytest

from hub.core.capabilities import NodeCapabilities
from hub.core.snapshot import (
    ALL,
    DRAINING,
    GLOBAL,
    HAS_FEATURE,
    MAX_CHUNK,
    OFFLINE,
    Cond,
    NodeState,
    Ring,
    Snapshot,
    holds,
    stable_hash,
)
from hub.core.stages import ASR as ASR_STAGE
from hub.core.stages import NMT, IndexKey
from hub.core.stages import TTS as TTS_STAGE

# The index and condition kinds of the stages, as the tests below name them.
PAIR, ASR, TTS = NMT.ring, ASR_STAGE.ring, TTS_STAGE.ring
HAS_PAIR, HAS_ASR, HAS_TTS = NMT.cond, ASR_STAGE.cond, TTS_STAGE.cond

LANGS = ["en", "de", "fr", "ja"]
FEATURES = ["emo", "spk", "clone"]


def caps(
    pairs: list[tuple[str, str]] | None = None,
    *,
    asr: list[str] | None = None,
    tts: list[str] | None = None,
    features: list[str] | tuple[str, ...] = (),
    pool: int = 0,
    max_concurrency: int = 4,
) -> NodeCapabilities:
    pairs = [("en", "de")] if pairs is None else pairs
    return NodeCapabilities(
        language_pairs=frozenset(pairs),
        asr_languages=frozenset(asr if asr is not None else [s for s, _ in pairs]),
        tts_languages=frozenset(tts if tts is not None else [t for _, t in pairs]),
        features=frozenset(features),
        max_concurrency=max_concurrency,
        pool=pool,
    )


def random_caps(rng: random.Random) -> NodeCapabilities:
    pairs = [tuple(rng.sample(LANGS, 2)) for _ in range(rng.randint(0, 3))]
    return NodeCapabilities(
        language_pairs=frozenset(pairs),  # type: ignore[arg-type]
        asr_languages=frozenset(rng.sample(LANGS, rng.randint(0, 3))),
        tts_languages=frozenset(rng.sample(LANGS, rng.randint(0, 3))),
        features=frozenset(rng.sample(FEATURES, rng.randint(0, 3))),
        max_concurrency=rng.randint(1, 4),
        pool=rng.randrange(3),
    )


CONDS: list[Cond] = [
    *((HAS_FEATURE, f) for f in FEATURES),
    *((HAS_ASR, lang) for lang in LANGS),
    *((HAS_TTS, lang) for lang in LANGS),
    *((HAS_PAIR, (a, b)) for a in LANGS for b in LANGS if a != b),
]
RingView = tuple[tuple[int, ...], tuple[str, ...], tuple[int, ...]]


def index_of(snapshot: Snapshot) -> dict[IndexKey, RingView]:
    """Every ring of the snapshot in comparable form (chunk boundaries left out: they
    may differ between a ring built in one pass and one derived step by step)."""
    return {
        key: (ring.hashes, ring.ids, tuple(ring.bits(cond) for cond in CONDS))
        for key, ring in snapshot.rings()
    }


def assert_chunks_sane(ring: Ring) -> None:
    """Chunks are non-empty, bounded, sorted across boundaries; the per-chunk tuples
    agree with the chunks; every memoised bitmap equals a fresh computation."""
    assert len(ring.chunks) == len(ring.sizes) == len(ring.firsts) == len(ring.ends)
    total = 0
    for k, chunk in enumerate(ring.chunks):
        assert 0 < len(chunk) <= MAX_CHUNK
        assert ring.sizes[k] == len(chunk) and ring.firsts[k] == chunk.hashes[0]
        total += len(chunk)
        assert ring.ends[k] == total
        assert chunk.full == (1 << len(chunk)) - 1
        assert len(chunk.hashes) == len(chunk.ids) == len(chunk.caps)
        for cond, bits in chunk.bits.items():
            fresh = sum(1 << i for i, c in enumerate(chunk.caps) if holds(c, cond))
            assert bits == fresh, (cond, k)
        if chunk.features_indexed:
            # Then a feature absent from the memo is one no member has.
            for c in chunk.caps:
                for name in c.features:
                    assert (HAS_FEATURE, name) in chunk.bits, (name, k)
    assert len(ring) == total


def assert_index_consistent(snapshot: Snapshot) -> None:
    """The incremental index equals the one built from scratch, and rings are sane."""
    rebuilt = Snapshot.of(list(snapshot))
    assert index_of(snapshot) == index_of(rebuilt)
    for (kind, pool, a, b), ring in snapshot.rings():
        assert ring.ids, "empty rings are dropped"
        assert list(ring.hashes) == sorted(ring.hashes)
        assert_chunks_sane(ring)
        for pos, node_id in enumerate(ring.ids):
            assert ring.at(pos) == node_id
            assert ring.position(stable_hash(node_id), node_id) == pos
            state = snapshot.get(node_id)
            assert state is not None
            c = state.caps
            assert ring.hashes[pos] == state.ring_hash == stable_hash(node_id)
            assert pool in (GLOBAL, c.pool)
            member = {
                ALL: True,
                PAIR: (a, b) in c.language_pairs,
                ASR: a in c.asr_languages,
                TTS: a in c.tts_languages,
            }[kind]
            assert member
            for name in FEATURES:
                assert bool(ring.bits((HAS_FEATURE, name)) >> pos & 1) == (name in c.features)
            if kind == PAIR:
                assert bool(ring.bits((HAS_ASR, a)) >> pos & 1) == (a in c.asr_languages)
                assert bool(ring.bits((HAS_TTS, b)) >> pos & 1) == (b in c.tts_languages)
    # And every node is in every ring it should be in.
    for state in snapshot:
        c = state.caps
        for pool in (GLOBAL, c.pool):
            assert state.node_id in snapshot.ring(ALL, pool).ids
            for s, t in c.language_pairs:
                assert state.node_id in snapshot.ring(PAIR, pool, s, t).ids
            for lang in c.asr_languages:
                assert state.node_id in snapshot.ring(ASR, pool, lang).ids
            for lang in c.tts_languages:
                assert state.node_id in snapshot.ring(TTS, pool, lang).ids


def test_node_state_constructors() -> None:
    c = caps(max_concurrency=3)
    s = NodeState.create("gpu-1", c, hub_id="h", running=1)
    assert (s.node_id, s.hub_id, s.status, s.running, s.ring_hash) == (
        "gpu-1", "h", "online", 1, stable_hash("gpu-1"))
    assert s.free_slots == 2
    r = s.with_running(3)
    assert r.free_slots == 0 and s.running == 1 and r.ring_hash == s.ring_hash
    d = s.with_status(DRAINING)
    assert d.status == DRAINING and d.running == 1 and s.status == "online"


def test_stable_hash_is_stable() -> None:
    # The same value in every process: a fixed expectation, not a recomputation.
    assert stable_hash("gpu-1") == 0x87416778B11E68C4  # blake2b-64, same on every hub
    assert stable_hash("a") != stable_hash("b")
    assert 0 <= stable_hash("x") < 2**64


def test_with_node_join_replace_and_leave() -> None:
    s0 = Snapshot()
    a = NodeState.create("a", caps([("en", "de")], features=["emo"], pool=1))
    b = NodeState.create("b", caps([("en", "de"), ("de", "en")], pool=2))
    s1 = s0.with_node(a)
    s2 = s1.with_node(b)
    assert (len(s0), len(s1), len(s2)) == (0, 1, 2)
    assert s2.version == s1.version + 1 == s0.version + 2
    assert "a" in s2 and "c" not in s2
    assert s2.get("a") is a and s2.get("zz") is None
    assert set(s2.ring(PAIR, GLOBAL, "en", "de").ids) == {"a", "b"}
    assert s2.ring(PAIR, 1, "en", "de").ids == ("a",)
    assert s2.ring(PAIR, GLOBAL, "de", "en").ids == ("b",)
    assert len(s2.ring(PAIR, GLOBAL, "xx", "yy")) == 0
    assert_index_consistent(s2)
    # Capability change: b moves pool and drops a pair.
    b2 = NodeState.create("b", caps([("en", "de")], features=["spk"], pool=1))
    s3 = s2.with_node(b2)
    assert len(s3) == 2
    assert len(s3.ring(PAIR, GLOBAL, "de", "en")) == 0
    assert set(s3.ring(PAIR, 1, "en", "de").ids) == {"a", "b"}
    assert len(s3.ring(ALL, 2)) == 0
    assert_index_consistent(s3)
    s4 = s3.without_node("a")
    assert len(s4) == 1 and "a" not in s4
    assert s4.ring(PAIR, GLOBAL, "en", "de").ids == ("b",)
    assert_index_consistent(s4)
    assert s4.without_node("a") is s4  # unknown node: unchanged
    # Old snapshots are unchanged.
    assert set(s2.ring(PAIR, GLOBAL, "de", "en").ids) == {"b"}
    assert s2.get("b") is b and s1.get("b") is None and len(s0) == 0
    assert_index_consistent(s2)
    assert_index_consistent(s1)


def test_with_running_and_status_share_the_index() -> None:
    nodes = [NodeState.create(f"n{i}", caps(max_concurrency=4)) for i in range(50)]
    s1 = Snapshot.of(nodes)
    s2 = s1.with_running("n3", 2)
    assert s2.index_token is s1.index_token
    got = s2.get("n3")
    assert got is not None and got.running == 2 and got.free_slots == 2
    assert s1.get("n3") is nodes[3] and nodes[3].running == 0
    assert s2.version == s1.version + 1
    s3 = s2.with_status("n3", OFFLINE)
    assert s3.index_token is s1.index_token
    got3 = s3.get("n3")
    assert got3 is not None and got3.status == OFFLINE and got3.running == 2
    s2_n3 = s2.get("n3")
    assert s2_n3 is not None and s2_n3.status == "online"
    # No-op changes and unknown nodes return the same snapshot.
    assert s3.with_running("n3", 2) is s3
    assert s3.with_status("n3", OFFLINE) is s3
    assert s3.with_running("zz", 1) is s3
    assert s3.with_status("zz", DRAINING) is s3
    # Re-adding a node with the same capabilities (load change via with_node) shares too.
    s4 = s3.with_node(nodes[7].with_running(1))
    assert s4.index_token is s3.index_token
    assert_index_consistent(s4)


def test_random_joins_leaves_and_changes_match_rebuild() -> None:
    rng = random.Random(3)
    snap = Snapshot()
    history: list[tuple[Snapshot, dict[str, NodeState]]] = []
    live: dict[str, NodeState] = {}
    for step in range(400):
        node_id = f"n{rng.randrange(40)}"
        op = rng.random()
        if op < 0.5:
            state = NodeState.create(node_id, random_caps(rng), running=rng.randint(0, 2))
            snap = snap.with_node(state)
            live[node_id] = state
        elif op < 0.7:
            snap = snap.without_node(node_id)
            live.pop(node_id, None)
        elif op < 0.85 and node_id in live:
            snap = snap.with_running(node_id, rng.randint(0, 4))
            live[node_id] = live[node_id].with_running(snap.get(node_id).running)  # type: ignore[union-attr]
        elif node_id in live:
            status = rng.choice(("online", DRAINING, OFFLINE))
            snap = snap.with_status(node_id, status)
            live[node_id] = live[node_id].with_status(status)
        if step % 25 == 0:
            assert_index_consistent(snap)
            history.append((snap, dict(live)))
        assert len(snap) == len(live)
    assert_index_consistent(snap)
    assert {s.node_id: s for s in snap} == live
    for old, expected in history:
        assert {s.node_id: s for s in old} == expected
        assert_index_consistent(old)


def test_snapshot_of_deduplicates_and_reads() -> None:
    a1 = NodeState.create("a", caps())
    a2 = NodeState.create("a", caps([("de", "en")]))
    snap = Snapshot.of([a1, a2])
    assert len(snap) == 1 and snap.get("a") is a2
    assert len(snap.ring(PAIR, GLOBAL, "en", "de")) == 0
    assert snap.lookup("a") is a2
    with pytest.raises(KeyError):
        snap.lookup("nobody")
    assert [s.node_id for s in snap] == ["a"]
    assert "Snapshot(" in repr(snap)


def test_ring_members_and_bits() -> None:
    ring = Ring()
    ids = [f"n{i}" for i in range(30)]
    for i, node_id in enumerate(ids):
        ring = ring.with_member(
            stable_hash(node_id), node_id,
            caps(asr=["en"] if i % 3 == 0 else [], tts=["de"],
                 features=["emo"] if i % 2 else []),
        )
    assert sorted(ring.ids) == sorted(ids) and list(ring.hashes) == sorted(ring.hashes)
    emo, asr, tts = ring.bits((HAS_FEATURE, "emo")), ring.bits((HAS_ASR, "en")), ring.bits(
        (HAS_TTS, "de"))
    for pos, node_id in enumerate(ring.ids):
        i = int(node_id[1:])
        assert (emo >> pos & 1) == i % 2
        assert (asr >> pos & 1) == (i % 3 == 0)
        assert ring.position(stable_hash(node_id), node_id) == pos
    assert tts == (1 << len(ring)) - 1
    smaller = ring.without_member(stable_hash("n1"), "n1")
    assert "n1" not in smaller.ids and len(smaller) == 29 and "n1" in ring.ids
    assert smaller.without_member(stable_hash("n1"), "n1") is smaller
    assert ring.position(1, "nope") == -1
    emo = smaller.bits((HAS_FEATURE, "emo"))
    for pos, node_id in enumerate(smaller.ids):
        assert (emo >> pos & 1) == int(node_id[1:]) % 2


def test_chunks_split_merge_and_carry_their_bitmaps() -> None:
    """Thousands of members: chunks split past MAX_CHUNK, merge when small, and a
    condition bitmap made once is carried through every later join and leave."""
    rng = random.Random(5)
    ring = Ring()
    members: dict[str, NodeCapabilities] = {}
    for step in range(3_000):
        if members and rng.random() < 0.3:
            node_id = rng.choice(sorted(members))
            ring = ring.without_member(stable_hash(node_id), node_id)
            del members[node_id]
        else:
            node_id = f"m{step}"
            c = random_caps(rng)
            ring = ring.with_member(stable_hash(node_id), node_id, c)
            members[node_id] = c
        if step == 200:
            # Ask once: from now on the chunks carry the bitmap forward.
            assert ring.first_capable(0, [(HAS_FEATURE, "emo")]) is not None
        if step % 500 == 0:
            assert_chunks_sane(ring)
    assert_chunks_sane(ring)
    assert len(ring.chunks) > 4, "thousands of members span several chunks"
    assert sum(1 for chunk in ring.chunks if (HAS_FEATURE, "emo") in chunk.bits) > 1
    order = sorted(members, key=lambda n: (stable_hash(n), n))
    assert list(ring.ids) == order
    want = [n for n in order if "emo" in members[n].features and "en" in members[n].tts_languages]
    conds: list[Cond] = [(HAS_FEATURE, "emo"), (HAS_TTS, "en")]
    for start in (0, 1, len(order) // 2, len(order) - 1):
        got = list(ring.capable_ids(start, conds))
        rotated = [n for n in order[start:] + order[:start] if n in set(want)]
        assert got == rotated
        first = ring.first_capable(start, conds)
        assert first == (rotated[0] if rotated else None)
    assert ring.bisect(0) == 0 and ring.bisect(2**64) == len(order)
    for node_id in order[:50]:
        assert order[ring.bisect(stable_hash(node_id))] == node_id


def test_a_node_with_many_capability_entries_joins_cheaply() -> None:
    """A node with 1,024 capability entries (pairs, languages, features) joins a
    fleet: its rings share its one capability object instead of copying its
    feature set, so the join costs about as many ring updates as index entries."""
    fleet = [NodeState.create(f"g{i}", random_caps(random.Random(i))) for i in range(500)]
    snap = Snapshot.of(fleet)
    langs = [f"l{i}" for i in range(40)]
    pairs = [(a, b) for a in langs[:20] for b in langs[20:]][:400]
    big = NodeCapabilities(
        language_pairs=frozenset(pairs),
        asr_languages=frozenset(langs),
        tts_languages=frozenset(langs),
        features=frozenset(f"feat{i}" for i in range(544)),
        max_concurrency=4,
    )
    grown = snap.with_node(NodeState.create("big", big))
    ring = grown.ring(PAIR, GLOBAL, "l0", "l20")
    assert ring.ids == ("big",)
    chunk = ring.chunks[0]
    assert chunk.caps[0] is big, "members share the node's capabilities"
    assert chunk.bits == {}, "no bitmap is made before a selection asks for one"
    assert ring.bits((HAS_FEATURE, "feat7")) == 1 and ring.bits((HAS_FEATURE, "nope")) == 0
    assert_index_consistent(grown)
    assert_index_consistent(grown.without_node("big"))


def test_features_indexed_at_once_unless_there_are_too_many() -> None:
    few = [NodeCapabilities(features=frozenset({f"f{i % 5}"}), max_concurrency=1)
           for i in range(20)]
    ring = Ring()
    for i, c in enumerate(few):
        ring = ring.with_member(stable_hash(f"a{i}"), f"a{i}", c)
    (chunk,) = ring.chunks
    assert chunk.mask((HAS_FEATURE, "f1")) == sum(
        1 << i for i, c in enumerate(chunk.caps) if "f1" in c.features)
    assert chunk.features_indexed and len(chunk.bits) == 5  # all five in one pass
    assert chunk.mask((HAS_FEATURE, "absent")) == 0
    # A member with many new features: past the memo's room, features go per request.
    many = NodeCapabilities(features=frozenset(f"x{i}" for i in range(100)), max_concurrency=1)
    grown = ring.with_member(stable_hash("big"), "big", many)
    (big_chunk,) = grown.chunks
    assert not big_chunk.features_indexed
    pos = big_chunk.ids.index("big")
    assert big_chunk.mask((HAS_FEATURE, "x42")) == 1 << pos
    assert big_chunk.mask((HAS_FEATURE, "f1")) == chunk_bits_after(chunk, pos, "f1")
    assert_chunks_sane(grown)
    # A chunk whose members have too many distinct features is never indexed at once.
    wide = Ring().with_member(stable_hash("w"), "w", many)
    (wide_chunk,) = wide.chunks
    assert not wide_chunk.index_features()
    assert wide_chunk.mask((HAS_FEATURE, "x1")) == 1 and not wide_chunk.features_indexed


def chunk_bits_after(chunk: object, pos: int, name: str) -> int:
    """The bitmap of feature `name` once a member without it is inserted at `pos`."""
    from hub.core.snapshot import Chunk

    assert isinstance(chunk, Chunk)
    before = chunk.mask((HAS_FEATURE, name))
    low = (1 << pos) - 1
    return ((before >> pos) << (pos + 1)) | (before & low)
