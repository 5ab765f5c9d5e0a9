"""The stage table: its rows agree with the wire model, and each row's rule.

What every module does with the table (selection, breakdown, indexes, the
admission queue) is tested there, against oracles that spell the rules out.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import msgspec
import pytest

from hub.core.capabilities import (
    REASON_ORDER,
    NodeCapabilities,
    Requirements,
    capability_mismatch,
)
from hub.core.errors import ProtocolError
from hub.core.messages import Capabilities, LanguagePair, Pipeline, Register, Submit, node_codec
from hub.core.snapshot import ALL, GLOBAL, HAS_FEATURE, index_keys, index_member, pool_index_keys
from hub.core.stages import (
    ASR,
    NMT,
    STAGE_INDEX,
    STAGES,
    TTS,
    Stage,
    both_ways,
    enabled,
)

CAPS = NodeCapabilities(
    language_pairs=frozenset({("en", "de"), ("de", "en"), ("en", "fr")}),
    asr_languages=frozenset({"en", "de"}),
    tts_languages=frozenset({"de"}),
    features=frozenset({"emo"}),
    pool=3,
)


# --- the table against the wire model -----------------------------------------------------


def test_the_stages_are_the_pipeline_flags() -> None:
    assert sorted(stage.name for stage in STAGES) == sorted(Pipeline.__struct_fields__)


def test_each_stage_reads_a_capability_list_of_the_wire_and_of_node_capabilities() -> None:
    wire = set(Capabilities.__struct_fields__)
    node = {f.name for f in dataclasses.fields(NodeCapabilities) if f.init}
    not_stages = {"max_concurrency", "features", "pool", "labels"}
    assert wire - not_stages == {stage.capability for stage in STAGES}
    assert node - not_stages == {stage.capability for stage in STAGES}


def test_reason_names_are_the_wire_names_in_check_order() -> None:
    assert [stage.reason for stage in STAGES] == [
        "lang_pair_unsupported", "asr_lang_unsupported", "tts_lang_unsupported"]
    assert REASON_ORDER == (
        "excluded", "pool_mismatch", "lang_pair_unsupported", "asr_lang_unsupported",
        "tts_lang_unsupported", "feature_missing", "offline", "draining", "at_capacity")


def test_ring_and_condition_kinds_are_distinct() -> None:
    rings = [stage.ring for stage in STAGES]
    conds = [stage.cond for stage in STAGES]
    assert len(set(rings)) == len(rings) and ALL not in rings
    assert len(set(conds)) == len(conds) and HAS_FEATURE not in conds


def test_node_capabilities_hold_each_stage_entries_in_table_order() -> None:
    assert CAPS.stage_entries == tuple(getattr(CAPS, s.capability) for s in STAGES)
    assert [STAGE_INDEX[s] for s in STAGES] == list(range(len(STAGES)))
    changed = dataclasses.replace(CAPS, asr_languages=frozenset({"ja"}))
    assert changed.stage_entries[STAGE_INDEX[ASR]] == {"ja"}
    assert changed != CAPS
    assert dataclasses.replace(changed, asr_languages=CAPS.asr_languages) == CAPS


def test_what_each_stage_checks() -> None:
    direction = ("en", "de")
    assert (NMT.need(direction), ASR.need(direction), TTS.need(direction)) == (
        ("en", "de"), "en", "de")
    def serves(direction: tuple[str, str]) -> list[bool]:
        return [stage.need(direction) in stage.entries(CAPS) for stage in STAGES]

    assert serves(("en", "de")) == [True, True, True]
    assert serves(("de", "en")) == [True, True, False]
    assert serves(("fr", "en")) == [False, False, False]


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=3)))
def test_enabled_stages_in_table_order(flags: tuple[bool, bool, bool]) -> None:
    asr, nmt, tts = flags
    pipeline = Pipeline(asr=asr, nmt=nmt, tts=tts)
    expected = [stage for stage, on in ((NMT, nmt), (ASR, asr), (TTS, tts)) if on]
    assert list(enabled(pipeline)) == expected
    assert enabled(pipeline) is enabled(Pipeline(asr=asr, nmt=nmt, tts=tts))  # memoised


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_each_stage_list_counts_towards_the_capability_entries_limit(stage: Stage) -> None:
    codec = node_codec(max_capability_entries=4)
    five = {(f"s{i}", "t") if stage.checks == "pair" else f"l{i}" for i in range(5)}
    entries: dict[str, Any] = {stage.capability: stage.to_wire(frozenset(five))}
    caps = Capabilities(max_concurrency=1, **entries)
    with pytest.raises(ProtocolError, match="5 capability entries"):
        codec.decode(msgspec.json.encode(Register(node_id="n", capabilities=caps)))


# --- the snapshot's index keys --------------------------------------------------------------


def test_a_node_is_in_one_ring_per_capability_entry_and_the_ring_of_all() -> None:
    expected = {
        (ALL, 3, "", ""), ("pair", 3, "en", "de"), ("pair", 3, "de", "en"),
        ("pair", 3, "en", "fr"), ("asr", 3, "en", ""), ("asr", 3, "de", ""),
        ("tts", 3, "de", ""),
    }
    keys = pool_index_keys(CAPS, 3)
    assert len(keys) == len(expected) and set(keys) == expected
    assert sorted(index_keys(CAPS)) == sorted(
        [*keys, *((kind, GLOBAL, a, b) for kind, _, a, b in keys)])
    assert all(index_member(CAPS, key) for key in index_keys(CAPS))
    for key in [("pair", GLOBAL, "fr", "en"), ("asr", 3, "fr", ""), ("tts", GLOBAL, "en", "")]:
        assert not index_member(CAPS, key)


def test_the_ring_key_of_a_stage_and_direction() -> None:
    assert NMT.ring_key(2, ("en", "de")) == ("pair", 2, "en", "de")
    assert ASR.ring_key(2, ("en", "de")) == ("asr", 2, "en", "")
    assert TTS.ring_key(GLOBAL, ("en", "de")) == ("tts", GLOBAL, "de", "")
    for stage in STAGES:
        key = stage.ring_key(3, ("en", "de"))
        assert key in pool_index_keys(CAPS, 3)
        assert index_member(CAPS, key)


# --- wire conversion ------------------------------------------------------------------------


def test_capabilities_from_and_to_the_wire() -> None:
    wire = Capabilities(
        max_concurrency=2,
        language_pairs=[LanguagePair(src=s, tgt=t) for s, t in [("en", "fr"), ("de", "en"),
                                                                 ("en", "de")]],
        asr_languages=["en", "de"], tts_languages=["de"], features=["emo"], pool=3,
    )
    caps = NodeCapabilities.from_wire(wire)
    assert caps == dataclasses.replace(CAPS, max_concurrency=2)
    back = caps.to_wire()
    assert [(p.src, p.tgt) for p in back.language_pairs] == [
        ("de", "en"), ("en", "de"), ("en", "fr")]
    assert (back.asr_languages, back.tts_languages) == (["de", "en"], ["de"])
    assert NodeCapabilities.from_wire(back) == caps
    for stage in STAGES:
        entries = stage.entries(caps)
        assert stage.view(entries) == msgspec.to_builtins(stage.to_wire(entries))


# --- directions -----------------------------------------------------------------------------


def test_requirements_have_one_direction_unless_told_otherwise() -> None:
    one = Requirements("en", "de")
    assert one.directions == (("en", "de"),)
    assert one.excluding("n1").directions == (("en", "de"),)
    submit = Submit(request_id="r", src_lang="en", tgt_lang="de")
    assert Requirements.from_submit(submit).directions == (("en", "de"),)
    two = Requirements("en", "de", directions=both_ways("en", "de"))
    assert two.directions == (("en", "de"), ("de", "en"))
    assert two.excluding("n1").directions == two.directions
    assert two != one


def test_the_capability_rule_checks_each_stage_in_every_direction_first() -> None:
    one = Requirements("en", "de")
    two = Requirements("en", "de", directions=both_ways("en", "de"))
    assert capability_mismatch(CAPS, one) is None
    assert capability_mismatch(CAPS, two) == "tts_lang_unsupported"  # no TTS of en
    served = dataclasses.replace(CAPS, tts_languages=frozenset({"de", "en"}))
    assert capability_mismatch(served, two) is None
    # No reverse pair, and no ASR of en: the pair rule comes first, though the ASR
    # rule breaks in the first direction and the pair rule only in the second.
    one_way = dataclasses.replace(
        served, language_pairs=frozenset({("en", "de")}), asr_languages=frozenset({"de"}))
    assert capability_mismatch(one_way, one) == "asr_lang_unsupported"
    assert capability_mismatch(one_way, two) == "lang_pair_unsupported"
    # Only the enabled stages are checked, each both ways.
    text = Requirements("en", "de", Pipeline(asr=False, tts=False),
                        directions=both_ways("en", "de"))
    assert capability_mismatch(CAPS, text) is None
    assert capability_mismatch(one_way, text) == "lang_pair_unsupported"
    speech = Requirements("en", "de", Pipeline(nmt=False), directions=both_ways("en", "de"))
    assert capability_mismatch(CAPS, speech) == "tts_lang_unsupported"
    assert capability_mismatch(one_way, speech) == "asr_lang_unsupported"
    # Features come after every stage.
    emo_spk = Requirements("en", "de", features=frozenset({"emo", "spk"}),
                           directions=both_ways("en", "de"))
    assert capability_mismatch(CAPS, emo_spk) == "tts_lang_unsupported"
    assert capability_mismatch(served, emo_spk) == "feature_missing"
