"""What a node offers, what a job needs, and the rules that match them.

`NodeCapabilities` is the normalised, hashable form of the wire
`Capabilities` object (sets instead of lists). `Requirements` is what the
selector is asked for. `capability_mismatch` is the single statement of the
match rules of docs/protocol.md ("pipeline object"), read from the stage
table (`hub.core.stages`): every other module that needs to know whether a
node can serve a job calls it or mirrors it through the snapshot's indexes,
which are built from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from hub.core.messages import AUTO, DEFAULT_PIPELINE, Capabilities, Pipeline, Submit
from hub.core.stages import STAGE_INDEX, STAGES, Direction, Need, both_ways, enabled

# Reason names of docs/protocol.md ("Reason names"), in the order the selector
# checks them: the first failing check is the reason a node is passed over. The
# stages' own (a missing language or pair) are in the stage table, in its order.
EXCLUDED: Final = "excluded"
POOL_MISMATCH: Final = "pool_mismatch"
FEATURE_MISSING: Final = "feature_missing"
OFFLINE: Final = "offline"
DRAINING: Final = "draining"
AT_CAPACITY: Final = "at_capacity"
UNKNOWN_NODE: Final = "unknown_node"
"""Only for a preferred node that is not in the snapshot at all."""

REASON_ORDER: Final = (
    EXCLUDED,
    POOL_MISMATCH,
    *(stage.reason for stage in STAGES),
    FEATURE_MISSING,
    OFFLINE,
    DRAINING,
    AT_CAPACITY,
)


@dataclass(frozen=True, slots=True)
class NodeCapabilities:
    """A node's advertised capabilities, as sets; `pool` is always resolved."""

    language_pairs: frozenset[tuple[str, str]] = frozenset()
    asr_languages: frozenset[str] = frozenset()
    tts_languages: frozenset[str] = frozenset()
    features: frozenset[str] = frozenset()
    max_concurrency: int = 1
    pool: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    stage_entries: tuple[frozenset[Any], ...] = field(init=False, repr=False, compare=False)
    """Each stage's entries (its `capability` field), in table order (`STAGE_INDEX`):
    what the hot checks read, one tuple index instead of a getter call per stage."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "stage_entries", tuple(getattr(self, s.capability) for s in STAGES)
        )

    @classmethod
    def from_wire(cls, caps: Capabilities, *, default_pool: int = 0) -> NodeCapabilities:
        """Normalise the wire object; `default_pool` applies when the node names none."""
        entries: dict[str, Any] = {
            stage.capability: stage.from_wire(getattr(caps, stage.capability))
            for stage in STAGES
        }
        return cls(
            **entries,
            features=frozenset(caps.features),
            max_concurrency=caps.max_concurrency,
            pool=default_pool if caps.pool is None else caps.pool,
            labels=tuple(sorted(caps.labels.items())),
        )

    def to_wire(self) -> Capabilities:
        entries: dict[str, Any] = {
            stage.capability: stage.to_wire(stage.entries(self)) for stage in STAGES
        }
        return Capabilities(
            max_concurrency=self.max_concurrency,
            **entries,
            features=sorted(self.features),
            pool=self.pool,
            labels=dict(self.labels),
        )


class Requirements(msgspec.Struct, frozen=True):
    """What one selection is asked for.

    `excluded` holds hard exclusions: nodes that already failed this job.
    They are skipped in every attempt, the preferred node included.

    `directions` are the (source, target) directions in which every enabled
    stage must be served; empty when constructed means the one direction
    (`src_lang`, `tgt_lang`), which is what it then holds. A two-way job
    holds both (`stages.both_ways`). The first direction's ring is the one a
    selection searches. No wire message sets it yet: a submit is one
    direction.
    """

    src_lang: str
    tgt_lang: str
    pipeline: Pipeline = DEFAULT_PIPELINE
    features: frozenset[str] = frozenset()
    preferred_node_id: str | None = None
    preferred_pool: int | None = None
    routing_key: str | None = None
    excluded: frozenset[str] = frozenset()
    directions: tuple[Direction, ...] = ()

    def __post_init__(self) -> None:
        # Resolved once here so that every selection reads one tuple, never a default.
        if not self.directions:
            msgspec.structs.force_setattr(
                self, "directions", ((self.src_lang, self.tgt_lang),)
            )

    @classmethod
    def from_submit(cls, submit: Submit, *, routing_key: str | None = None) -> Requirements:
        """The requirements of a `submit`; `routing_key` overrides the submit's own. A
        two-way submit (`src_lang: auto`, valid `langs`) needs every stage both ways."""
        directions: tuple[Direction, ...] = ()
        langs = submit.langs
        if submit.src_lang == AUTO and langs is not None and len(langs) == 2:
            directions = both_ways(langs[0], langs[1])
        return cls(
            src_lang=submit.src_lang,
            tgt_lang=submit.tgt_lang,
            pipeline=submit.pipeline,
            features=frozenset(submit.features),
            preferred_node_id=submit.preferred_node_id,
            preferred_pool=submit.preferred_pool,
            routing_key=routing_key if routing_key is not None else submit.routing_key,
            directions=directions,
        )

    @property
    def two_way(self) -> tuple[str, str] | None:
        """The two languages of a two-way job (None for one direction)."""
        if self.src_lang == AUTO and len(self.directions) == 2:
            return self.directions[0]
        return None

    def excluding(self, node_id: str) -> Requirements:
        """The same requirements with one more hard-excluded node (for failover)."""
        return Requirements(
            src_lang=self.src_lang,
            tgt_lang=self.tgt_lang,
            pipeline=self.pipeline,
            features=self.features,
            preferred_node_id=self.preferred_node_id,
            preferred_pool=self.preferred_pool,
            routing_key=self.routing_key,
            excluded=self.excluded | {node_id},
            directions=self.directions,
        )


class Needs(Protocol):
    """What `capability_mismatch` reads of a job: `Requirements`, or a waiting job's class."""

    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def directions(self) -> tuple[Direction, ...]: ...
    @property
    def features(self) -> frozenset[str]: ...


def capability_mismatch(caps: NodeCapabilities, req: Needs) -> str | None:
    """The first capability rule `caps` breaks for `req`, or None if it serves the job.

    The rules (docs/protocol.md, "pipeline object"): each enabled stage's, as
    its row of the stage table states it, in every direction of `req`, in table
    order; then every requested feature must be present. A stage is checked in
    every direction before the next stage, so the reason is the first rule of
    `REASON_ORDER` broken in any direction. Status and load are not
    capabilities; the selector checks them separately.
    """
    plan = _PLANS.get(req.pipeline)
    if plan is None:
        plan = _plan(req.pipeline)
    directions = req.directions
    held = caps.stage_entries
    # `Stage.need` inlined: this runs for every preferred node it validates.
    if len(directions) == 1:
        first = directions[0]
        for index, pick, reason in plan:
            if (first if pick < 0 else first[pick]) not in held[index]:
                return reason
    else:
        for index, pick, reason in plan:
            entries = held[index]
            for direction in directions:
                if (direction if pick < 0 else direction[pick]) not in entries:
                    return reason
    if not req.features <= caps.features:
        return FEATURE_MISSING
    return None


_Plan = tuple[tuple[int, int, str], ...]
_PLANS: dict[Pipeline, _Plan] = {}


def _plan(pipeline: Pipeline) -> _Plan:
    """(`STAGE_INDEX`, `Stage.pick`, reason) of each stage `pipeline` enables, in table
    order, made once per pipeline (there are at most 2 ** len(STAGES))."""
    plan = _PLANS[pipeline] = tuple(
        (STAGE_INDEX[s], s.pick, s.reason) for s in enabled(pipeline)
    )
    return plan


Check = tuple[int, Need, str]
"""One capability entry a job needs: (its stage's `STAGE_INDEX`, what the stage's
entries must hold, the stage's reason)."""


def checks_of(pipeline: Pipeline, directions: tuple[Direction, ...]) -> tuple[Check, ...]:
    """Every entry `capability_mismatch` looks for, in its order; for a caller that
    checks one job's needs against many nodes (`unmet`)."""
    return tuple(
        (STAGE_INDEX[stage], stage.need(direction), stage.reason)
        for stage in enabled(pipeline) for direction in directions
    )


def unmet(
    caps: NodeCapabilities, checks: tuple[Check, ...], features: frozenset[str]
) -> str | None:
    """`capability_mismatch` of a job whose stages' needs are `checks` (`checks_of`)."""
    held = caps.stage_entries
    for index, need, reason in checks:
        if need not in held[index]:
            return reason
    if not features <= caps.features:
        return FEATURE_MISSING
    return None
