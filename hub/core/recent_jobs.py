"""`RecentJobs`: what this hub's jobs did over the last minutes (the console).

The hub's histograms (`nodehub_job_seconds`) are cumulative since start; an
operator's console wants the last minutes: jobs finished per interval, their
round trip p50/p99, and the failures by reason. `RecentJobs` keeps that in
fixed time buckets (`BUCKET_S` seconds, the last `WINDOW_BUCKETS` of them),
each with counts and a sparse log-scale latency histogram (`STEPS_PER_OCTAVE`
bins per doubling: a quantile is reported as the geometric middle of its bin,
within 4.5% of the true value). Memory is bounded: at most `WINDOW_BUCKETS`
buckets, each with at most ~200 latency bins and `MAX_REASONS` reasons per
kind (node error codes are free text: longer ones are cut, more distinct ones
are counted as `other`).

- The round trip is the hub's own: submit received to the terminal `result`
  sent (`nodehub_job_seconds`), of jobs that ended `ok` (a failed job's time
  says how long it took to fail, not how fast the fleet serves).
- Failures: `result`s with `ok: false` by `error.code`, and `rejected` by
  `code`, kept apart.

Pure: the caller passes the time (monotonic seconds) with every call.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

BUCKET_S: Final = 2.0
WINDOW_BUCKETS: Final = 150
"""150 buckets of 2 s: the last 5 minutes."""
STEPS_PER_OCTAVE: Final = 8
MIN_SECONDS: Final = 1e-5
"""The first latency bin's lower bound (10 us); faster is counted in the first bin."""
MAX_BIN: Final = 240
"""The last latency bin (10 us x 2^30: about 3 hours); slower is counted in it."""
MAX_REASONS: Final = 32
MAX_REASON_CHARS: Final = 64
OTHER: Final = "other"


def _bin(seconds: float) -> int:
    if seconds <= MIN_SECONDS:
        return 0
    return min(MAX_BIN, int(math.log2(seconds / MIN_SECONDS) * STEPS_PER_OCTAVE))


def _bin_ms(index: int) -> float:
    """The geometric middle of a latency bin, in milliseconds."""
    return MIN_SECONDS * 2 ** ((index + 0.5) / STEPS_PER_OCTAVE) * 1000


def _count(reasons: dict[str, int], reason: str) -> None:
    reason = reason[:MAX_REASON_CHARS]
    if reason not in reasons and len(reasons) >= MAX_REASONS:
        reason = OTHER
    reasons[reason] = reasons.get(reason, 0) + 1


def quantiles_ms(bins: dict[int, int], qs: tuple[float, ...]) -> list[float | None]:
    """The quantiles `qs` (0..1) of a latency histogram, in ms (None when it is empty)."""
    total = sum(bins.values())
    if not total:
        return [None for _ in qs]
    out: list[float | None] = []
    ordered = sorted(bins.items())
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index, count in ordered:
            seen += count
            if seen >= rank:
                out.append(round(_bin_ms(index), 3))
                break
    return out


class _Bucket:
    __slots__ = ("failed", "latency", "number", "ok", "rejected")

    def __init__(self, number: int) -> None:
        self.number = number
        self.ok = 0
        self.latency: dict[int, int] = {}
        self.failed: dict[str, int] = {}
        self.rejected: dict[str, int] = {}


class RecentJobs:
    """Jobs finished and submits rejected over the last `bucket_s x buckets` seconds."""

    __slots__ = ("_buckets", "bucket_s", "buckets", "finished_total")

    def __init__(self, bucket_s: float = BUCKET_S, buckets: int = WINDOW_BUCKETS) -> None:
        self.bucket_s = bucket_s
        self.buckets = buckets
        self._buckets: deque[_Bucket] = deque()
        self.finished_total = 0
        """Jobs finished since the hub started (every outcome)."""

    def __repr__(self) -> str:
        return f"RecentJobs({len(self._buckets)} buckets, {self.finished_total} finished)"

    def _current(self, now_s: float) -> _Bucket:
        number = int(now_s // self.bucket_s)
        buckets = self._buckets
        if buckets and buckets[-1].number == number:
            return buckets[-1]
        bucket = _Bucket(number)
        buckets.append(bucket)
        while buckets[0].number <= number - self.buckets:
            buckets.popleft()
        return bucket

    def finished(self, now_s: float, *, code: str | None, seconds: float | None) -> None:
        """A job ended: `code` None when it ended ok (then `seconds` is its round trip,
        when known), else its `result.error.code`."""
        self.finished_total += 1
        bucket = self._current(now_s)
        if code is None:
            bucket.ok += 1
            if seconds is not None:
                index = _bin(seconds)
                bucket.latency[index] = bucket.latency.get(index, 0) + 1
        else:
            _count(bucket.failed, code)

    def rejected(self, now_s: float, code: str) -> None:
        """A submit got `rejected` with `code`."""
        _count(self._current(now_s).rejected, code)

    def view(self, now_s: float) -> dict[str, Any]:
        """The window as of `now_s`: one point per complete bucket, oldest first
        (columns `ago_s`, the seconds from the bucket's end to now, `finished`, `ok`,
        `rejected`, `p50_ms`, `p99_ms`: null without ok jobs), and the whole window's
        `finished`, `ok`, `p50_ms`, `p99_ms`, `failed` and `rejected` by reason."""
        current = int(now_s // self.bucket_s)
        by_number = {b.number: b for b in self._buckets}
        columns: dict[str, list[Any]] = {
            "ago_s": [], "finished": [], "ok": [], "rejected": [], "p50_ms": [], "p99_ms": [],
        }
        merged: dict[int, int] = {}
        failed: dict[str, int] = {}
        rejected: dict[str, int] = {}
        finished = ok = 0
        for number in range(current - self.buckets + 1, current + 1):
            bucket = by_number.get(number)
            if bucket is not None:
                for index, count in bucket.latency.items():
                    merged[index] = merged.get(index, 0) + count
                for reason, count in bucket.failed.items():
                    failed[reason] = failed.get(reason, 0) + count
                for reason, count in bucket.rejected.items():
                    rejected[reason] = rejected.get(reason, 0) + count
                ok += bucket.ok
                finished += bucket.ok + sum(bucket.failed.values())
            if number == current:
                continue  # still filling: in the totals, not a point
            if bucket is None:
                p50 = p99 = None
                point = (0, 0, 0)
            else:
                p50, p99 = quantiles_ms(bucket.latency, (0.5, 0.99))
                point = (
                    bucket.ok + sum(bucket.failed.values()), bucket.ok,
                    sum(bucket.rejected.values()),
                )
            columns["ago_s"].append(round(now_s - (number + 1) * self.bucket_s, 3))
            columns["finished"].append(point[0])
            columns["ok"].append(point[1])
            columns["rejected"].append(point[2])
            columns["p50_ms"].append(p50)
            columns["p99_ms"].append(p99)
        p50, p99 = quantiles_ms(merged, (0.5, 0.99))
        return {
            "bucket_s": self.bucket_s,
            "window_s": self.bucket_s * self.buckets,
            "finished_total": self.finished_total,
            "finished": finished,
            "ok": ok,
            "p50_ms": p50,
            "p99_ms": p99,
            "failed": dict(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))),
            "rejected": dict(sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
            "series": columns,
        }
