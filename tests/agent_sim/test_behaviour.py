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
    VOCABULARY,
    Behaviour,
    Faults,
    Profile,
    ServiceTime,
    Speech,
    audio_ms,
    get_profile,
    node_capabilities,
    profile_names,
    transcript_words,
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
    assert {"default", "uniform", "faulty", "speech", "speech-faulty"} <= set(profile_names())


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    profile = get_profile("default")
    assert fleet_caps(profile, 7, 200) == fleet_caps(profile, 7, 200)
    assert fleet_caps(profile, 7, 200) != fleet_caps(profile, 8, 200)


@pytest.mark.parametrize("name", ["default", "uniform", "faulty", "speech", "speech-faulty"])
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
    with pytest.raises(ValueError):
        Faults(fail_rate=-0.1)
    with pytest.raises(ValueError):
        Speech(real_time_factor=(0.3, 0.1))
    with pytest.raises(ValueError):
        Speech(partial_every_ms=0)


# --- the speech profile --------------------------------------------------------------


def noise(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_the_transcript_follows_from_the_audio_alone() -> None:
    audio = noise(1, 32_000)  # 1 s of 16 kHz mono PCM
    words = transcript_words(audio, 1000, 2.5)
    assert words == transcript_words(bytes(audio), 1000, 2.5)  # same audio, same words
    assert len(words) == 2  # 2.5 words a second, rounded half to even
    assert set(words) <= set(VOCABULARY)
    others = {transcript_words(noise(seed, 32_000), 1000, 2.5) for seed in range(2, 12)}
    assert words not in others and len(others) > 5  # other audio, other words
    assert len(transcript_words(audio, 4000, 2.5)) == 10  # longer audio, more words
    assert len(transcript_words(b"", 0, 2.5)) == 1  # at least one
    assert audio_ms(32_000, 16_000, 1, None) == 1000
    assert audio_ms(32_000, 8_000, 2, None) == 1000
    assert audio_ms(5, 16_000, 1, 640) == 640  # a duration given wins (other codecs)


def test_a_recognition_takes_the_audio_times_the_real_time_factor_with_partials() -> None:
    behaviour = Behaviour(get_profile("speech", time_scale=0.5))
    audio = noise(5, 38_400)  # 1.2 s
    recognition = behaviour.recognise(audio, 1200, 0.2)
    assert recognition == behaviour.recognise(audio, 1200, 0.2)
    assert recognition.transcript == " ".join(transcript_words(audio, 1200, 2.5))
    assert [s.audio_ms for s in recognition.steps] == [200, 400, 600, 800, 1000, 1200]
    assert recognition.compute_s == pytest.approx(1.2 * 0.2 * 0.5)
    assert all(s.compute_s == pytest.approx(0.2 * 0.2 * 0.5) for s in recognition.steps)
    known = [s.words for s in recognition.steps]
    assert known == sorted(known) and known[-1] == len(recognition.words) == 3
    for step in recognition.steps:
        assert recognition.transcript.startswith(recognition.partial(step))
    # A last step shorter than the others; an utterance shorter than one step.
    odd = behaviour.recognise(audio, 500, 0.2)
    assert [s.audio_ms for s in odd.steps] == [200, 400, 500]
    assert [s.audio_ms for s in behaviour.recognise(audio, 150, 0.2).steps] == [150]


def test_a_nodes_real_time_factor_is_in_range_and_slow_nodes_are_slower() -> None:
    behaviour = Behaviour(get_profile("speech"))
    factors = [behaviour.real_time_factor(random.Random(i)) for i in range(500)]
    assert 0.1 <= min(factors) < 0.12 and 0.28 < max(factors) <= 0.3
    slow = behaviour.real_time_factor(random.Random(7), slow=True)
    assert slow == pytest.approx(behaviour.real_time_factor(random.Random(7)) * 10)


def test_the_faulty_speech_profile_rejects_crashes_and_fails() -> None:
    behaviour = Behaviour(get_profile("speech-faulty"))
    rng = random.Random(3)
    n = 20_000
    decisions = [behaviour.on_assign(rng, service_s=0.5) for _ in range(n)]
    assert sum(d.reject_reason is not None for d in decisions) / n == pytest.approx(
        0.05, rel=0.2
    )
    crashes = [d.crash_after_s for d in decisions if d.crash_after_s is not None]
    assert crashes and all(0.1 <= c <= 0.4 for c in crashes)  # within the recognition
    assert sum(behaviour.fails(rng) for _ in range(n)) / n == pytest.approx(0.05, rel=0.2)
    # The speech profile injects nothing, and draws nothing for it.
    clean = Behaviour(get_profile("speech"))
    state = rng.getstate()
    assert not any(clean.fails(rng) for _ in range(100))
    assert clean.on_assign(rng) is NO_FAULT and rng.getstate() == state
