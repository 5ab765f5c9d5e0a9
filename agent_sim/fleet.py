"""A simulated fleet: N `NodeAgent`s in one event loop, driven by a `Profile`.

Node `i` is named `{prefix}-{i:05d}`; its capabilities, service times and
faults come from `agent_sim.behaviour` with random streams derived from the
seed and `i`, so a seed names one fleet. Each agent's handler sleeps the
simulated service time, sends one `job_progress` for longer jobs and returns
`{"text": ..., "node_id": ...}`. In a profile with `speech`, a live session's
utterance is recognised instead (`Behaviour.recognise`): a partial
`{"stage": "asr", "partial": ..., "audio_ms": ...}` per step, then
`{"transcript": ..., "text": ..., "node_id": ..., "audio_ms": ...}`; a share
of jobs ends `simulated_failure` when the profile's `fail_rate` says so
(both kinds). Agents are launched a little apart so a
thousand of them do not hit the hub in the same millisecond. The launcher and
the injected-disconnect loop are owned by the fleet and cancelled and awaited
by `aclose()`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from loguru import logger

from agent_sim.agent import JobContext, JobFailed, JobHandler, NodeAgent, Token
from agent_sim.behaviour import (
    Behaviour,
    FaultDecision,
    Profile,
    audio_ms,
    get_profile,
    node_capabilities,
    spoken_language,
)
from agent_sim.job import Utterance, utterance_of
from hub.core.messages import AUTO, JobAssign

__all__ = ["Fleet", "node_id_for"]

_COUNTERS = (
    "accepted",
    "rejected",
    "completed",
    "failed",
    "cancelled",
    "lost",
    "connects",
    "disconnects",
    "conflicts",
)


def node_id_for(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


class _NodeFaults:
    """One node's `FaultPolicy`: the profile's faults drawn from the node's own rng."""

    __slots__ = ("_behaviour", "_real_time_factor", "_rng", "slow")

    def __init__(
        self, behaviour: Behaviour, rng: random.Random, *, slow: bool,
        real_time_factor: float | None = None,
    ) -> None:
        self._behaviour = behaviour
        self._rng = rng
        self.slow = slow
        self._real_time_factor = real_time_factor

    def on_assign(self, assign: JobAssign) -> FaultDecision:
        service_s = None
        if self._real_time_factor is not None:
            # A crash lands within the recognition, whose length the audio gives.
            utterance = utterance_of(assign.payload)
            if utterance is not None:
                service_s = self._behaviour.recognition_s(
                    _duration_ms(utterance), self._real_time_factor
                )
        return self._behaviour.on_assign(self._rng, slow=self.slow, service_s=service_s)


def _duration_ms(utterance: Utterance) -> float:
    fmt = utterance.audio_format
    return audio_ms(len(utterance.audio), fmt.sample_rate_hz, fmt.channels, utterance.duration_ms)


def _direction(ctx: JobContext, langs: Any, said: bytes | str) -> tuple[str, str]:
    """The job's languages; for a two-way job (`auto`), the one the node "hears" in `said`
    and the other one."""
    if ctx.src_lang != AUTO or not isinstance(langs, list) or len(langs) != 2:
        return ctx.src_lang, ctx.tgt_lang
    src = spoken_language(said, langs)
    return src, langs[1] if src == langs[0] else langs[0]


def _speech_handler(
    node_id: str, behaviour: Behaviour, rng: random.Random, real_time_factor: float,
    otherwise: JobHandler,
) -> JobHandler:
    """A fake recogniser of utterances; `otherwise` serves every other job."""

    async def handle(ctx: JobContext) -> Any:
        utterance = ctx.utterance
        if utterance is None:
            return await otherwise(ctx)
        duration = _duration_ms(utterance)
        recognition = behaviour.recognise(utterance.audio, duration, real_time_factor)
        fails = behaviour.fails(rng)
        *interim, last = recognition.steps
        for step in interim:
            await asyncio.sleep(step.compute_s)
            await ctx.progress({
                "stage": "asr", "partial": recognition.partial(step),
                "audio_ms": round(step.audio_ms),
            })
        await asyncio.sleep(last.compute_s)
        if fails:
            raise JobFailed("simulated_failure", f"utterance {utterance.index} not recognised")
        src, tgt = _direction(ctx, utterance.langs, utterance.audio)
        return {
            "transcript": recognition.transcript,
            "text": f"[{src}->{tgt}] {recognition.transcript}",
            "src_lang": src,
            "node_id": node_id,
            "audio_ms": round(duration),
            "service_ms": round(recognition.compute_s * 1000.0, 3),
        }

    return handle


def _simulated_handler(
    node_id: str, behaviour: Behaviour, rng: random.Random, *, slow: bool
) -> JobHandler:
    async def handle(ctx: JobContext) -> dict[str, Any]:
        service_s = behaviour.service_time_s(rng, slow=slow)
        payload = ctx.payload if isinstance(ctx.payload, dict) else {}
        text = payload.get("text")
        if not isinstance(text, str):
            text = f"simulated {ctx.src_lang} utterance"
        src, tgt = _direction(ctx, payload.get("langs"), text)
        if behaviour.emits_progress(service_s):
            await asyncio.sleep(service_s / 2)
            await ctx.progress({"stage": "asr", "partial": text[: max(1, len(text) // 2)]})
            await asyncio.sleep(service_s / 2)
        else:
            await asyncio.sleep(service_s)
        if behaviour.fails(rng):
            raise JobFailed("simulated_failure", "the simulated job failed")
        return {
            "text": f"[{src}->{tgt}] {text}",
            **({"src_lang": src} if ctx.src_lang == AUTO else {}),
            "node_id": node_id,
            "service_ms": round(service_s * 1000.0, 3),
        }

    return handle


class Fleet:
    """Runs `nodes` simulated agents against `hub_urls`. Use as `async with Fleet(...)`."""

    def __init__(
        self,
        *,
        hub_urls: Sequence[str],
        nodes: int,
        seed: int = 0,
        profile: Profile | str = "default",
        binary: bool = False,
        token: Token | None = None,
        ssl_context: ssl.SSLContext | None = None,
        prefix: str = "sim",
        connect_stagger_s: float = 0.002,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 5.0,
        inject_disconnects: bool = True,
        version: str = "agent_sim/0.1",
    ) -> None:
        if nodes < 0:
            raise ValueError("nodes must be >= 0")
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.behaviour = Behaviour(self.profile)
        self.hub_urls = tuple(hub_urls)
        self.seed = seed
        self.prefix = prefix
        self.injected_disconnects = 0
        self.slow_nodes = 0
        self._stagger_s = connect_stagger_s
        self._inject_disconnects = inject_disconnects
        self._tasks: list[asyncio.Task[None]] = []
        self._launched = asyncio.Event()
        self._started = False
        self._closed = False
        self.agents: list[NodeAgent] = []
        for index in range(nodes):
            node_id = node_id_for(prefix, index)
            # Independent streams per node and purpose: adding a node or a job on
            # one node does not shift what another node draws.
            caps = node_capabilities(self.profile, index, random.Random(f"{seed}:{index}:caps"))
            run_rng = random.Random(f"{seed}:{index}:run")
            slow = self.behaviour.is_slow_node(run_rng)
            self.slow_nodes += slow
            handler = _simulated_handler(node_id, self.behaviour, run_rng, slow=slow)
            real_time_factor = None
            if self.profile.speech is not None:
                real_time_factor = self.behaviour.real_time_factor(
                    random.Random(f"{seed}:{index}:speech"), slow=slow
                )
                handler = _speech_handler(
                    node_id, self.behaviour, run_rng, real_time_factor, handler
                )
            self.agents.append(
                NodeAgent(
                    node_id=node_id,
                    capabilities=caps,
                    hub_urls=self.hub_urls,
                    handler=handler,
                    binary=binary,
                    token=token,
                    ssl_context=ssl_context,
                    version=version,
                    reconnect_min_s=reconnect_min_s,
                    reconnect_max_s=reconnect_max_s,
                    rng=random.Random(f"{seed}:{index}:net"),
                    faults=_NodeFaults(
                        self.behaviour, run_rng, slow=slow, real_time_factor=real_time_factor
                    ),
                )
            )

    def __repr__(self) -> str:
        registered = sum(a.registered.is_set() for a in self.agents)
        return (
            f"Fleet(nodes={len(self.agents)}, registered={registered}, "
            f"profile={self.profile.name!r}, seed={self.seed})"
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Launch the agents in the background, `connect_stagger_s` apart."""
        if self._started:
            raise RuntimeError("Fleet already started")
        self._started = True
        self._tasks.append(asyncio.create_task(self._launch(), name="fleet:launch"))
        if self._inject_disconnects and self.profile.faults.disconnect_rate_per_min > 0:
            self._tasks.append(asyncio.create_task(self._disconnects(), name="fleet:chaos"))

    async def _launch(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for agent in self.agents:
                await agent.start()
                if self._stagger_s > 0:
                    await asyncio.sleep(self._stagger_s)
        finally:
            self._launched.set()
        logger.info("fleet launched {} agents against {}", len(self.agents), list(self.hub_urls))
        for agent in self.agents:
            await agent.registered.wait()
        logger.info(
            "fleet: all {} agents registered after {:.2f} s",
            len(self.agents),
            loop.time() - started,
        )

    async def _disconnects(self) -> None:
        """Inject abrupt disconnects: a Poisson process over the whole fleet."""
        rng = random.Random(f"{self.seed}:chaos")
        await self._launched.wait()
        while True:
            delay = self.behaviour.next_disconnect_s(rng, nodes=len(self.agents))
            if delay is None:
                return
            await asyncio.sleep(delay)
            agent = rng.choice(self.agents)
            if agent.abort_connection():
                self.injected_disconnects += 1
                logger.debug("injected a disconnect on {}", agent.node_id)

    async def wait_registered(self, timeout_s: float | None = None) -> None:
        """Wait until every agent is registered; `TimeoutError` after `timeout_s`."""

        async def all_registered() -> None:
            await self._launched.wait()
            for agent in self.agents:
                await agent.registered.wait()

        await asyncio.wait_for(all_registered(), timeout_s)

    async def drain(self, *, timeout_s: float | None = None) -> bool:
        """Drain every agent (send `drain`, finish jobs, close); False if any timed out."""
        await self._stop_tasks()
        results = await asyncio.gather(*(a.drain(timeout_s=timeout_s) for a in self.agents))
        return all(results)

    async def aclose(self) -> None:
        """Close every agent (running jobs are cancelled) and stop the fleet's tasks."""
        if self._closed:
            return
        self._closed = True
        await self._stop_tasks()
        await asyncio.gather(*(a.aclose() for a in self.agents))

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def stats(self) -> dict[str, int]:
        """Fleet-wide counters: the agents' sums plus registration and fault counts."""
        totals = dict.fromkeys(_COUNTERS, 0)
        registered = running = 0
        for agent in self.agents:
            for name in _COUNTERS:
                totals[name] += getattr(agent, name)
            registered += agent.registered.is_set()
            running += agent.running
        return {
            "nodes": len(self.agents),
            "registered": registered,
            "running": running,
            **totals,
            "slow_nodes": self.slow_nodes,
            "injected_disconnects": self.injected_disconnects,
        }
