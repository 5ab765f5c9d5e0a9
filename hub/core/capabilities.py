"""What a node offers, what a job needs, and the rules that match them.

`NodeCapabilities` is the normalised, hashable form of the wire
`Capabilities` object (sets instead of lists). `Requirements` is what the
selector is asked for. `capability_mismatch` is the single statement of the
match rules of docs/protocol.md ("pipeline object"): every other module that
needs to know whether a node can serve a job calls it or mirrors it through
the snapshot's indexes, which are built from the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

from hub.core.messages import DEFAULT_PIPELINE, Capabilities, LanguagePair, Pipeline, Submit

# Reason names of docs/protocol.md ("Reason names"), in the order the selector
# checks them: the first failing check is the reason a node is passed over.
EXCLUDED: Final = "excluded"
POOL_MISMATCH: Final = "pool_mismatch"
LANG_PAIR_UNSUPPORTED: Final = "lang_pair_unsupported"
ASR_LANG_UNSUPPORTED: Final = "asr_lang_unsupported"
TTS_LANG_UNSUPPORTED: Final = "tts_lang_unsupported"
FEATURE_MISSING: Final = "feature_missing"
OFFLINE: Final = "offline"
DRAINING: Final = "draining"
AT_CAPACITY: Final = "at_capacity"
UNKNOWN_NODE: Final = "unknown_node"
"""Only for a preferred node that is not in the snapshot at all."""

REASON_ORDER: Final = (
    EXCLUDED,
    POOL_MISMATCH,
    LANG_PAIR_UNSUPPORTED,
    ASR_LANG_UNSUPPORTED,
    TTS_LANG_UNSUPPORTED,
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

    @classmethod
    def from_wire(cls, caps: Capabilities, *, default_pool: int = 0) -> NodeCapabilities:
        """Normalise the wire object; `default_pool` applies when the node names none."""
        return cls(
            language_pairs=frozenset((p.src, p.tgt) for p in caps.language_pairs),
            asr_languages=frozenset(caps.asr_languages),
            tts_languages=frozenset(caps.tts_languages),
            features=frozenset(caps.features),
            max_concurrency=caps.max_concurrency,
            pool=default_pool if caps.pool is None else caps.pool,
            labels=tuple(sorted(caps.labels.items())),
        )

    def to_wire(self) -> Capabilities:
        return Capabilities(
            max_concurrency=self.max_concurrency,
            language_pairs=[LanguagePair(src=s, tgt=t) for s, t in sorted(self.language_pairs)],
            asr_languages=sorted(self.asr_languages),
            tts_languages=sorted(self.tts_languages),
            features=sorted(self.features),
            pool=self.pool,
            labels=dict(self.labels),
        )


class Requirements(msgspec.Struct, frozen=True):
    """What one selection is asked for.

    `excluded` holds hard exclusions: nodes that already failed this job.
    They are skipped in every attempt, the preferred node included.
    """

    src_lang: str
    tgt_lang: str
    pipeline: Pipeline = DEFAULT_PIPELINE
    features: frozenset[str] = frozenset()
    preferred_node_id: str | None = None
    preferred_pool: int | None = None
    routing_key: str | None = None
    excluded: frozenset[str] = frozenset()

    @classmethod
    def from_submit(cls, submit: Submit, *, routing_key: str | None = None) -> Requirements:
        """The requirements of a `submit`; `routing_key` overrides the submit's own."""
        return cls(
            src_lang=submit.src_lang,
            tgt_lang=submit.tgt_lang,
            pipeline=submit.pipeline,
            features=frozenset(submit.features),
            preferred_node_id=submit.preferred_node_id,
            preferred_pool=submit.preferred_pool,
            routing_key=routing_key if routing_key is not None else submit.routing_key,
        )

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
        )


def capability_mismatch(caps: NodeCapabilities, req: Requirements) -> str | None:
    """The first capability rule `caps` breaks for `req`, or None if it serves the job.

    The rules (docs/protocol.md, "pipeline object"): `nmt` needs the pair,
    `asr` needs the source language, `tts` the target language, and every
    requested feature must be present. Status and load are not capabilities;
    the selector checks them separately.
    """
    pipeline = req.pipeline
    if pipeline.nmt and (req.src_lang, req.tgt_lang) not in caps.language_pairs:
        return LANG_PAIR_UNSUPPORTED
    if pipeline.asr and req.src_lang not in caps.asr_languages:
        return ASR_LANG_UNSUPPORTED
    if pipeline.tts and req.tgt_lang not in caps.tts_languages:
        return TTS_LANG_UNSUPPORTED
    if not req.features <= caps.features:
        return FEATURE_MISSING
    return None
