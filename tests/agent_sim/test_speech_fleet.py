"""The simulated fleet's speech profile through a real hub over real sockets: live
sessions recognised by fake recognisers (transcripts from the audio, partials first,
compute time from the audio's length), and the faulty variant failing some."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import replace

import pytest

from agent_sim import HubClient, LiveEvent, LiveSession, Partial, UtteranceResult, cli
from agent_sim.behaviour import Faults, get_profile, spoken_language, transcript_words
from agent_sim.fleet import Fleet
from hub.app.hub import Hub

TIMEOUT_S = 10.0


def noise(seed: int, ms: int) -> bytes:
    """`ms` of 16 kHz mono 16-bit "audio" that is the same for the same seed."""
    return random.Random(seed).randbytes(32 * ms)


async def run_session(session: LiveSession, utterances: list[bytes]) -> list[LiveEvent]:
    for audio in utterances:
        await session.send_audio(audio, is_final=True)
    await session.close()
    return [event async for event in session]


async def test_the_speech_fleet_recognises_each_utterance_from_its_audio(hub: Hub) -> None:
    profile = get_profile("speech", time_scale=0.2)
    a, b = noise(1, 1200), noise(2, 1200)
    async with (
        Fleet(hub_urls=[hub.url], nodes=2, seed=4, profile=profile,
              connect_stagger_s=0.0) as fleet,
        HubClient(hub.url) as client,
    ):
        await fleet.wait_registered(TIMEOUT_S)
        session = await client.live_session("talk", "en", "de", pause_ms=0)
        events = await asyncio.wait_for(run_session(session, [a, a, b]), TIMEOUT_S)
    results = session.results
    assert [(r.index, r.ok) for r in results] == [(0, True), (1, True), (2, True)]
    out = [r.output for r in results]
    # The same audio gives the same transcript; other audio another one.
    assert out[0]["transcript"] == out[1]["transcript"] != out[2]["transcript"]
    assert out[0]["transcript"] == " ".join(transcript_words(a, 1200, 2.5))
    assert len(out[2]["transcript"].split()) == 3  # 1.2 s at 2.5 words a second
    assert out[2]["text"] == f"[en->de] {out[2]['transcript']}"
    assert all(o["audio_ms"] == 1200 for o in out)
    # Compute time: 1.2 s of audio times a real-time factor in 0.1..0.3, scaled by 0.2.
    assert all(1200 * 0.1 * 0.2 <= o["service_ms"] <= 1200 * 0.3 * 0.2 for o in out)
    # Partials every 200 ms of audio, before the result, each a prefix of the transcript.
    partials: dict[int, list[dict[str, object]]] = defaultdict(list)
    result_at = {e.index: at for at, e in enumerate(events) if isinstance(e, UtteranceResult)}
    for at, event in enumerate(events):
        if isinstance(event, Partial):
            assert at < result_at[event.index]
            partials[event.index].append(event.data)
    for index, result in enumerate(results):
        assert [p["audio_ms"] for p in partials[index]] == [200, 400, 600, 800, 1000]
        assert all(p["stage"] == "asr" for p in partials[index])
        assert all(result.output["transcript"].startswith(str(p["partial"]))
                   for p in partials[index])


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_faulty_speech_fleet_fails_some_and_still_answers_each_once(
    hub: Hub, seed: int
) -> None:
    profile = replace(
        get_profile("speech-faulty", time_scale=0.05),
        faults=Faults(reject_rate=0.3, fail_rate=0.3, crash_mid_job_rate=0.1),
    )
    utterances = [noise(i, 400) for i in range(24)]
    async with (
        Fleet(hub_urls=[hub.url], nodes=2, seed=seed, profile=profile, connect_stagger_s=0.0,
              reconnect_min_s=0.01, reconnect_max_s=0.05) as fleet,
        HubClient(hub.url) as client,
    ):
        await fleet.wait_registered(TIMEOUT_S)
        session = await client.live_session("talk", "en", "de", pause_ms=0)
        await asyncio.wait_for(run_session(session, utterances), TIMEOUT_S * 3)
        stats = fleet.stats()
    results = session.results
    assert [r.index for r in results] == list(range(24))  # each once, in order
    codes = [r.error.code if r.error else "ok" for r in results]
    assert "ok" in codes and "simulated_failure" in codes, codes
    # A rejected or crashed attempt (a crash is due within the recognition, so whether
    # one lands before the job ends depends on timing) is retried: only max_attempts of
    # them end a job otherwise than with the node's answer.
    assert set(codes) <= {"ok", "simulated_failure", "attempts_exhausted", "no_node"}, codes
    # (A node may fail a job and crash before its answer leaves: the hub retries it.)
    assert stats["rejected"] > 0 and stats["failed"] >= codes.count("simulated_failure")
    ok = [r.output for r in results if r.ok]
    assert all(o["transcript"] == " ".join(transcript_words(utterances[r.index], 400, 2.5))
               for r, o in zip([r for r in results if r.ok], ok, strict=True))


async def test_two_way_jobs_get_the_language_the_fake_recogniser_hears(hub: Hub) -> None:
    profile = get_profile("speech", time_scale=0.05)
    utterances = [noise(i, 400) for i in range(8)]
    async with (
        Fleet(hub_urls=[hub.url], nodes=1, seed=1, profile=profile,
              connect_stagger_s=0.0) as fleet,
        HubClient(hub.url) as client,
    ):
        await fleet.wait_registered(TIMEOUT_S)
        session = await client.live_session("talk", "auto", langs=["en", "de"], pause_ms=0)
        await asyncio.wait_for(run_session(session, utterances), TIMEOUT_S)
        text = await client.submit("auto", "auto", langs=["en", "de"], payload={"text": "hallo"})
        answer = await asyncio.wait_for(text.result, TIMEOUT_S)
    heard = [spoken_language(audio, ["en", "de"]) for audio in utterances]
    assert {"en", "de"} == set(heard)  # both directions occur in this sample
    assert [(r.ok, r.src_lang) for r in session.results] == [(True, lang) for lang in heard]
    assert all({r.src_lang, r.tgt_lang} == {"en", "de"} for r in session.results)
    assert all(r.output["text"].startswith(f"[{r.src_lang}->{r.tgt_lang}] ")
               for r in session.results)
    said = spoken_language("hallo", ["en", "de"])
    assert answer.ok and answer.output["src_lang"] == said  # type: ignore[union-attr]


def test_the_cli_knows_the_speech_profiles() -> None:
    for name in ("speech", "speech-faulty"):
        args = cli.build_parser().parse_args(["--hub", "ws://h:1", "--profile", name])
        assert get_profile(args.profile).speech is not None
    assert get_profile("default").speech is None
