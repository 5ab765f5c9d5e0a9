"""The unified selector: the one function that picks a node for a job.

Every caller (first dispatch, failover, local or cross-instance mode) calls
`select_node`. The rules, in order:

1. A preferred node is used only if it passes full validation (`node_reason`
   returns None): known, not hard-excluded, serves every stage of the
   pipeline in every direction of the job and every feature, online, not
   draining, a free slot. Otherwise the reason it was passed over is
   recorded and selection falls back.
2. Attempt 1 is narrow (the preferred pool, when one is given); attempt 2 is
   wide (all pools). Without a preferred pool there is one, wide, attempt.
3. Within an attempt the candidates are one index `Ring` of the snapshot (the
   nodes of the scope serving the first enabled stage of the stage table
   for the job's first direction: the pair, or the ASR/TTS language),
   narrowed by the ring's per-chunk condition bitmaps (features; every other
   stage and direction, which the ring does not guarantee) to the capable
   members; exclusion, status and load are checked per candidate.
   - With a routing key the pick is sticky: the key's position on the ring
     (a stable hash) and the first eligible node clockwise from it. A key
     moves only when its node leaves, stops being eligible or fills up.
   - Without one the pick is load-aware: up to `SAMPLES` random candidates
     (a random ring position, moved to the next capable member),
     the one with the most free slots among the first two eligible ones (the
     "power of two choices"); if sampling finds none, an exhaustive scan picks
     the eligible node with the most free slots. A full node is never chosen.
4. No node: a breakdown `{reason: count}` over every node in the snapshot,
   each node counted once under the first rule it breaks (`REASON_ORDER`).

Pure: no I/O, no clock, randomness only from the injected `random.Random`.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from typing import Final, Literal, NamedTuple

import msgspec

from hub.core.capabilities import (
    AT_CAPACITY,
    DRAINING,
    EXCLUDED,
    FEATURE_MISSING,
    OFFLINE,
    POOL_MISMATCH,
    REASON_ORDER,
    UNKNOWN_NODE,
    Requirements,
    capability_mismatch,
)
from hub.core.messages import Pipeline
from hub.core.snapshot import (
    ALL,
    GLOBAL,
    HAS_FEATURE,
    ONLINE,
    Cond,
    NodeState,
    Ring,
    Snapshot,
    stable_hash,
)
from hub.core.stages import enabled

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

    def explain(self) -> str:
        """Why nothing fits, for a `no_node` answer (its reasons, counted)."""
        detail = ", ".join(f"{reason}={count}" for reason, count in self.reasons.items())
        return f"no node can take this job ({detail or 'no nodes'})"


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
    scopes = _WIDE_ONLY if req.preferred_pool is None else (req.preferred_pool, GLOBAL)
    for attempt, pool in enumerate(scopes, start=1):
        node_id = _pick(snapshot, req, pool, rng)
        if node_id is not None:
            via: Via = "load" if req.routing_key is None else "routing_key"
            return Selection(node_id, attempt, via, preferred_reason=preferred_reason)
    reasons = breakdown(snapshot, req)
    return Selection(
        None, reasons=reasons, considered=len(snapshot), preferred_reason=preferred_reason
    )


_WIDE_ONLY: Final = (GLOBAL,)


def _scope(
    snapshot: Snapshot, req: Requirements, pool: int
) -> tuple[Ring, list[Cond], _Plan]:
    """The narrowest index ring every eligible node of `pool` belongs to, the
    conditions its members must also meet (what the ring itself does not guarantee),
    and the plan of the request's pipeline they come from.

    The ring is the lead stage's (the first enabled one of the stage table) for the
    first direction. The conditions come in check order (`breakdown` relies on it):
    the lead stage in the other directions, then each other enabled stage in every
    direction, then the features."""
    plan = _PLANS.get(req.pipeline) or _plan(req.pipeline)
    kind, pick, lead_cond, _, others, _ = plan
    directions = req.directions
    first = directions[0]
    # `Stage.ring_key` and `Stage.need`, inlined (a call each costs more than the rest).
    if pick < 0:
        ring = snapshot.ring(kind, pool, first[0], first[1])
    elif pick != _ALL_NODES:
        ring = snapshot.ring(kind, pool, first[pick])
    else:
        ring = snapshot.ring(kind, pool)
    conds: list[Cond] = []
    if len(directions) == 1 or pick == _ALL_NODES:
        for cond_kind, at in others:
            conds.append((cond_kind, first if at < 0 else first[at]))
    else:
        for direction in directions[1:]:
            conds.append((lead_cond, direction if pick < 0 else direction[pick]))
        for cond_kind, at in others:
            for direction in directions:
                conds.append((cond_kind, direction if at < 0 else direction[at]))
    for name in req.features:
        conds.append((HAS_FEATURE, name))
    return ring, conds, plan


class _Plan(NamedTuple):
    """The stage table as `_scope` and `breakdown` read it for one pipeline."""

    ring: str
    """The lead stage's ring kind (`ALL` when no stage is enabled)."""
    pick: int
    """The lead stage's `Stage.pick` (`_ALL_NODES` when no stage is enabled)."""
    cond: str
    """The lead stage's condition kind (for the directions after the first)."""
    reason: str
    """The lead stage's reason ("" when no stage is enabled)."""
    others: tuple[tuple[str, int], ...]
    """(condition kind, `Stage.pick`) of each other enabled stage, in table order."""
    reasons: tuple[str, ...]
    """Their reasons, in the same order: the reason of each of `_scope`'s conditions
    but the features, for one direction."""

    def reasons_in(self, count: int) -> tuple[str, ...]:
        """The reason of each of `_scope`'s conditions but the features, for `count`
        directions."""
        if self.pick == _ALL_NODES:
            return ()
        return (self.reason,) * (count - 1) + tuple(r for r in self.reasons for _ in range(count))


_PLANS: dict[Pipeline, _Plan] = {}
_ALL_NODES: Final = 2


def _plan(pipeline: Pipeline) -> _Plan:
    """The plan of `pipeline`, made on its first selection (there are at most
    2 ** len(STAGES) pipelines)."""
    stages = enabled(pipeline)
    plan = _Plan(ALL, _ALL_NODES, "", "", (), ())
    if stages:
        lead, rest = stages[0], stages[1:]
        plan = _Plan(
            lead.ring, lead.pick, lead.cond, lead.reason,
            tuple((s.cond, s.pick) for s in rest), tuple(s.reason for s in rest),
        )
    _PLANS[pipeline] = plan
    return plan


def _pick(snapshot: Snapshot, req: Requirements, pool: int, rng: random.Random) -> str | None:
    """One attempt: the chosen node among the members of `pool`, or None.

    The candidates are the members of the narrowest index ring every
    eligible node belongs to that meet the ring's condition bitmaps
    (features; the stages and directions the ring does not guarantee). The
    per-member check below covers the rest: exclusion, status and load.
    """
    ring, conds, _ = _scope(snapshot, req, pool)
    n = len(ring)
    if not n:
        return None

    # The per-member check, inlined for speed (it runs a few times per call).
    state_of = snapshot.lookup
    excluded = req.excluded

    if req.routing_key is not None:
        # Consistent hashing: the first eligible member clockwise from the key.
        start = ring.bisect(stable_hash(req.routing_key)) % n
        k, i = ring.locate(start)
        chunk = ring.chunks[k]
        # Usually the key's own chunk answers: its members from the key on, inline.
        rest = chunk.capable(conds) >> i
        while rest:
            low = rest & -rest
            rest ^= low
            node_id = chunk.ids[i + low.bit_length() - 1]
            if excluded and node_id in excluded:
                continue
            state = state_of(node_id)
            if state.status != ONLINE or state.running >= state.caps.max_concurrency:
                continue
            return node_id
        for node_id in ring.capable_ids(start, conds):
            if excluded and node_id in excluded:
                continue
            state = state_of(node_id)
            if state.status != ONLINE or state.running >= state.caps.max_concurrency:
                continue
            return node_id
        return None

    # Load-aware: the best of the first two eligible random probes. The probe's
    # chunk lookup and its capability mask are inlined (this is the hot loop);
    # `masks` keeps each chunk's mask for the other probes of this call.
    draw = rng.random
    best_id: str | None = None
    best_free = 0
    found = 0
    chunks = ring.chunks
    ends = ring.ends
    masks: dict[int, int] = {}
    for _ in range(SAMPLES if n > SAMPLES else 0):
        pos = int(draw() * n)
        k = bisect_right(ends, pos)
        i = pos - ends[k - 1] if k else pos
        chunk = chunks[k]
        if conds:
            mask = masks.get(k)
            if mask is None:
                mask = chunk.full
                memo = chunk.bits
                for cond in conds:
                    bits = memo.get(cond)
                    mask &= chunk.mask(cond) if bits is None else bits
                masks[k] = mask
            rest = mask >> i
            if rest:
                # The first capable member at or after the probe...
                node_id = chunk.ids[i + (rest & -rest).bit_length() - 1]
            else:
                # ...in a later chunk (wrapping around).
                later = ring.first_capable(pos, conds)
                if later is None:
                    return None  # no member has the capabilities
                node_id = later
        else:
            node_id = chunk.ids[i]
        if excluded and node_id in excluded:
            continue
        state = state_of(node_id)
        if state.status != ONLINE:
            continue
        free = state.caps.max_concurrency - state.running
        if free <= 0:
            continue
        if free > best_free:
            best_id, best_free = node_id, free
        found += 1
        if found == 2:
            return best_id
    if best_id is not None:
        return best_id
    # Few candidates, or sampling found none free: look at every capable one,
    # starting at a random offset so that equal nodes share the load.
    for node_id in ring.capable_ids(int(draw() * n), conds):
        if excluded and node_id in excluded:
            continue
        state = state_of(node_id)
        if state.status != ONLINE:
            continue
        free = state.caps.max_concurrency - state.running
        if free > best_free:
            best_id, best_free = node_id, free
    return best_id


def breakdown(snapshot: Snapshot, req: Requirements, pool: int | None = None) -> dict[str, int]:
    """Count every node of `snapshot` under the first rule it breaks for `req`.

    With `pool`, nodes outside it count as `pool_mismatch` (the narrow
    attempt's view). Works from the index rings and their condition bitmaps
    so that an impossible request costs a few lookups and big-integer ANDs
    per chunk, not a scan of the fleet; only nodes that have every capability
    are visited, for status and load. The counts add up to `len(snapshot)`;
    eligible nodes are counted under `"eligible"` (never present when the
    selector found nothing).
    """
    counts: dict[str, int] = {}
    excluded = [snapshot.get(node_id) for node_id in req.excluded]
    gone = [state for state in excluded if state is not None]
    counts[EXCLUDED] = len(gone)
    remaining = len(snapshot) - len(gone)
    scope = GLOBAL
    if pool is not None:
        scope = pool
        in_scope = len(snapshot.ring(ALL, pool)) - sum(1 for s in gone if s.caps.pool == pool)
        counts[POOL_MISMATCH] = remaining - in_scope
        remaining = in_scope
    # Checks in REASON_ORDER, each narrowing the ring's members by one condition
    # (one AND and one popcount per chunk): the ring holds exactly the nodes that
    # pass the first (the lead stage in the first direction), and `_scope` lists the
    # other conditions in check order, the features last.
    ring, conds, plan = _scope(snapshot, req, scope)
    count = len(req.directions)
    reasons = plan.reasons if count == 1 else plan.reasons_in(count)
    stage_steps = len(reasons)  # the conditions after them are features
    chunks = ring.chunks
    alive = [chunk.full for chunk in chunks]
    for state in gone:
        pos = ring.position(state.ring_hash, state.node_id)
        if pos >= 0:
            k, i = ring.locate(pos)
            alive[k] &= ~(1 << i)
    left = sum(bits.bit_count() for bits in alive)
    if plan.reason:
        counts[plan.reason] = remaining - left
    remaining = left
    for step, cond in enumerate(conds):
        alive = [bits & chunk.mask(cond) for bits, chunk in zip(alive, chunks, strict=True)]
        left = sum(bits.bit_count() for bits in alive)
        reason = reasons[step] if step < stage_steps else FEATURE_MISSING
        counts[reason] = counts.get(reason, 0) + remaining - left
        remaining = left
    for chunk, bits in zip(chunks, alive, strict=True):
        while bits:
            low = bits & -bits
            bits ^= low
            state = _state(snapshot, chunk.ids[low.bit_length() - 1])
            if state.status != ONLINE:
                reason = OFFLINE if state.status == "offline" else DRAINING
            elif state.running >= state.caps.max_concurrency:
                reason = AT_CAPACITY
            else:
                reason = "eligible"
            counts[reason] = counts.get(reason, 0) + 1
    return {reason: counts[reason] for reason in _REPORT_ORDER if counts.get(reason)}


def _state(snapshot: Snapshot, node_id: str) -> NodeState:
    """A node the index names; the index and the node map always agree."""
    state = snapshot.get(node_id)
    assert state is not None, node_id
    return state


_REPORT_ORDER: Final = (*REASON_ORDER, "eligible")
