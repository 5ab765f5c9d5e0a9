"""`StoreMeter`: the store's calls timed and their failures counted.

`RedisStore` hands every call that `translated` (replies.py) wraps to its meter:
the time from the call to its reply into `nodehub_store_command_seconds{op}` (the
inbox's blocking read is not timed: it waits for envelopes on purpose), a failure
into `nodehub_store_errors_total{op,kind}` (`unavailable`: Redis could not be
reached or is not serving; `error`: an error reply). About 0.3 us a call.
"""

from __future__ import annotations

from typing import Final

from hub.core.metrics import Metrics, Series

UNTIMED: Final = frozenset({"read_inbox"})
"""Calls that block on purpose (a blocking read): their errors count, their time not."""
UNAVAILABLE: Final = "unavailable"
ERROR: Final = "error"


class StoreMeter:
    __slots__ = ("_metrics", "_series")

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._series: dict[str, Series | None] = {}

    def observe(self, op: str, seconds: float) -> None:
        if op in self._series:
            series = self._series[op]
        else:
            series = self._series[op] = (
                None if self._metrics is None or op in UNTIMED
                else self._metrics.store_seconds.labels(op)
            )
        if series is not None:
            series.observe(seconds)

    def failed(self, op: str, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.store_errors.inc(op, kind)
