"""`hub demo --live` and `hub demo --room`: live speech sessions at work.

`--live`: simulated speakers each stream speech-like audio (16 kHz PCM, talk
spurts of 0.8-2.5 s between pauses of 0.4-1.2 s, sent in 100 ms chunks in
real time and, like a client with voice activity detection, nothing during
the pauses) over a `LiveSession`; the hub cuts an utterance at each pause
(`pause_ms`) and runs it on a simulated fleet of fake speech recognisers
(`agent_sim`'s speech profile). A status line every second: live sessions,
utterances cut and answered per second, the cut-to-result latency p50/p99.

`--room`: a few speakers in different languages in one room, every member
hearing the others in its own language; with `--hubs 2` the members are spread
over two hubs sharing one Redis. Per second: utterances spoken, room results
delivered, utterance-to-listener latency.

Same setup as `hub demo` (hub.app.demo): embedded hubs with `auth = "jwt"`
and tokens minted by the demo, consoles printed at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from agent_sim.behaviour import get_profile
from agent_sim.client import HubClient
from agent_sim.fleet import Fleet
from agent_sim.live import LiveSession
from hub.app.demo import _how_to_look, _start_hubs
from hub.app.hub import Hub
from hub.core.errors import ConfigError
from hub.core.messages import RoomResult, UtteranceCut, UtteranceResult
from hub.core.principal import ADMIN, CLIENT, NODE
from hub.net.auth import mint_token

RATE = 16_000
CHUNK_MS = 100
PAUSE_MS = 300
"""The hub cuts an utterance when no audio came for this long (the speakers' pauses
are longer)."""
TIME_SCALE = 0.2
"""Simulated recognition time x 0.2: a node takes 2-6 % of the audio's duration."""
ROOM_LANGS = ("en", "de", "es", "zh")


@dataclass
class LiveStats:
    started: float = field(default_factory=time.monotonic)
    cut_at: dict[tuple[str, int], float] = field(default_factory=dict)
    unanswered: set[tuple[str, int]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    room_latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    cuts: int = 0
    room_results: int = 0

    def percentile(self, values: list[float], q: float) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def speech_like(rng: random.Random, ms: int) -> bytes:
    """`ms` of 16 kHz mono PCM that sounds like nothing but has speech's shape: a few
    harmonics of a wandering pitch under a syllable-rate envelope."""
    n = RATE * ms // 1000
    pitch = rng.uniform(90, 220)
    phase = rng.random() * 6.28
    out = bytearray()
    for i in range(n):
        t = i / RATE
        envelope = 0.5 + 0.5 * math.sin(2 * math.pi * 4 * t + phase)
        value = sum(math.sin(2 * math.pi * pitch * k * t) / k for k in (1, 2, 3))
        sample = int(6000 * envelope * value)
        out += sample.to_bytes(2, "little", signed=True)
    return bytes(out)


async def speak(
    session: LiveSession, rng: random.Random, deadline: float, stats: LiveStats
) -> None:
    """Talk spurts in real time, silent (nothing sent) during pauses; then close."""
    chunk = speech_like(rng, CHUNK_MS)  # made once: the recogniser needs only its length
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        for _ in range(rng.randint(8, 25)):
            await session.send_audio(chunk)
            next_at += CHUNK_MS / 1000
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        pause_s = rng.uniform(0.4, 1.2)
        next_at += pause_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def listen(session: LiveSession, stats: LiveStats) -> None:
    """Every event of the session until it closes: cut times, latencies, outcomes."""
    async for event in session:
        now = time.monotonic()
        if isinstance(event, UtteranceCut):
            stats.cuts += 1
            stats.cut_at[(event.session_id, event.index)] = now
            stats.unanswered.add((event.session_id, event.index))
        elif isinstance(event, UtteranceResult):
            cut = stats.cut_at.get((event.session_id, event.index))
            stats.unanswered.discard((event.session_id, event.index))
            if cut is not None:
                stats.latencies_ms.append((now - cut) * 1000)
            key = "ok" if event.ok else f"failed:{event.error.code if event.error else '?'}"
            stats.outcomes[key] += 1
        elif isinstance(event, RoomResult):
            stats.room_results += 1
            # The speaker's own clock: speakers and listeners share this process.
            cut = stats.cut_at.get((event.speaker, event.index))
            if cut is not None:
                stats.room_latencies_ms.append((now - cut) * 1000)


async def _close_when_done(
    talkers: list[asyncio.Task[None]], sessions: list[LiveSession], stats: LiveStats
) -> None:
    """Once every speaker stopped: let the last utterances reach their listeners (a room
    translates after the speaker's own result), then close every session."""
    await asyncio.gather(*talkers)
    for _ in range(50):
        if not stats.unanswered:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    for session in sessions:
        await session.close()


def _status(stats: LiveStats, hubs: list[Hub], room: bool) -> str:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    done = sum(stats.outcomes.values())
    sessions = sum(len(hub.live) for hub in hubs)
    line = (
        f"{elapsed:5.1f}s  sessions {sessions:3d}  cut {stats.cuts:5d} "
        f"({stats.cuts / elapsed:5.1f}/s)"
        f"  answered {done:5d}  cut->result p50 "
        f"{stats.percentile(stats.latencies_ms, 0.5):6.1f} ms  p99 "
        f"{stats.percentile(stats.latencies_ms, 0.99):7.1f} ms"
    )
    if room:
        line += (
            f"  room results {stats.room_results:5d}  to listener p50 "
            f"{stats.percentile(stats.room_latencies_ms, 0.5):6.1f} ms"
        )
    return line


async def run_live_demo(
    *, speakers: int = 8, nodes: int = 8, seconds: float = 15.0, seed: int = 1,
    hubs: int = 1, room: bool = False, linger: bool = False, port: int = 0,
) -> None:
    if hubs not in (1, 2):
        raise ConfigError("--hubs must be 1 or 2")
    rng = random.Random(seed)
    profile = get_profile("speech", time_scale=TIME_SCALE)
    if room:
        pairs = tuple((a, b) for a in ROOM_LANGS for b in ROOM_LANGS if a != b)
        profile = replace(profile, fixed_pairs=pairs, max_concurrency=(8, 8))
    async with contextlib.AsyncExitStack() as stack:
        running, secret, redis_url = await _start_hubs(stack, hubs, port)
        ttl_s = seconds + 3600
        node_token = mint_token(secret, role=NODE, sub="demo-fleet", node_ids=["asr*"],
                                ttl_s=ttl_s)
        client_token = mint_token(secret, role=CLIENT, sub="demo-client", ttl_s=ttl_s)
        admin_token = mint_token(secret, role=ADMIN, sub="demo-operator", ttl_s=ttl_s)
        urls = [hub.url for hub in running]
        what = (f"a room of {speakers} speakers in {', '.join(ROOM_LANGS)}" if room
                else f"{speakers} speakers")
        print(f"nodehub live demo: {hubs} hub(s) at {', '.join(urls)}"
              f"{' sharing ' + redis_url if redis_url else ' (local mode)'}; {nodes} "
              f"simulated speech recognisers; {what} streaming 16 kHz audio in real time for "
              f"{seconds:.0f}s; pause_ms {PAUSE_MS}")
        _how_to_look(running, admin_token, linger=linger)
        for i in range(hubs):
            share = nodes // hubs + (1 if i < nodes % hubs else 0)
            fleet = Fleet(hub_urls=urls[i:] + urls[:i], nodes=share, seed=seed + i,
                          profile=profile, prefix=f"asr{i + 1}", token=node_token,
                          inject_disconnects=False)
            await stack.enter_async_context(fleet)
            await fleet.wait_registered(timeout_s=30)
        stats = LiveStats()
        deadline = time.monotonic() + seconds
        tasks = []
        talkers = []
        sessions: list[LiveSession] = []
        for i in range(speakers):
            client = await stack.enter_async_context(
                HubClient(urls[i % hubs], token=client_token)
            )
            if room:
                lang = ROOM_LANGS[i % len(ROOM_LANGS)]
                other = ROOM_LANGS[(i + 1) % len(ROOM_LANGS)]
                session = await client.live_session(f"speaker-{i + 1}", lang, other,
                                                    pause_ms=PAUSE_MS)
                await session.join_room("demo-room", lang)
            else:
                session = await client.live_session(f"speaker-{i + 1}", "en", "de",
                                                    pause_ms=PAUSE_MS)
            sessions.append(session)
            tasks.append(asyncio.create_task(listen(session, stats)))
            talkers.append(asyncio.create_task(
                speak(session, random.Random(rng.random()), deadline, stats)
            ))
        tty = sys.stdout.isatty()
        work = asyncio.gather(*tasks, _close_when_done(talkers, sessions, stats))
        while not work.done():
            await asyncio.wait({work}, timeout=1.0)
            line = _status(stats, running, room)
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
        if tty:
            print()
        await work
        _summary(stats, running, room)
        if linger:
            print(f"\nthe hub(s) keep serving at {', '.join(urls)} until Ctrl-C")
            await asyncio.Event().wait()


def _summary(stats: LiveStats, hubs: list[Hub], room: bool) -> None:
    elapsed = time.monotonic() - stats.started
    done = sum(stats.outcomes.values())
    print("\nsummary")
    print(f"  utterances cut     {stats.cuts} in {elapsed:.1f}s ({stats.cuts / elapsed:.1f}/s)")
    print(f"  answered           {done}: " + ", ".join(
        f"{k} {v}" for k, v in sorted(stats.outcomes.items())))
    if stats.latencies_ms:
        print(f"  cut -> result (ms) p50 {stats.percentile(stats.latencies_ms, 0.5):.1f}  "
              f"p99 {stats.percentile(stats.latencies_ms, 0.99):.1f}  "
              f"mean {statistics.fmean(stats.latencies_ms):.1f}  (the recogniser's compute "
              "included: 2-6 % of each utterance's duration)")
    if room:
        print(f"  room results       {stats.room_results} delivered to listeners")
        if stats.room_latencies_ms:
            print("  cut -> listener     p50 "
                  f"{stats.percentile(stats.room_latencies_ms, 0.5):.1f} ms  p99 "
                  f"{stats.percentile(stats.room_latencies_ms, 0.99):.1f} ms")
    for hub in hubs:
        cut = hub.metrics.utterances.values
        print(f"  hub {hub.config.hub_id:12s} utterances by cut: "
              + ", ".join(f"{k[0]} {int(v)}" for k, v in sorted(cut.items()))
              + f"; room jobs {int(hub.metrics.room_jobs.get())}")
