"""`process_*` metrics (CPU seconds, resident and virtual memory, open and maximum file
descriptors, start time) from `prometheus_client`'s `ProcessCollector`, which reads
`/proc`: I/O, so here in the application, never in `hub/core`.

`Metrics.add_source(process_text)` appends them to every `/metrics` answer. Where
`/proc` is missing (not Linux) the collector yields nothing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

_registry = CollectorRegistry(auto_describe=False)
ProcessCollector(registry=_registry)


def process_text() -> str:
    """The `process_*` metrics of this process, in the Prometheus text format."""
    return generate_latest(_registry).decode()
