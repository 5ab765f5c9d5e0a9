"""The pipeline's stages as one table: what each stage needs of a node.

A job runs some of the stages `asr` (speech recognition), `nmt` (translation)
and `tts` (speech synthesis), as its `Pipeline` says. A node serves the job
when it serves every enabled stage in every *direction* the job needs (a
direction is a (source, target) language pair: one today, the job's own;
a two-way job needs A->B and B->A). Each row says, for one stage:

- `name`: the `Pipeline` field that enables it;
- `capability`: the field of `NodeCapabilities` (and of the wire
  `Capabilities`) it reads;
- `checks`: what of a direction it looks up there: the source language, the
  target language, or the (source, target) pair;
- `reason`: the reason name of a node that lacks it (a wire name,
  docs/protocol.md "Reason names");
- `ring`: the kind of the snapshot's index rings of its capability entries,
  key `(ring, pool, a, b)`: a pair's (src, tgt), or a language and "";
- `cond`: the kind of the snapshot condition `(cond, need)` that answers it
  with per-chunk bitmaps where its ring is not the one searched.

The order of the rows is the order the rules are checked in (`REASON_ORDER`:
a node that breaks two counts under the earlier) and the order in which a
selection prefers a stage's ring to search: the first enabled stage's ring,
for the first direction; the rest are conditions. The two orders must be
the same: the selector's breakdown counts a node outside the searched ring
under the ring's stage, right only when no earlier rule applies to it.

Everything that matches stages reads this table: `capabilities` (the rule,
the reason order, wire conversion), `snapshot` (a node's rings, condition
bitmaps), `selector` (ring and conditions, breakdown), `admission_queue`
(a job class's ring, a node's rings) and the node view of `net.http`. What
the table cannot create are the fields it names: a new stage also needs its
`Pipeline` flag, its `Capabilities` list (and its count in the ingress
limit) and its `NodeCapabilities` field; tests/core/test_stages.py fails
until they agree with the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, Literal

from hub.core.messages import LanguagePair, Pipeline

if TYPE_CHECKING:
    from hub.core.capabilities import NodeCapabilities

Direction = tuple[str, str]
"""(source language, target language)."""
Need = str | Direction
"""What a stage looks up in its capability entries for one direction: a language or a pair."""
IndexKey = tuple[str, int, str, str]
"""A snapshot index entry: (ring kind, pool, a, b)."""
Checks = Literal["src", "tgt", "pair"]

_PICK: Final = {"src": 0, "tgt": 1, "pair": -1}


@dataclass(frozen=True, slots=True)
class Stage:
    """One row of the table (see the module docstring for the fields)."""

    name: str
    capability: str
    checks: Checks
    reason: str
    ring: str
    cond: str
    entries: Callable[[NodeCapabilities], frozenset[Any]] = field(
        init=False, repr=False, compare=False
    )
    """`entries(caps)`: the node's capability entries this stage reads (a C getter)."""
    pick: int = field(init=False, repr=False, compare=False)
    """The index in a direction of the language it checks; -1: the whole direction."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", attrgetter(self.capability))
        object.__setattr__(self, "pick", _PICK[self.checks])

    def need(self, direction: Direction) -> Need:
        """What a node's entries must hold for this stage to serve `direction`."""
        pick = self.pick
        return direction if pick < 0 else direction[pick]

    def ring_key(self, pool: int, direction: Direction) -> IndexKey:
        """The index ring of the nodes of `pool` serving this stage for `direction`."""
        pick = self.pick
        if pick < 0:
            return (self.ring, pool, direction[0], direction[1])
        return (self.ring, pool, direction[pick], "")

    def ring_need(self, a: str, b: str) -> Need:
        """What every member of this stage's ring of key (a, b) holds."""
        return (a, b) if self.pick < 0 else a

    def ring_direction(self, a: str, b: str) -> Direction | None:
        """The one direction the ring of key (a, b) serves, when its key names both
        languages (a pair's ring); None when it names one."""
        return (a, b) if self.pick < 0 else None

    def ring_keys(self, caps: NodeCapabilities, pool: int) -> list[IndexKey]:
        """The rings of this stage that a node with `caps` belongs to within `pool`."""
        kind = self.ring
        if self.pick < 0:
            return [(kind, pool, src, tgt) for src, tgt in self.entries(caps)]
        return [(kind, pool, lang, "") for lang in self.entries(caps)]

    # --- the wire form of its capability entries --------------------------------------------

    def from_wire(self, values: list[Any]) -> frozenset[Any]:
        """The entries of a wire `Capabilities` list."""
        if self.pick < 0:
            return frozenset((p.src, p.tgt) for p in values)
        return frozenset(values)

    def to_wire(self, entries: frozenset[Any]) -> list[Any]:
        """The wire list of `entries`, sorted."""
        if self.pick < 0:
            return [LanguagePair(src=s, tgt=t) for s, t in sorted(entries)]
        return sorted(entries)

    def view(self, entries: frozenset[Any]) -> list[Any]:
        """`msgspec.to_builtins(self.to_wire(entries))`, built directly."""
        if self.pick < 0:
            return [{"src": s, "tgt": t} for s, t in sorted(entries)]
        return sorted(entries)


#                   name   capability        checks  reason                   ring    cond
NMT: Final = Stage("nmt", "language_pairs", "pair", "lang_pair_unsupported", "pair", "p")
ASR: Final = Stage("asr", "asr_languages", "src", "asr_lang_unsupported", "asr", "a")
TTS: Final = Stage("tts", "tts_languages", "tgt", "tts_lang_unsupported", "tts", "t")

STAGES: Final = (NMT, ASR, TTS)
"""The table, in check order (see the module docstring)."""

STAGE_INDEX: Final = {stage: index for index, stage in enumerate(STAGES)}
"""A stage's place in the table (in `NodeCapabilities.stage_entries`)."""

BY_RING: Final = {stage.ring: stage for stage in STAGES}
BY_COND: Final = {stage.cond: stage for stage in STAGES}

_ENABLED: dict[Pipeline, tuple[Stage, ...]] = {}


def enabled(pipeline: Pipeline) -> tuple[Stage, ...]:
    """The stages `pipeline` enables, in table order (memoised: there are at most
    2 ** len(STAGES) pipelines)."""
    found = _ENABLED.get(pipeline)
    if found is None:
        found = _ENABLED[pipeline] = tuple(s for s in STAGES if getattr(pipeline, s.name))
    return found


def both_ways(a: str, b: str) -> tuple[Direction, Direction]:
    """The directions of a two-way job between `a` and `b`: a->b first."""
    return ((a, b), (b, a))
