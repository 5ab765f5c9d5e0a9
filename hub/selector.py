"""The unified selector: the one function that picks a node for a job.

Every caller (first dispatch, failover, local or cross-instance mode) calls
`select_node`. The rules, in order:

1. A preferred node is used only if it passes full validation (`node_reason`
   returns None): known, not hard-excluded, serves the language pair for the
   pipeline and every feature, online, not draining, a free slot. Otherwise
   the reason it was passed over is recorded and selection falls back.
2. Attempt 1 is narrow (the preferred pool, when one is given); attempt 2 is
   wide (all pools). Without a preferred pool there is one, wide, attempt.
3. Within an attempt the candidates are one index `Ring` of the snapshot (the
   nodes serving the pair, or the ASR/TTS language, in scope); the remaining
   rules are checked per candidate.
   - With a routing key the pick is sticky: the key's position on the ring
     (a stable hash) and the first eligible node clockwise from it. A key
     moves only when its node leaves, stops being eligible or fills up.
   - Without one the pick is load-aware: up to `SAMPLES` random candidates,
     the one with the most free slots among the first two eligible ones (the
     "power of two choices"); if sampling finds none, an exhaustive scan picks
     the eligible node with the most free slots. A full node is never chosen.
4. No node: a breakdown `{reason: count}` over every node in the snapshot,
   each node counted once under the first rule it breaks (`REASON_ORDER`).

Pure: no I/O, no clock, randomness only from the injected `random.Random`.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable
from typing import Final, Literal

import msgspec

from hub.capabilities import (
    ASR_LANG_UNSUPPORTED,
    AT_CAPACITY,
    DRAINING,
    EXCLUDED,
    FEATURE_MISSING,
    LANG_PAIR_UNSUPPORTED,
    OFFLINE,
    POOL_MISMATCH,
    REASON_ORDER,
    TTS_LANG_UNSUPPORTED,
    UNKNOWN_NODE,
    Requirements,
    capability_mismatch,
)
from hub.snapshot import ALL, ASR, GLOBAL, ONLINE, PAIR, TTS, NodeState, Ring, Snapshot, stable_hash

SAMPLES: Final = 8
"""Random probes before falling back to an exhaustive scan of the candidates."""

Via = Literal["preferred", "routing_key", "load", "none"]


class Selection(msgspec.Struct, frozen=True):
    """The selector's answer.

    `node_id` is None when nothing fits; then `reasons` counts every node of
    the snapshot under the first rule it breaks, and the counts add up to
    `considered`. `attempt` is 1 (narrow, or the only attempt) or 2 (wide),
    0 when nothing was chosen. `preferred_reason` says why a preferred node
    was passed over.
    """

    node_id: str | None
    attempt: int = 0
    via: Via = "none"
    reasons: dict[str, int] = msgspec.field(default_factory=dict)
    considered: int = 0
    preferred_reason: str | None = None


def node_reason(state: NodeState | None, req: Requirements, pool: int | None = None) -> str | None:
    """The first rule `state` breaks for `req` (within `pool`, when given), or None."""
    if state is None:
        return UNKNOWN_NODE
    if state.node_id in req.excluded:
        return EXCLUDED
    if pool is not None and state.caps.pool != pool:
        return POOL_MISMATCH
    mismatch = capability_mismatch(state.caps, req)
    if mismatch is not None:
        return mismatch
    if state.status != ONLINE:
        return OFFLINE if state.status == "offline" else DRAINING
    if state.running >= state.caps.max_concurrency:
        return AT_CAPACITY
    return None


def select_node(snapshot: Snapshot, req: Requirements, rng: random.Random) -> Selection:
    """Pick the node for `req` from `snapshot`; see the module docstring for the rules."""
    preferred_reason = None
    if req.preferred_node_id is not None:
        preferred_reason = node_reason(snapshot.get(req.preferred_node_id), req)
        if preferred_reason is None:
            return Selection(req.preferred_node_id, 1, "preferred")
    scopes = (GLOBAL,) if req.preferred_pool is None else (req.preferred_pool, GLOBAL)
    for attempt, pool in enumerate(scopes, start=1):
        ring, base = _candidates(snapshot, req, pool)
        if not ring.ids:
            continue
        if req.routing_key is not None:
            node_id = _walk(snapshot, req, ring, base)
            via: Via = "routing_key"
        else:
            node_id = _sample(snapshot, req, ring, base, rng)
            via = "load"
        if node_id is not None:
            return Selection(node_id, attempt, via, preferred_reason=preferred_reason)
    reasons = breakdown(snapshot, req)
    return Selection(
        None, reasons=reasons, considered=len(snapshot), preferred_reason=preferred_reason
    )


def _candidates(snapshot: Snapshot, req: Requirements, pool: int) -> tuple[Ring, str]:
    """The narrowest index ring that every eligible node of `pool` belongs to."""
    pipeline = req.pipeline
    if pipeline.nmt:
        return snapshot.ring(PAIR, pool, req.src_lang, req.tgt_lang), PAIR
    if pipeline.asr:
        return snapshot.ring(ASR, pool, req.src_lang), ASR
    if pipeline.tts:
        return snapshot.ring(TTS, pool, req.tgt_lang), TTS
    return snapshot.ring(ALL, pool), ALL


def _walk(snapshot: Snapshot, req: Requirements, ring: Ring, base: str) -> str | None:
    """Consistent hashing: the first eligible node clockwise from the key's position."""
    assert req.routing_key is not None
    eligible = _free_slots(snapshot, req, base)
    ids = ring.ids
    n = len(ids)
    start = bisect_left(ring.hashes, stable_hash(req.routing_key))
    for offset in range(n):
        node_id = ids[(start + offset) % n]
        if eligible(node_id) > 0:
            return node_id
    return None


def _sample(
    snapshot: Snapshot, req: Requirements, ring: Ring, base: str, rng: random.Random
) -> str | None:
    """Power of two choices over random probes, then an exhaustive scan."""
    eligible = _free_slots(snapshot, req, base)
    ids = ring.ids
    n = len(ids)
    draw = rng.random
    best_id: str | None = None
    best_free = 0
    if n > SAMPLES:
        found = 0
        for _ in range(SAMPLES):
            node_id = ids[int(draw() * n)]
            free = eligible(node_id)
            if free > 0:
                if free > best_free:
                    best_id, best_free = node_id, free
                found += 1
                if found == 2:
                    return best_id
        if best_id is not None:
            return best_id
    # Few candidates, or sampling found none free: look at every one, starting
    # at a random offset so that equal nodes share the load.
    start = int(draw() * n)
    for offset in range(n):
        node_id = ids[(start + offset) % n]
        free = eligible(node_id)
        if free > best_free:
            best_id, best_free = node_id, free
    return best_id


def _free_slots(snapshot: Snapshot, req: Requirements, base: str) -> Callable[[str], int]:
    """A check of the rules the candidate ring does not already guarantee.

    The returned function gives a node's free slots when it is eligible and
    0 otherwise. It is specialised by what the request needs (a closure per
    case) because it runs a few times per selection and every branch counts.
    """
    get = snapshot.node_map.get
    excluded = req.excluded
    features = req.features
    src, tgt = req.src_lang, req.tgt_lang
    # A PAIR ring already guarantees the pair; an ASR/TTS ring its language.
    need_asr = req.pipeline.asr and base != ASR
    need_tts = req.pipeline.tts and base != TTS

    def free_slots(node_id: str) -> int:
        if node_id in excluded:
            return 0
        state = get(node_id)
        if state is None or state.status != ONLINE:
            return 0
        caps = state.caps
        free = caps.max_concurrency - state.running
        if free <= 0:
            return 0
        if need_asr and src not in caps.asr_languages:
            return 0
        if need_tts and tgt not in caps.tts_languages:
            return 0
        if features and not features <= caps.features:
            return 0
        return free

    return free_slots


def breakdown(snapshot: Snapshot, req: Requirements, pool: int | None = None) -> dict[str, int]:
    """Count every node of `snapshot` under the first rule it breaks for `req`.

    With `pool`, nodes outside it count as `pool_mismatch` (the narrow
    attempt's view). Uses set operations on the index rings so that an
    impossible language pair costs a few lookups, not a scan of the fleet.
    The counts add up to `len(snapshot)`; eligible nodes are counted under
    `"eligible"` (never present when the selector found nothing).
    """
    counts: dict[str, int] = {}
    excluded = {node_id for node_id in req.excluded if node_id in snapshot}
    counts[EXCLUDED] = len(excluded)
    remaining = len(snapshot) - len(excluded)
    # `alive` is the set of nodes still in the running, or None for "all but excluded".
    alive: set[str] | None = None
    if pool is not None:
        alive = set(snapshot.ring(ALL, pool).ids) - excluded
        counts[POOL_MISMATCH] = remaining - len(alive)
        remaining = len(alive)
    pipeline = req.pipeline
    stages: list[tuple[str, Ring]] = []
    if pipeline.nmt:
        stages.append((LANG_PAIR_UNSUPPORTED, snapshot.ring(PAIR, GLOBAL, req.src_lang, req.tgt_lang)))
    if pipeline.asr:
        stages.append((ASR_LANG_UNSUPPORTED, snapshot.ring(ASR, GLOBAL, req.src_lang)))
    if pipeline.tts:
        stages.append((TTS_LANG_UNSUPPORTED, snapshot.ring(TTS, GLOBAL, req.tgt_lang)))
    for reason, ring in stages:
        alive = set(ring.ids) - excluded if alive is None else alive.intersection(ring.ids)
        counts[reason] = remaining - len(alive)
        remaining = len(alive)
    states = (
        [s for s in snapshot if s.node_id not in excluded]
        if alive is None
        else [s for node_id in alive if (s := snapshot.get(node_id)) is not None]
    )
    if req.features:
        kept = [s for s in states if req.features <= s.caps.features]
        counts[FEATURE_MISSING] = len(states) - len(kept)
        states = kept
    for state in states:
        if state.status != ONLINE:
            reason = OFFLINE if state.status == "offline" else DRAINING
        elif state.running >= state.caps.max_concurrency:
            reason = AT_CAPACITY
        else:
            reason = "eligible"
        counts[reason] = counts.get(reason, 0) + 1
    return {reason: counts[reason] for reason in _REPORT_ORDER if counts.get(reason)}


_REPORT_ORDER: Final = (*REASON_ORDER, "eligible")
