"""Counters, gauges and histograms, rendered in the Prometheus text format.

Deliberately small: observing is a dict increment or a bisect, cheap enough
for the per-job path. Gauges are callbacks evaluated at scrape time, so they
cost nothing between scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from hub.core.recent_jobs import RecentJobs

LabelValues = tuple[str, ...]


def _labels(names: tuple[str, ...], values: LabelValues) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {value:g}"


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
            yield f"{self.name}{_labels(self.label_names, labels)} {value:g}"


class Histogram:
    """Latencies in seconds; buckets are upper bounds."""

    DEFAULT_BUCKETS = (
        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
        0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    )

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            yield f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {self.total:g}"
        yield f"{self.name}_count {self.count}"


class Metrics:
    """Every metric the hub exports (docs/operations.md lists them)."""

    def __init__(self) -> None:
        self.jobs = Counter("nodehub_jobs_total", "Jobs by terminal outcome.", ("outcome",))
        self.submits = Counter("nodehub_submits_total", "Submits by result.", ("result",))
        self.attempts = Counter(
            "nodehub_attempts_total", "Job attempts by how they ended.", ("outcome",)
        )
        self.no_node = Counter(
            "nodehub_no_node_total", "Nodes passed over in failed selections, by reason.",
            ("reason",),
        )
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
            "nodehub_job_seconds", "Submit received to terminal result sent."
        )
        # --- issue 11: authentication ---
        self.auth_refusals = Counter(
            "nodehub_auth_refusals_total",
            "Requests refused at the door (handshake or HTTP), by HTTP status.", ("status",),
        )
        # --- issue 13: the admission queue ---
        self.queue_wait_seconds = Histogram(
            "nodehub_queue_wait_seconds",
            "Time jobs waited for a free slot (observed when they leave the queue).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0, 300.0),
        )
        # --- issue 10: limits ---
        self.slow_consumers = Counter(
            "nodehub_slow_consumers_total",
            "Sessions closed with 4006 slow_consumer, by endpoint.", ("endpoint",),
        )
        self.refused_connections = Counter(
            "nodehub_refused_connections_total",
            "WebSocket handshakes refused with HTTP 503 (max_connections).",
        )
        # --- issue 16: the console's last minutes (`/v1/stats?include=recent`) ---
        self.recent = RecentJobs()
        self.gauges: list[Gauge] = []

    def gauge(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        sample: Callable[[], dict[LabelValues, float]],
    ) -> None:
        self.gauges.append(Gauge(name, help_text, labels, sample))

    def render(self) -> str:
        metrics: list[Counter | Histogram | Gauge] = [
            self.jobs, self.submits, self.attempts, self.no_node, self.protocol_errors,
            self.selection_seconds, self.dispatch_seconds, self.job_seconds,
            self.auth_refusals, self.queue_wait_seconds, self.slow_consumers,
            self.refused_connections, *self.gauges,
        ]
        lines: list[str] = []
        for metric in metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
