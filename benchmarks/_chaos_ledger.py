"""The chaos benchmark's ledger: every submit and its answers, every execution on a node.

A *submit* is one `HubClient.submit` call (a client resubmitting a request id
makes another). Per submit the ledger reads the client's answer: `accepted`
then a `result` (ok, or failed with a code), or a `rejected` (by code), or
nothing (unanswered: still pending at the end, or the client's connection lost
with no hub to resubmit it to). Results per (client, request id) beyond the
submits that got one are duplicates. From the nodes' execution events (a
start when a run's handler starts, a done when its result left the node) it
counts re-runs of a finished job: a request whose job started again after a
run of it had finished.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent_sim.client import HubClient, JobHandle
from hub.core.messages import Rejected, Result

FIELDS = (
    "name", "submits", "accepted", "rejected", "results_ok", "results_failed", "unanswered",
    "duplicate_results", "reruns", "leaked_slots", "seconds",
)
"""The JSON fields of one scenario, in the order the issue lists them."""


@dataclass
class Record:
    client: HubClient
    handle: JobHandle


@dataclass
class Ledger:
    records: list[Record] = field(default_factory=list)

    async def submit(
        self, client: HubClient, key: str, *, hold: str | None = None, ms: float | None = None,
        src: str = "en", tgt: str = "zh", request_id: str | None = None,
    ) -> JobHandle:
        payload: dict[str, Any] = {"key": key}
        if hold is not None:
            payload["hold"] = hold
        if ms is not None:
            payload["ms"] = ms
        handle = await client.submit(src, tgt, request_id=request_id or key, payload=payload)
        self.records.append(Record(client, handle))
        return handle

    def pending(self) -> list[JobHandle]:
        return [r.handle for r in self.records if not r.handle.result.done()]

    async def settle(self, timeout_s: float) -> None:
        """Wait (bounded) until every submit has its final answer."""
        waiting = [r.handle.result for r in self.records if not r.handle.result.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s)

    def rejected_with(self, code: str) -> list[JobHandle]:
        return [
            r.handle for r in self.records
            if r.handle.result.done() and not r.handle.result.cancelled()
            and r.handle.result.exception() is None
            and isinstance(r.handle.result.result(), Rejected)
            and r.handle.result.result().code == code
        ]

    def summary(
        self, name: str, events: list[dict[str, Any]], leaked_slots: int, seconds: float
    ) -> dict[str, Any]:
        accepted = 0
        rejected: Counter[str] = Counter()
        ok = 0
        failed: Counter[str] = Counter()
        unanswered = 0
        results_per_pair: Counter[tuple[int, str]] = Counter()
        for record in self.records:
            handle = record.handle
            if handle.accepted.done() and not handle.accepted.cancelled() and (
                handle.accepted.exception() is None
                and not isinstance(handle.accepted.result(), Rejected)
            ):
                accepted += 1
            fut = handle.result
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                unanswered += 1
                continue
            outcome = fut.result()
            if isinstance(outcome, Rejected):
                rejected[outcome.code] += 1
            elif isinstance(outcome, Result):
                results_per_pair[(id(record.client), handle.request_id)] += 1
                if outcome.ok:
                    ok += 1
                else:
                    failed[outcome.error.code if outcome.error else "failed"] += 1
        duplicates = 0
        clients = {id(r.client): r.client for r in self.records}
        for (client_id, request_id), expected in results_per_pair.items():
            got = clients[client_id].result_counts[request_id]
            duplicates += max(0, got - expected)
        return {
            "name": name,
            "submits": len(self.records),
            "accepted": accepted,
            "rejected": dict(sorted(rejected.items())),
            "results_ok": ok,
            "results_failed": dict(sorted(failed.items())),
            "unanswered": unanswered,
            "duplicate_results": duplicates,
            "reruns": reruns(events),
            "rerun_keys": rerun_keys(events)[:10],
            "leaked_slots": leaked_slots,
            "seconds": round(seconds, 2),
        }


def reruns(events: list[dict[str, Any]]) -> int:
    """Requests whose job started again after a run of it had finished on a node."""
    return len(rerun_keys(events))


def rerun_keys(events: list[dict[str, Any]]) -> list[str]:
    """The request keys of `reruns`, sorted (to find them in the hubs' logs)."""
    by_key: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for event in events:
        by_key[str(event["key"])].append((float(event["t"]), str(event["ev"])))
    keys = []
    for key, runs in by_key.items():
        first_done = min((t for t, ev in runs if ev == "done"), default=None)
        if first_done is not None and any(ev == "start" and t > first_done for t, ev in runs):
            keys.append(key)
    return sorted(keys)
