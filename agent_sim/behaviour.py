"""Seeded, pure simulated node behaviour: what a node offers and how it misbehaves.

A `Profile` describes a fleet: the language catalogue and its Zipf-like
popularity, how many language pairs and features a node carries, pools,
concurrency, the service-time distribution (lognormal, given by its median and
p99) and the fault rates. `node_capabilities` turns a profile into one node's
`hub.core.messages.Capabilities`; `Behaviour` draws service times and per-job fault
decisions. Nothing here does I/O, imports asyncio or reads a clock: every
draw takes an injected `random.Random`, so one seed gives one fleet.

A profile with `speech` (`Speech`) makes its nodes fake speech recognisers
for live-session utterances: the transcript follows from the audio alone
(its length gives the number of words, its bytes which words), the compute
time is the audio's duration times the node's real-time factor, and
`Recognition.steps` says when each interim partial is due.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from hub.core.messages import Capabilities, LanguagePair

# --- catalogues -------------------------------------------------------------------

LANGUAGES: Final[tuple[str, ...]] = (
    # Roughly by speaker count / traffic; the order is the popularity rank.
    "en", "zh", "es", "ar", "hi", "fr", "pt", "ru", "de", "ja",
    "bn", "id", "ur", "tr", "ko", "it", "vi", "fa", "pl", "uk",
    "nl", "th", "sw", "ta", "te", "mr", "ms", "ro", "el", "cs",
    "hu", "sv", "he", "tl", "da", "fi", "nb", "sk", "bg", "hr",
)  # fmt: skip

FEATURES: Final[tuple[str, ...]] = (
    # Ordered by popularity: almost every node punctuates, few do lip sync.
    "punctuation",
    "timestamps",
    "profanity_filter",
    "diarization",
    "language_identification",
    "speaker_identification",
    "noise_suppression",
    "emotion_detection",
    "custom_vocabulary",
    "voice_cloning",
    "sentiment_analysis",
    "formality_control",
    "summarization",
    "code_switching",
    "prosody_transfer",
    "lip_sync",
)

REGIONS: Final[tuple[str, ...]] = (
    "us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast",
)  # fmt: skip
GPUS: Final[tuple[str, ...]] = ("h100", "a100", "l4", "a10g", "t4")

VOCABULARY: Final[tuple[str, ...]] = (
    "the", "a", "we", "you", "they", "it", "this", "that", "is", "are",
    "was", "will", "can", "should", "have", "need", "want", "see", "hear", "say",
    "meeting", "call", "report", "plan", "idea", "question", "answer", "team", "customer", "order",
    "today", "tomorrow", "now", "later", "again", "soon", "here", "there", "very", "really",
    "good", "new", "next", "last", "important", "simple", "and", "but", "so", "then",
    "please", "thanks", "yes", "no", "maybe", "right",
)  # fmt: skip
"""The fake recogniser's words."""

_Z99: Final = 2.3263478740408408
"""The standard normal quantile at 0.99: p99 = median * exp(sigma * _Z99)."""

# --- profile -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceTime:
    """A lognormal service-time distribution given by its median and p99 (seconds)."""

    median_s: float
    p99_s: float

    def __post_init__(self) -> None:
        if not 0 < self.median_s <= self.p99_s:
            raise ValueError(f"need 0 < median_s <= p99_s, got {self.median_s}, {self.p99_s}")

    @property
    def mu(self) -> float:
        return math.log(self.median_s)

    @property
    def sigma(self) -> float:
        return math.log(self.p99_s / self.median_s) / _Z99

    def sample_s(self, rng: random.Random) -> float:
        return rng.lognormvariate(self.mu, self.sigma)


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault-injection rates. Every rate is a probability in [0, 1] unless named otherwise."""

    reject_rate: float = 0.0
    """Per job_assign: reject it (reason "simulated_reject") although not busy."""
    crash_mid_job_rate: float = 0.0
    """Per accepted job: drop the TCP connection (no close frame) while the job runs."""
    slow_node_fraction: float = 0.0
    """Per node: the node is slow, every service time multiplied by `slow_factor`."""
    slow_factor: float = 10.0
    accept_delay_rate: float = 0.0
    """Per job_assign: wait up to `accept_delay_max_s` (scaled) before job_accept."""
    accept_delay_max_s: float = 0.0
    disconnect_rate_per_min: float = 0.0
    """Per node: expected abrupt disconnects per minute (a Poisson process); it reconnects."""
    fail_rate: float = 0.0
    """Per accepted job: the handler ends it `ok: false` (error "simulated_failure")."""

    def __post_init__(self) -> None:
        for name in (
            "reject_rate",
            "crash_mid_job_rate",
            "slow_node_fraction",
            "accept_delay_rate",
            "fail_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if (
            self.slow_factor < 1.0
            or self.accept_delay_max_s < 0
            or self.disconnect_rate_per_min < 0
        ):
            raise ValueError("slow_factor >= 1, accept_delay_max_s >= 0, disconnect rate >= 0")


NO_FAULTS: Final = Faults()
FAULTY: Final = Faults(
    reject_rate=0.05,
    crash_mid_job_rate=0.02,
    slow_node_fraction=0.1,
    slow_factor=10.0,
    accept_delay_rate=0.05,
    accept_delay_max_s=0.5,
    disconnect_rate_per_min=0.2,
)
"""The faults of the "faulty" profiles."""


@dataclass(frozen=True, slots=True)
class Speech:
    """A fake speech recogniser (for live-session utterances)."""

    real_time_factor: tuple[float, float] = (0.1, 0.3)
    """Compute time per second of audio, drawn per node in this range (a slow node
    multiplies it by `Faults.slow_factor`)."""
    words_per_s: float = 2.5
    """Words in the transcript per second of audio (at least one)."""
    partial_every_ms: int = 200
    """An interim partial after each this much audio recognised."""

    def __post_init__(self) -> None:
        lo, hi = self.real_time_factor
        if not 0 < lo <= hi:
            raise ValueError(f"need 0 < real_time_factor lo <= hi, got {(lo, hi)}")
        if self.words_per_s <= 0 or self.partial_every_ms <= 0:
            raise ValueError("words_per_s and partial_every_ms must be > 0")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a recognition: compute `compute_s`, then `words` words of the
    transcript are known, from the first `audio_ms` of audio."""

    compute_s: float
    audio_ms: float
    words: int


@dataclass(frozen=True, slots=True)
class Recognition:
    """What the fake recogniser makes of one utterance: the transcript, and the steps
    after each of which a partial is due (the last one ends the recognition)."""

    words: tuple[str, ...]
    audio_ms: float
    steps: tuple[Step, ...]

    @property
    def transcript(self) -> str:
        return " ".join(self.words)

    @property
    def compute_s(self) -> float:
        return sum(step.compute_s for step in self.steps)

    def partial(self, step: Step) -> str:
        return " ".join(self.words[: step.words])


def audio_ms(size: int, sample_rate_hz: int, channels: int, duration_ms: int | None) -> float:
    """An utterance's duration: as given, else as 16-bit PCM of that rate and channels."""
    if duration_ms is not None:
        return float(duration_ms)
    return size / (sample_rate_hz * channels * 2 / 1000)


def spoken_language(said: bytes | str, langs: Sequence[str]) -> str:
    """Which of a two-way session's languages the fake recogniser hears in `said` (the
    audio, or a text): the same input, the same answer."""
    key = said if isinstance(said, str) else b"lang:" + said
    return langs[random.Random(key).randrange(len(langs))]


def transcript_words(audio: bytes, duration_ms: float, words_per_s: float) -> tuple[str, ...]:
    """The fake transcript of `audio`: the same audio gives the same words, on any node."""
    count = max(1, round(duration_ms / 1000 * words_per_s))
    rng = random.Random(audio)  # seeded by every byte (a SHA-512 of them)
    return tuple(rng.choice(VOCABULARY) for _ in range(count))


@dataclass(frozen=True, slots=True)
class Profile:
    """How a simulated fleet looks and behaves. Ranges are inclusive `(lo, hi)`."""

    name: str
    languages: tuple[str, ...] = LANGUAGES
    language_zipf_s: float = 1.1
    english_pivot_rate: float = 0.6
    """Probability that a drawn language pair has English on one side."""
    reverse_pair_rate: float = 0.5
    """Probability that a drawn pair also brings its reverse direction."""
    pairs_per_node: tuple[int, int] = (2, 6)
    fixed_pairs: tuple[tuple[str, str], ...] = ()
    """When non-empty, every node serves exactly these pairs (no draw)."""
    features: tuple[str, ...] = FEATURES
    feature_zipf_s: float = 1.0
    features_per_node: tuple[int, int] = (0, 6)
    fixed_features: tuple[str, ...] | None = None
    """When not None, every node has exactly these features (no draw)."""
    pools: tuple[int, int] = (0, 7)
    max_concurrency: tuple[int, int] = (1, 8)
    service_time: ServiceTime = field(default_factory=lambda: ServiceTime(1.2, 8.0))
    time_scale: float = 1.0
    """Multiplies every simulated duration (service, accept delay, recognition): 0.01
    makes seconds ms."""
    faults: Faults = NO_FAULTS
    speech: Speech | None = None
    """Nodes recognise live-session utterances with this fake recogniser (other jobs are
    served as without it)."""

    def __post_init__(self) -> None:
        for name in ("pairs_per_node", "features_per_node", "pools", "max_concurrency"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be 0 <= lo <= hi, got {(lo, hi)}")
        if self.max_concurrency[0] < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.pools[1] > 65535:
            raise ValueError("pools must lie in 0..65535")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not self.fixed_pairs and len(self.languages) < 2:
            raise ValueError("need at least two languages to draw pairs")

    def scaled(self, time_scale: float) -> Profile:
        """This profile with every simulated duration multiplied by `time_scale`."""
        return replace(self, time_scale=time_scale)


def _symmetric(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(p for a, b in pairs for p in ((a, b), (b, a)))


PROFILES: Final[dict[str, Profile]] = {
    "default": Profile(name="default"),
    "uniform": Profile(
        name="uniform",
        fixed_pairs=_symmetric(("en", "zh"), ("en", "es")),
        fixed_features=FEATURES,
        max_concurrency=(4, 4),
        service_time=ServiceTime(0.05, 0.3),
    ),
    "faulty": Profile(name="faulty", faults=FAULTY),
    "speech": Profile(
        name="speech",
        fixed_pairs=_symmetric(("en", "de"), ("en", "es"), ("en", "zh")),
        fixed_features=("punctuation", "timestamps"),
        max_concurrency=(2, 4),
        service_time=ServiceTime(0.3, 2.0),
        speech=Speech(),
    ),
    "speech-faulty": Profile(
        name="speech-faulty",
        fixed_pairs=_symmetric(("en", "de"), ("en", "es"), ("en", "zh")),
        fixed_features=("punctuation", "timestamps"),
        max_concurrency=(2, 4),
        service_time=ServiceTime(0.3, 2.0),
        speech=Speech(),
        faults=replace(FAULTY, fail_rate=0.05),
    ),
}


def profile_names() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str, *, time_scale: float | None = None) -> Profile:
    """The named profile, optionally rescaled; `ValueError` names the known ones."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(profile_names())}") from None
    return profile if time_scale is None else profile.scaled(time_scale)


# --- drawing capabilities ----------------------------------------------------------


def zipf_weights(n: int, s: float) -> list[float]:
    """Unnormalised Zipf weights 1/rank**s for ranks 1..n."""
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def _weighted_sample(
    items: Sequence[str], weights: Sequence[float], k: int, rng: random.Random
) -> list[str]:
    """k distinct items, drawn without replacement proportionally to weight.

    Efraimidis-Spirakis: key = u ** (1 / w); keep the k largest keys. The result
    is in catalogue (popularity) order so it does not depend on draw order.
    """
    keys = [(rng.random() ** (1.0 / w), i) for i, w in enumerate(weights)]
    keyed = sorted(keys, reverse=True)[:k]
    return [items[i] for i in sorted(i for _, i in keyed)]


def _draw_pairs(profile: Profile, rng: random.Random) -> list[tuple[str, str]]:
    langs = profile.languages
    weights = zipf_weights(len(langs), profile.language_zipf_s)
    target = rng.randint(*profile.pairs_per_node)
    pairs: list[tuple[str, str]] = []
    # Bounded retries: a tiny catalogue may not hold `target` distinct pairs.
    for _ in range(50 * max(target, 1)):
        if len(pairs) >= target:
            break
        if "en" in langs and rng.random() < profile.english_pivot_rate:
            other = "en"
            while other == "en":
                other = rng.choices(langs, weights)[0]
            pair = ("en", other) if rng.random() < 0.5 else (other, "en")
        else:
            src, tgt = _weighted_sample(langs, weights, 2, rng)
            pair = (src, tgt) if rng.random() < 0.5 else (tgt, src)
        candidates = [pair]
        if rng.random() < profile.reverse_pair_rate:
            candidates.append((pair[1], pair[0]))
        for candidate in candidates:
            if candidate not in pairs and len(pairs) < target:
                pairs.append(candidate)
    return pairs


def node_capabilities(profile: Profile, index: int, rng: random.Random) -> Capabilities:
    """The capabilities of node number `index` of a fleet, drawn from `rng`.

    ASR languages are the pairs' sources and TTS languages their targets, so
    every advertised pair can run the full asr+nmt+tts pipeline.
    """
    pairs = list(profile.fixed_pairs) if profile.fixed_pairs else _draw_pairs(profile, rng)
    if profile.fixed_features is not None:
        features = list(profile.fixed_features)
    else:
        k = min(rng.randint(*profile.features_per_node), len(profile.features))
        weights = zipf_weights(len(profile.features), profile.feature_zipf_s)
        features = _weighted_sample(profile.features, weights, k, rng)
    return Capabilities(
        max_concurrency=rng.randint(*profile.max_concurrency),
        language_pairs=[LanguagePair(src=s, tgt=t) for s, t in pairs],
        asr_languages=sorted({s for s, _ in pairs}),
        tts_languages=sorted({t for _, t in pairs}),
        features=features,
        pool=rng.randint(*profile.pools),
        labels={
            "region": rng.choice(REGIONS),
            "gpu": rng.choice(GPUS),
            "sim_index": str(index),
            "sim_profile": profile.name,
        },
    )


# --- run-time behaviour ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What a node does with one job_assign; the default is "behave"."""

    reject_reason: str | None = None
    """Reject the job with this reason instead of accepting it."""
    crash_after_s: float | None = None
    """After accepting, drop the connection abruptly this long into the job."""
    accept_delay_s: float = 0.0
    """Wait this long before answering job_accept."""


NO_FAULT: Final = FaultDecision()


class Behaviour:
    """Draws one profile's service times and faults; every method takes the rng."""

    __slots__ = ("profile",)

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def __repr__(self) -> str:
        return f"Behaviour(profile={self.profile.name!r}, time_scale={self.profile.time_scale})"

    def is_slow_node(self, rng: random.Random) -> bool:
        """Whether a new node is one of the slow ones (drawn once per node)."""
        fraction = self.profile.faults.slow_node_fraction
        return fraction > 0 and rng.random() < fraction

    def service_time_s(self, rng: random.Random, *, slow: bool = False) -> float:
        """One job's simulated service time in (scaled) seconds."""
        seconds = self.profile.service_time.sample_s(rng) * self.profile.time_scale
        return seconds * self.profile.faults.slow_factor if slow else seconds

    def emits_progress(self, service_s: float) -> bool:
        """Longer jobs (at or above the scaled median) send one progress message."""
        return service_s >= self.profile.service_time.median_s * self.profile.time_scale

    def on_assign(
        self, rng: random.Random, *, slow: bool = False, service_s: float | None = None
    ) -> FaultDecision:
        """The fault decision for one job_assign (usually `NO_FAULT`). A crash comes
        within the job's service time: `service_s` when the job's is known (a speech
        node's recognition), else one drawn."""
        faults = self.profile.faults
        if faults == NO_FAULTS:
            return NO_FAULT
        if faults.reject_rate and rng.random() < faults.reject_rate:
            return FaultDecision(reject_reason="simulated_reject")
        delay = 0.0
        if faults.accept_delay_rate and rng.random() < faults.accept_delay_rate:
            delay = rng.uniform(0.0, faults.accept_delay_max_s) * self.profile.time_scale
        crash: float | None = None
        if faults.crash_mid_job_rate and rng.random() < faults.crash_mid_job_rate:
            if service_s is None:
                service_s = self.service_time_s(rng, slow=slow)
            crash = service_s * rng.uniform(0.2, 0.8)
        if delay == 0.0 and crash is None:
            return NO_FAULT
        return FaultDecision(crash_after_s=crash, accept_delay_s=delay)

    def fails(self, rng: random.Random) -> bool:
        """Whether an accepted job ends `ok: false` (`Faults.fail_rate`)."""
        rate = self.profile.faults.fail_rate
        return rate > 0 and rng.random() < rate

    # --- speech -----------------------------------------------------------------------

    def real_time_factor(self, rng: random.Random, *, slow: bool = False) -> float:
        """A node's compute time per second of audio (drawn once per node)."""
        speech = self.profile.speech or Speech()
        factor = rng.uniform(*speech.real_time_factor)
        return factor * self.profile.faults.slow_factor if slow else factor

    def recognition_s(self, duration_ms: float, real_time_factor: float) -> float:
        """The (scaled) compute time of `duration_ms` of audio."""
        return duration_ms / 1000 * real_time_factor * self.profile.time_scale

    def recognise(
        self, audio: bytes, duration_ms: float, real_time_factor: float
    ) -> Recognition:
        """The fake recognition of one utterance: its transcript and its steps, one per
        `partial_every_ms` of audio, each taking its share of the compute time."""
        speech = self.profile.speech or Speech()
        words = transcript_words(audio, duration_ms, speech.words_per_s)
        steps: list[Step] = []
        done = 0.0
        while True:
            step_ms = min(float(speech.partial_every_ms), duration_ms - done)
            done += step_ms
            heard = min(1.0, done / duration_ms) if duration_ms else 1.0
            # A word counts once begun (less a rounding error: 3 * (400/1200) is not 1).
            known = math.ceil(len(words) * heard - 1e-9)
            steps.append(Step(self.recognition_s(step_ms, real_time_factor), done, known))
            if done >= duration_ms:
                break
        return Recognition(words=words, audio_ms=duration_ms, steps=tuple(steps))

    def next_disconnect_s(self, rng: random.Random, *, nodes: int = 1) -> float | None:
        """Seconds until the next injected disconnect among `nodes` nodes, or None.

        Each node disconnects as a Poisson process; the fleet-wide process is
        their superposition, so one exponential draw serves the whole fleet.
        """
        rate_per_s = self.profile.faults.disconnect_rate_per_min / 60.0 * nodes
        if rate_per_s <= 0:
            return None
        return rng.expovariate(rate_per_s)
