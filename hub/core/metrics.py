"""Counters, gauges and histograms, rendered in the Prometheus text format (0.0.4).

Deliberately small: observing is a dict increment or a bisect, cheap enough
for the per-job path. Gauges are callbacks evaluated at scrape time, so they
cost nothing between scrapes. `benchmarks/metrics_cost.py` measures this
against `prometheus_client` (the ecosystem's library): per job, the hand-written
one costs a fraction of it, which is why the hot path keeps it; the library
still renders what needs I/O (`process_*`, see hub/app/process_metrics.py) and
parses `/metrics` in the tests, so the exposition is checked by the ecosystem's
own parser.

Numbers are exact: integers print as integers at any size (never `1.23457e+06`),
other floats with `repr` (the shortest text that reads back as the same float).
Histogram buckets can reach past the configured timeouts (`buckets_up_to`).
Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from hub.core.config import HubConfig

from hub.core.recent_jobs import RecentJobs

LabelValues = tuple[str, ...]
TextSource = Callable[[], str]
"""A callable that renders more exposition text at scrape time (process metrics)."""


def number(value: float) -> str:
    """A sample value as Prometheus text, exactly: `1234568`, not `1.23457e+06`."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


def escape(value: str) -> str:
    """A label value escaped as the text format requires: backslash, quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    inner = ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))
    if extra:
        inner = f"{inner},{extra}" if inner else extra
    return "{" + inner + "}" if inner else ""


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {number(value)}"


class Gauge:
    """A gauge whose samples come from a callback at scrape time."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        sample: Callable[[], dict[LabelValues, float]],
    ) -> None:
        self.name, self.help, self.label_names, self.sample = name, help_text, labels, sample

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in sorted(self.sample().items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {number(value)}"


DEFAULT_BUCKETS: Final = (
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def buckets_up_to(
    longest_s: float, start: tuple[float, ...] = DEFAULT_BUCKETS
) -> tuple[float, ...]:
    """`start`, continued in 1-2.5-5 steps until a bound reaches `longest_s` (so that the
    longest a thing may take, a configured timeout, falls in a finite bucket)."""
    bounds = list(start)
    exponent = math.floor(math.log10(bounds[-1]))
    while bounds[-1] < longest_s:
        for step in (1.0, 2.5, 5.0):
            bound = step * 10.0**exponent
            if bound > bounds[-1]:
                bounds.append(bound)
                if bound >= longest_s:
                    break
        exponent += 1
    return tuple(bounds)


class Series:
    """One histogram's counts (a labelled histogram has one per label set)."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1


INF: Final = 'le="+Inf"'


class Histogram:
    """Latencies in seconds; buckets are upper bounds. With `labels`, one `Series` per
    label set (`labels(...)`); without, `observe` goes to the one series."""

    DEFAULT_BUCKETS = DEFAULT_BUCKETS

    def __init__(
        self, name: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.name, self.help, self.buckets, self.label_names = name, help_text, buckets, labels
        self._series: dict[LabelValues, Series] = {}
        self._one = Series(buckets)
        if not labels:
            self._series[()] = self._one
            self.observe = self._one.observe  # type: ignore[method-assign]  # one lookup less

    def observe(self, seconds: float) -> None:
        self._one.observe(seconds)

    def labels(self, *values: str) -> Series:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = Series(self.buckets)
        return series

    @property
    def total(self) -> float:
        return self._one.total

    @property
    def count(self) -> int:
        return self._one.count

    @property
    def counts(self) -> list[int]:
        return self._one.counts

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        names = self.label_names
        for labels, series in sorted(self._series.items()):
            cumulative = 0
            for bound, count in zip(series.buckets, series.counts, strict=False):
                cumulative += count
                le = f'le="{number(float(bound))}"'
                yield f"{self.name}_bucket{_labels(names, labels, le)} {cumulative}"
            yield f"{self.name}_bucket{_labels(names, labels, INF)} {series.count}"
            yield f"{self.name}_sum{_labels(names, labels)} {number(series.total)}"
            yield f"{self.name}_count{_labels(names, labels)} {series.count}"


OTHER: Final = "other"
MAX_PAIR_LABELS: Final = 256
"""Language pairs with their own label in `nodehub_pair_submits_total`; later ones are
`other`."""
MAX_UNSERVED_PAIR_LABELS: Final = 64
"""Of those, pairs whose first submit found no node: junk pairs cannot crowd out the
pairs the fleet serves."""


class PairCounter(Counter):
    """Submits by language pair and result, with bounded cardinality: the first
    `MAX_PAIR_LABELS` pairs seen have labels of their own (at most
    `MAX_UNSERVED_PAIR_LABELS` of them pairs nobody served when first seen), the rest
    count as `other`/`other`."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, ("src", "tgt", "result"))
        self._pairs: set[tuple[str, str]] = set()
        self._unserved = 0

    def count(self, src: str, tgt: str, result: str, *, served: bool = True) -> None:
        pair = (src, tgt)
        if pair not in self._pairs:
            if len(self._pairs) >= MAX_PAIR_LABELS or (
                not served and self._unserved >= MAX_UNSERVED_PAIR_LABELS
            ):
                pair = (OTHER, OTHER)
            else:
                self._pairs.add(pair)
                self._unserved += not served
        key = (*pair, result)
        self.values[key] = self.values.get(key, 0) + 1


NO_NODES: Final = "no_nodes"
"""The `reason` of a `nodehub_no_node_total` sample when the fleet was empty."""


class Metrics:
    """Every metric the hub exports (docs/operations.md lists them)."""

    def __init__(self, config: HubConfig | None = None) -> None:
        # Buckets reach the longest a job may take (every attempt at its deadlines) and
        # the longest it may wait for a slot.
        job_budget_s = (config.job_budget_ms(None) if config else 906_000) / 1000
        queue_s = (config.queue_timeout_ms if config else 30_000) / 1000
        self.jobs = Counter("nodehub_jobs_total", "Jobs by terminal outcome.", ("outcome",))
        self.submits = Counter("nodehub_submits_total", "Submits by result.", ("result",))
        self.attempts = Counter(
            "nodehub_attempts_total", "Job attempts by how they ended.", ("outcome",)
        )
        self.no_node = Counter(
            "nodehub_nodes_passed_over_total",
            "Nodes passed over in selections that found no node, by the rule they broke.",
            ("reason",),
        )
        """Per node and failed selection (a waiting job's too); `no_node_answers` counts
        per submit."""
        self.protocol_errors = Counter(
            "nodehub_protocol_errors_total", "Refused peer messages by endpoint and code.",
            ("endpoint", "code"),
        )
        self.selection_seconds = Histogram(
            "nodehub_selection_seconds", "Time to select a node (the pure selector call)."
        )
        self.dispatch_seconds = Histogram(
            "nodehub_dispatch_seconds", "Submit received to job_assign written to the node."
        )
        self.job_seconds = Histogram(
            "nodehub_job_seconds", "Submit received to terminal result sent.",
            buckets=buckets_up_to(job_budget_s),
        )
        # --- authentication ---
        self.auth_refusals = Counter(
            "nodehub_auth_refusals_total",
            "Requests refused at the door (handshake or HTTP), by HTTP status.", ("status",),
        )
        # --- the admission queue ---
        self.queue_wait_seconds = Histogram(
            "nodehub_queue_wait_seconds",
            "Time jobs waited for a free slot (observed when they leave the queue).",
            buckets=buckets_up_to(
                queue_s,
                (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0, 60.0, 300.0),
            ),
        )
        # --- limits ---
        self.slow_consumers = Counter(
            "nodehub_slow_consumers_total",
            "Sessions closed with 4006 slow_consumer, by endpoint.", ("endpoint",),
        )
        self.peer_pauses = Counter(
            "nodehub_peer_pause_seconds_total",
            "Seconds peers waited for their next frame to be read after frames that took "
            "more than a turn of hub time while other peers were active, by endpoint.",
            ("endpoint",),
        )
        self.refused_connections = Counter(
            "nodehub_refused_connections_total",
            "WebSocket handshakes refused with HTTP 503 (max_connections).",
        )
        # --- operating it ---
        self.no_node_answers = Counter(
            "nodehub_no_node_total",
            "Submits (and failovers) answered no_node, by the rule most nodes broke.",
            ("reason",),
        )
        self.pair_submits = PairCounter(
            "nodehub_pair_submits_total",
            f"Submits by language pair and result (past {MAX_PAIR_LABELS} pairs: other).",
        )
        self.store_seconds = Histogram(
            "nodehub_store_command_seconds",
            "Store (Redis) calls by operation, from call to reply.", labels=("op",),
            buckets=(0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                     0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.store_errors = Counter(
            "nodehub_store_errors_total",
            "Store (Redis) calls that failed, by operation and kind (unavailable, error).",
            ("op", "kind"),
        )
        # --- live sessions ---
        self.utterances = Counter(
            "nodehub_utterances_total", "Utterances cut from live sessions, by cut.", ("cut",)
        )
        self.utterance_seconds = Histogram(
            "nodehub_utterance_seconds",
            "A live session's utterance: cut to its utterance_result sent.",
            buckets=buckets_up_to(job_budget_s),
        )
        self.audio_bytes = Counter(
            "nodehub_audio_bytes_total", "Audio bytes received on live sessions."
        )
        self.room_jobs = Counter(
            "nodehub_room_jobs_total",
            "Jobs run for rooms' listeners (one per utterance per listen language).",
        )
        # --- the console's last minutes (`/v1/stats?include=recent`) ---
        self.recent = RecentJobs()
        self.recent_utterances = RecentJobs()
        """Live sessions' utterances: cut to `utterance_result`."""
        self.gauges: list[Gauge] = []
        self.sources: list[TextSource] = []

    def gauge(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        sample: Callable[[], dict[LabelValues, float]],
    ) -> None:
        self.gauges.append(Gauge(name, help_text, labels, sample))

    def add_source(self, source: TextSource) -> None:
        """More exposition text at every scrape (process metrics: they read /proc, which
        the core does not; the app adds them)."""
        self.sources.append(source)

    def submit(self, result: str, src: str, tgt: str) -> None:
        """A submit answered with `result`, counted in total and by language pair."""
        self.submits.inc(result)
        self.pair_submits.count(src, tgt, result, served=result != "no_node")

    def no_node_answer(self, reasons: dict[str, int]) -> None:
        """A submit (or failover) found no node: counted once, under the rule most nodes
        broke (`no_nodes` when there were none)."""
        reason = min(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[0] if reasons else NO_NODES
        self.no_node_answers.inc(reason)

    def render(self) -> str:
        metrics: list[Counter | Histogram | Gauge] = [
            self.jobs, self.submits, self.attempts, self.no_node, self.protocol_errors,
            self.selection_seconds, self.dispatch_seconds, self.job_seconds,
            self.auth_refusals, self.queue_wait_seconds, self.slow_consumers,
            self.refused_connections, self.no_node_answers, self.pair_submits,
            self.store_seconds, self.store_errors, self.utterances, self.utterance_seconds,
            self.audio_bytes, self.room_jobs, *self.gauges,
        ]
        lines: list[str] = []
        for metric in metrics:
            lines.extend(metric.render())
        text = "\n".join(lines) + "\n"
        for source in self.sources:
            text += source()
        return text
