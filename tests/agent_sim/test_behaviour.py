"""agent_sim.behaviour: pure, seeded; plain function calls, no event loop."""

from __future__ import annotations

import ast
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent_sim.behaviour as behaviour_module
from agent_sim.behaviour import (
    FEATURES,
    LANGUAGES,
    NO_FAULT,
    Behaviour,
    Faults,
    Profile,
    ServiceTime,
    get_profile,
    node_capabilities,
    profile_names,
)
from hub.core.messages import Capabilities, Register, node_codec


def fleet_caps(profile: Profile, seed: int, n: int) -> list[Capabilities]:
    rng = random.Random(seed)
    return [node_capabilities(profile, i, rng) for i in range(n)]


def test_module_is_pure() -> None:
    tree = ast.parse(Path(behaviour_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0] if node.level == 0 else node.module)
    assert imported <= {
        "__future__",
        "math",
        "random",
        "collections",
        "dataclasses",
        "typing",
        "hub",
    }
    assert "asyncio" not in imported and "loguru" not in imported


def test_catalogues() -> None:
    assert len(LANGUAGES) == len(set(LANGUAGES)) == 40
    assert LANGUAGES[:3] == ("en", "zh", "es")
    assert len(FEATURES) == len(set(FEATURES)) == 16
    assert {"emotion_detection", "speaker_identification", "voice_cloning"} <= set(FEATURES)
    assert {"default", "uniform", "faulty"} <= set(profile_names())


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    profile = get_profile("default")
    assert fleet_caps(profile, 7, 200) == fleet_caps(profile, 7, 200)
    assert fleet_caps(profile, 7, 200) != fleet_caps(profile, 8, 200)


@pytest.mark.parametrize("name", ["default", "uniform", "faulty"])
@pytest.mark.parametrize("binary", [False, True])
def test_capabilities_survive_the_wire(name: str, binary: bool) -> None:
    codec = node_codec(binary=binary)
    for i, caps in enumerate(fleet_caps(get_profile(name), 3, 300)):
        frame = codec.encode_frame(Register(f"n{i}", caps, "t"))
        decoded = codec.decode(frame)
        assert isinstance(decoded, Register)
        assert decoded.capabilities == caps


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), index=st.integers(0, 100_000))
def test_default_capabilities_are_well_formed(seed: int, index: int) -> None:
    caps = node_capabilities(get_profile("default"), index, random.Random(seed))
    pairs = [(p.src, p.tgt) for p in caps.language_pairs]
    assert 2 <= len(pairs) <= 6
    assert len(set(pairs)) == len(pairs)
    assert all(src != tgt and {src, tgt} <= set(LANGUAGES) for src, tgt in pairs)
    assert caps.asr_languages == sorted({s for s, _ in pairs})
    assert caps.tts_languages == sorted({t for _, t in pairs})
    assert len(set(caps.features)) == len(caps.features) <= 6
    assert set(caps.features) <= set(FEATURES)
    assert caps.pool is not None and 0 <= caps.pool <= 7
    assert 1 <= caps.max_concurrency <= 8
    assert caps.labels["sim_index"] == str(index)
    codec = node_codec()
    assert codec.decode(codec.encode(Register("n", caps))) == Register("n", caps)


def test_popularity_is_skewed() -> None:
    caps = fleet_caps(get_profile("default"), 1, 3000)
    langs = Counter(lang for c in caps for p in c.language_pairs for lang in {p.src, p.tgt})
    assert langs.most_common(1)[0][0] == "en"
    top5 = sum(langs[lang] for lang in LANGUAGES[:5])
    bottom5 = sum(langs[lang] for lang in LANGUAGES[-5:])
    assert top5 > 5 * bottom5
    assert all(langs[lang] > 0 for lang in LANGUAGES)  # the long tail exists
    features = Counter(f for c in caps for f in c.features)
    assert features["punctuation"] > 3 * features["lip_sync"] > 0
    pools = Counter(c.pool for c in caps)
    assert set(pools) == set(range(8))
    assert set(Counter(c.max_concurrency for c in caps)) == set(range(1, 9))


def test_uniform_profile_serves_the_same_small_set() -> None:
    caps = fleet_caps(get_profile("uniform"), 5, 50)
    expected = {("en", "zh"), ("zh", "en"), ("en", "es"), ("es", "en")}
    for c in caps:
        assert {(p.src, p.tgt) for p in c.language_pairs} == expected
        assert c.asr_languages == c.tts_languages == ["en", "es", "zh"]
        assert c.features == list(FEATURES)


def test_service_time_median_and_p99() -> None:
    dist = ServiceTime(median_s=1.0, p99_s=8.0)
    rng = random.Random(11)
    samples = sorted(dist.sample_s(rng) for _ in range(40_000))
    assert statistics.median(samples) == pytest.approx(1.0, rel=0.05)
    assert samples[int(0.99 * len(samples))] == pytest.approx(8.0, rel=0.15)


def test_time_scale_and_slow_nodes() -> None:
    base = Behaviour(get_profile("default"))
    fast = Behaviour(get_profile("default", time_scale=0.001))
    a = [base.service_time_s(random.Random(4)) for _ in range(3)]
    b = [fast.service_time_s(random.Random(4)) for _ in range(3)]
    assert b == pytest.approx([x * 0.001 for x in a])
    slow = base.service_time_s(random.Random(4), slow=True)
    assert slow == pytest.approx(a[0] * 10)
    med = get_profile("default").service_time.median_s
    assert base.emits_progress(med * 1.01) and not base.emits_progress(med * 0.99)


def test_fault_rates_roughly_match_the_profile() -> None:
    faulty = Behaviour(get_profile("faulty"))
    faults = faulty.profile.faults
    rng = random.Random(2)
    n = 40_000
    decisions = [faulty.on_assign(rng) for _ in range(n)]
    rejects = sum(d.reject_reason is not None for d in decisions) / n
    crashes = sum(d.crash_after_s is not None for d in decisions) / n
    delays = sum(d.accept_delay_s > 0 for d in decisions) / n
    assert rejects == pytest.approx(faults.reject_rate, rel=0.15)
    assert crashes == pytest.approx(faults.crash_mid_job_rate * (1 - faults.reject_rate), rel=0.2)
    assert delays == pytest.approx(faults.accept_delay_rate * (1 - faults.reject_rate), rel=0.15)
    assert all(d.crash_after_s is None or d.crash_after_s > 0 for d in decisions)
    slow = sum(faulty.is_slow_node(rng) for _ in range(n)) / n
    assert slow == pytest.approx(faults.slow_node_fraction, rel=0.15)
    gaps = [faulty.next_disconnect_s(rng, nodes=100) for _ in range(5000)]
    expected_gap = 60.0 / (faults.disconnect_rate_per_min * 100)
    assert statistics.fmean(g for g in gaps if g is not None) == pytest.approx(
        expected_gap, rel=0.1
    )


def test_default_profile_injects_nothing() -> None:
    default = Behaviour(get_profile("default"))
    rng = random.Random(3)
    assert all(default.on_assign(rng) is NO_FAULT for _ in range(1000))
    assert not any(default.is_slow_node(rng) for _ in range(1000))
    assert default.next_disconnect_s(rng, nodes=1000) is None


def test_decisions_are_deterministic_per_seed() -> None:
    faulty = Behaviour(get_profile("faulty"))
    one = [faulty.on_assign(random.Random(9)) for _ in range(5)]
    r1, r2 = random.Random(9), random.Random(9)
    assert [faulty.on_assign(r1) for _ in range(500)] == [faulty.on_assign(r2) for _ in range(500)]
    assert len(set(one)) == 1


def test_validation() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("nope")
    with pytest.raises(ValueError):
        ServiceTime(median_s=2.0, p99_s=1.0)
    with pytest.raises(ValueError):
        Faults(reject_rate=1.5)
    with pytest.raises(ValueError):
        Profile(name="bad", max_concurrency=(0, 4))
    with pytest.raises(ValueError):
        Profile(name="bad", time_scale=0)
