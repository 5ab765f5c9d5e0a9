"""The immutable view of every node the hub can select from, with its indexes.

A `Snapshot` holds one `NodeState` per node (capabilities, status, load,
owning hub) and capability indexes, so that a selection looks at the nodes
that serve a language pair (or ASR/TTS language) in a pool, not at every
node. Each index entry is a `Ring`: its members sorted by a stable 64-bit
hash of the node id, which is both a sampling array for load-aware picks and
a consistent-hash ring for routing keys (the same order on every hub).

A ring is a sequence of small sorted `Chunk`s (at most `MAX_CHUNK` members
each), so that a join or a leave rewrites one chunk and a few short tuples
over the chunks (O(log n + chunk size)), never the whole ring: a join costs
the same tens of microseconds at 100 or at 100,000 nodes. Positions are
global (chunk boundaries never change what a selection picks), which keeps
an incrementally derived snapshot and one built in one pass equivalent.

Which rings a node is in comes from the stage table (`hub.core.stages`):
one per capability entry of each stage (a pair, an ASR or a TTS language),
plus one of all nodes, each globally and in the node's pool.

Members carry a reference to their node's `NodeCapabilities` (one object,
shared by every ring the node is in, never copied). What a ring does not
guarantee (a feature; in a pair ring, ASR of the source and TTS of the
target; in general another stage's entry, or the same stage's for another
direction) is answered by per-chunk bitmaps over the chunk's positions, one
per *condition* (`Cond`: a feature, or a stage's entry), made the first
time a selection asks for that condition in that chunk (a chunk's features
all at once, when they are few; a one-pass build makes a pair ring's at
once) and then carried forward through joins and leaves (one bit inserted
or removed each). So a node's join costs O(the chunk's memo, at most
`MEMO_MAX` bitmaps), not O(its feature count), and a node with a thousand
capability entries registers in about a millisecond.

Deriving the next snapshot is cheap by construction: a load or status change
replaces one `NodeState` in a persistent map (`immutables.Map`, a C HAMT:
well under a microsecond); a join, leave or capability change additionally
rewrites one chunk per index entry the node belongs to. Nothing here does
I/O or reads a clock.
"""

from __future__ import annotations

import gc
import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Final, Literal

import immutables
import msgspec

from hub.core.capabilities import NodeCapabilities
from hub.core.stages import BY_RING, STAGE_INDEX, STAGES, IndexKey, Need

NodeStatus = Literal["online", "draining", "offline"]
ONLINE: Final = "online"
DRAINING: Final = "draining"
OFFLINE: Final = "offline"

GLOBAL: Final = -1
"""The pool slot of an index key that spans all pools."""

# Index kinds: what a Ring's members have in common. Each stage's ring kind
# (`Stage.ring`, key (kind, pool, a, b): a pair, or a language and "") and:
ALL: Final = "all"  # key (ALL, pool, "", "")

# Conditions a ring answers with bitmaps: (kind, value). Each stage's condition
# kind (`Stage.cond`, value: what the stage needs for one direction) and:
HAS_FEATURE: Final = "f"
Cond = tuple[str, Need]

_COND_STAGE: Final = {stage.cond: STAGE_INDEX[stage] for stage in STAGES}
"""Per stage condition kind, the place of its stage's entries in
`NodeCapabilities.stage_entries` (where the condition's value is looked up)."""

MAX_CHUNK: Final = 256
"""Members of one chunk; a chunk that grows past it splits in two."""
MIN_CHUNK: Final = 32
"""A chunk that shrinks below it merges with a neighbour (when the two fit in one)."""
BUILD_CHUNK: Final = 128
"""Chunk size of a ring built in one pass (room to grow before the first split)."""
MEMO_MAX: Final = 64
"""Condition bitmaps kept per chunk (beyond it, a condition is computed per call)."""
FEATURES_MAX: Final = 48
"""Distinct features of a chunk's members up to which they are indexed all at once."""


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and on every hub."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class NodeState(msgspec.Struct, frozen=True, gc=False):
    """One node as the selector sees it. `running` is counted by the owning hub.

    A msgspec Struct rather than a dataclass: a load change builds a new one,
    and Struct construction is several times cheaper.
    """

    node_id: str
    caps: NodeCapabilities
    hub_id: str = ""
    status: NodeStatus = ONLINE
    running: int = 0
    ring_hash: int = 0

    @classmethod
    def create(
        cls,
        node_id: str,
        caps: NodeCapabilities,
        *,
        hub_id: str = "",
        status: NodeStatus = ONLINE,
        running: int = 0,
    ) -> NodeState:
        return cls(node_id, caps, hub_id, status, running, stable_hash(node_id))

    @property
    def free_slots(self) -> int:
        return self.caps.max_concurrency - self.running

    def with_running(self, running: int) -> NodeState:
        return NodeState(self.node_id, self.caps, self.hub_id, self.status, running, self.ring_hash)

    def with_status(self, status: NodeStatus) -> NodeState:
        return NodeState(self.node_id, self.caps, self.hub_id, status, self.running, self.ring_hash)


def holds(caps: NodeCapabilities, cond: Cond) -> bool:
    """Whether a node with `caps` meets `cond`."""
    kind, value = cond
    if kind == HAS_FEATURE:
        return value in caps.features
    return value in caps.stage_entries[_COND_STAGE[kind]]


def _bitmap_of(caps: Sequence[NodeCapabilities], cond: Cond) -> int:
    """The bitmap of the members of `caps` that meet `cond` (bit i = caps[i])."""
    kind, value = cond
    if kind == HAS_FEATURE:
        digits = ["1" if value in c.features else "0" for c in reversed(caps)]
    else:
        i = _COND_STAGE[kind]
        digits = ["1" if value in c.stage_entries[i] else "0" for c in reversed(caps)]
    return int("".join(digits), 2) if digits else 0


class Chunk:
    """Up to `MAX_CHUNK` consecutive members of a ring, sorted by hash.

    Immutable by convention (its lists are never mutated once a ring holds
    it: copying a list is several times cheaper than slicing a tuple),
    except `bits`: a memo of condition bitmaps over the chunk's positions,
    filled on first use (`mask`) and carried into the chunks derived from
    this one. A memo entry is a pure function of the members, so sharing a
    chunk between snapshots stays safe.

    Features are indexed all at once, in one pass over the members, the
    first time any feature is asked for (`features_indexed`: then a feature
    absent from `bits` is one no member has), unless the chunk's members
    have more than `FEATURES_MAX` distinct features between them (a node
    with a thousand features): then each is computed when asked for.
    """

    __slots__ = ("bits", "caps", "features_indexed", "full", "hashes", "ids")

    def __init__(
        self,
        hashes: list[int],
        ids: list[str],
        caps: list[NodeCapabilities],
        bits: dict[Cond, int] | None = None,
        features_indexed: bool = False,
    ) -> None:
        self.hashes = hashes
        self.ids = ids
        self.caps = caps
        self.bits: dict[Cond, int] = {} if bits is None else bits
        self.features_indexed = features_indexed
        self.full = (1 << len(ids)) - 1

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, cond: Cond) -> int:
        """The members that meet `cond`, as a bitmap over this chunk's positions."""
        bits = self.bits.get(cond)
        if bits is not None:
            return bits
        if cond[0] == HAS_FEATURE and (self.features_indexed or self.index_features()):
            return self.bits.get(cond, 0)
        bits = _bitmap_of(self.caps, cond)
        if len(self.bits) < MEMO_MAX:
            self.bits[cond] = bits
        return bits

    def index_features(self) -> bool:
        """Make the bitmap of every feature a member has (one pass); False when there
        are too many distinct features (or too little room in the memo)."""
        found: dict[str, int] = {}
        for i, caps in enumerate(self.caps):
            for name in caps.features:
                found[name] = found.get(name, 0) | (1 << i)
            if len(found) > FEATURES_MAX:
                return False
        if len(self.bits) + len(found) > MEMO_MAX:
            return False
        for name, bits in found.items():
            self.bits[(HAS_FEATURE, name)] = bits
        self.features_indexed = True
        return True

    def capable(self, conds: Sequence[Cond]) -> int:
        """The members that meet every condition of `conds`."""
        mask = self.full
        for cond in conds:
            mask &= self.mask(cond)
        return mask

    def inserted(self, i: int, ring_hash: int, node_id: str, caps: NodeCapabilities) -> Chunk:
        hashes = self.hashes.copy()
        hashes.insert(i, ring_hash)
        ids = self.ids.copy()
        ids.insert(i, node_id)
        members = self.caps.copy()
        members.insert(i, caps)
        bits: dict[Cond, int] = {}
        indexed = self.features_indexed
        if self.bits:
            low = (1 << i) - 1
            for cond, b in self.bits.items():
                bits[cond] = ((b >> i) << (i + 1)) | (b & low) | (holds(caps, cond) << i)
        if indexed:
            new = [name for name in caps.features if (HAS_FEATURE, name) not in bits]
            if len(bits) + len(new) <= MEMO_MAX:
                for name in new:
                    bits[(HAS_FEATURE, name)] = 1 << i
            else:
                indexed = False  # too many: features are computed when asked for
        return Chunk(hashes, ids, members, bits, indexed)

    def removed(self, i: int) -> Chunk:
        hashes = self.hashes.copy()
        del hashes[i]
        ids = self.ids.copy()
        del ids[i]
        members = self.caps.copy()
        del members[i]
        bits: dict[Cond, int] = {}
        if self.bits:
            low = (1 << i) - 1
            for cond, b in self.bits.items():
                bits[cond] = ((b >> (i + 1)) << i) | (b & low)
        return Chunk(hashes, ids, members, bits, self.features_indexed)

    def halves(self) -> tuple[Chunk, Chunk]:
        h = len(self.ids) // 2
        low = (1 << h) - 1
        indexed = self.features_indexed
        return (
            Chunk(self.hashes[:h], self.ids[:h], self.caps[:h],
                  {c: b & low for c, b in self.bits.items()}, indexed),
            Chunk(self.hashes[h:], self.ids[h:], self.caps[h:],
                  {c: b >> h for c, b in self.bits.items()}, indexed),
        )

    def merged(self, other: Chunk) -> Chunk:
        n = len(self.ids)
        bits: dict[Cond, int] = {}
        for cond in self.bits.keys() | other.bits.keys():
            mine = self.bits.get(cond)
            theirs = other.bits.get(cond)
            feature = cond[0] == HAS_FEATURE
            if mine is None and feature and self.features_indexed:
                mine = 0
            if theirs is None and feature and other.features_indexed:
                theirs = 0
            if mine is not None and theirs is not None:
                bits[cond] = mine | (theirs << n)
        indexed = self.features_indexed and other.features_indexed
        if len(bits) > MEMO_MAX:
            bits = {c: b for c, b in bits.items() if c[0] != HAS_FEATURE}
            indexed = False
        return Chunk(
            self.hashes + other.hashes, self.ids + other.ids, self.caps + other.caps, bits,
            indexed,
        )


class Ring:
    """Members of one index entry, sorted by `NodeState.ring_hash`, in chunks.

    Positions are global (0..len-1 in hash order); `locate` maps one to its
    chunk. `sizes[k]` is chunk `k`'s length, `firsts[k]` its first hash,
    `ends[k]` the position after it (computed on first use: a join does not
    pay for it, the next selection does, once). Readers use `locate`, `at`,
    `bisect`, `first_capable`, `capable_ids` and the chunks' `capable`
    bitmaps; `ids` and `hashes` flatten the ring (linear time: for tests and
    inspection). Lists here are never mutated once the ring exists.
    """

    __slots__ = ("_ends", "chunks", "firsts", "size", "sizes")

    def __init__(self, chunks: Sequence[Chunk] = ()) -> None:
        self.chunks = list(chunks)
        self.sizes = [len(c.ids) for c in chunks]
        self.firsts = [c.hashes[0] for c in chunks]
        self.size = sum(self.sizes)
        self._ends: list[int] | None = None

    @classmethod
    def _make(
        cls, chunks: list[Chunk], sizes: list[int], firsts: list[int], size: int
    ) -> Ring:
        ring = cls.__new__(cls)
        ring.chunks = chunks
        ring.sizes = sizes
        ring.firsts = firsts
        ring.size = size
        ring._ends = None
        return ring

    @classmethod
    def build(
        cls, hashes: list[int], ids: list[str], caps: list[NodeCapabilities],
        conds: Sequence[Cond] = (), *, features: bool = False,
    ) -> Ring:
        """A ring of members given as parallel lists, already sorted by (hash, id);
        the bitmaps of `conds` (and with `features`, of every feature) are made at
        once in every chunk."""
        chunks = []
        for start in range(0, len(ids), BUILD_CHUNK):
            end = start + BUILD_CHUNK
            chunk = Chunk(hashes[start:end], ids[start:end], caps[start:end])
            for cond in conds:
                chunk.mask(cond)
            if features:
                chunk.index_features()
            chunks.append(chunk)
        return cls(chunks)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Ring({self.size} nodes in {len(self.chunks)} chunks)"

    @property
    def ends(self) -> list[int]:
        ends = self._ends
        if ends is None:
            ends = self._ends = list(accumulate(self.sizes))
        return ends

    @property
    def ids(self) -> tuple[str, ...]:
        """Every member, in ring order (linear time)."""
        return tuple(node_id for chunk in self.chunks for node_id in chunk.ids)

    @property
    def hashes(self) -> tuple[int, ...]:
        return tuple(h for chunk in self.chunks for h in chunk.hashes)

    def bits(self, cond: Cond) -> int:
        """The members meeting `cond` as one bitmap over global positions (linear; tests)."""
        out = 0
        start = 0
        for chunk in self.chunks:
            out |= chunk.mask(cond) << start
            start += len(chunk.ids)
        return out

    # --- reading ---------------------------------------------------------------------

    def locate(self, pos: int) -> tuple[int, int]:
        """The chunk and the offset in it of global position `pos` (0 <= pos < len)."""
        ends = self._ends
        if ends is None:
            ends = self.ends
        k = bisect_right(ends, pos)
        return k, pos - (ends[k - 1] if k else 0)

    def at(self, pos: int) -> str:
        k, i = self.locate(pos)
        return self.chunks[k].ids[i]

    def bisect(self, ring_hash: int) -> int:
        """The global position of the first member whose hash is >= `ring_hash`
        (`len(self)` when there is none)."""
        k = bisect_left(self.firsts, ring_hash) - 1
        if k < 0:
            return 0
        chunk = self.chunks[k]
        return (self.ends[k - 1] if k else 0) + bisect_left(chunk.hashes, ring_hash)

    def position(self, ring_hash: int, node_id: str) -> int:
        """The global position of `node_id`, or -1 when it is not a member."""
        found = self._find(ring_hash, node_id)
        if found is None:
            return -1
        k, i = found
        return (self.ends[k - 1] if k else 0) + i

    def _find(self, ring_hash: int, node_id: str) -> tuple[int, int] | None:
        chunks = self.chunks
        k = max(0, bisect_left(self.firsts, ring_hash) - 1)
        while k < len(chunks):
            chunk = chunks[k]
            i = bisect_left(chunk.hashes, ring_hash)
            hashes, ids = chunk.hashes, chunk.ids
            while i < len(ids) and hashes[i] == ring_hash:
                if ids[i] == node_id:
                    return k, i
                i += 1
            if i < len(ids):
                return None  # passed the hash
            k += 1
        return None

    def first_capable(self, pos: int, conds: Sequence[Cond]) -> str | None:
        """The first member at or after global position `pos` (wrapping around) that
        meets every condition of `conds`; None when no member does."""
        chunks = self.chunks
        k, i = self.locate(pos)
        chunk = chunks[k]
        mask = chunk.capable(conds)
        rest = mask >> i
        if rest:
            return chunk.ids[i + (rest & -rest).bit_length() - 1]
        count = len(chunks)
        for step in range(1, count):
            chunk = chunks[(k + step) % count]
            m = chunk.capable(conds)
            if m:
                return chunk.ids[(m & -m).bit_length() - 1]
        low = mask & ((1 << i) - 1)
        if low:
            return chunks[k].ids[(low & -low).bit_length() - 1]
        return None

    def capable_ids(self, pos: int, conds: Sequence[Cond]) -> Iterator[str]:
        """Every member meeting `conds`, clockwise from global position `pos`."""
        chunks = self.chunks
        if not chunks:
            return
        k, i = self.locate(pos)
        count = len(chunks)
        first = chunks[k]
        mask = first.capable(conds)
        yield from _members(first.ids, mask >> i << i)
        for step in range(1, count):
            chunk = chunks[(k + step) % count]
            yield from _members(chunk.ids, chunk.capable(conds))
        yield from _members(first.ids, mask & ((1 << i) - 1))

    # --- deriving --------------------------------------------------------------------

    def with_member(self, ring_hash: int, node_id: str, caps: NodeCapabilities) -> Ring:
        """The ring plus one member."""
        chunks = self.chunks
        if not chunks:
            return Ring((Chunk([ring_hash], [node_id], [caps]),))
        k = bisect_right(self.firsts, ring_hash) - 1
        if k < 0:
            k = 0
        chunk = chunks[k]
        grown = chunk.inserted(bisect_left(chunk.hashes, ring_hash), ring_hash, node_id, caps)
        chunks = chunks.copy()
        sizes = self.sizes.copy()
        firsts = self.firsts.copy()
        if len(grown.ids) <= MAX_CHUNK:
            chunks[k] = grown
            sizes[k] += 1
            firsts[k] = grown.hashes[0]
        else:
            a, b = grown.halves()
            chunks[k : k + 1] = (a, b)
            sizes[k : k + 1] = (len(a.ids), len(b.ids))
            firsts[k : k + 1] = (a.hashes[0], b.hashes[0])
        return Ring._make(chunks, sizes, firsts, self.size + 1)

    def without_member(self, ring_hash: int, node_id: str) -> Ring:
        found = self._find(ring_hash, node_id)
        if found is None:
            return self
        k, i = found
        chunks = self.chunks
        smaller = chunks[k].removed(i)
        lo, hi = k, k + 1
        replaced: tuple[Chunk, ...]
        if not smaller.ids:
            replaced = ()
        elif len(smaller.ids) < MIN_CHUNK and len(chunks) > 1:
            # Merge with a neighbour when the two fit in one chunk.
            if k + 1 < len(chunks) and len(smaller.ids) + len(chunks[k + 1].ids) <= MAX_CHUNK:
                replaced, hi = (smaller.merged(chunks[k + 1]),), k + 2
            elif k > 0 and len(smaller.ids) + len(chunks[k - 1].ids) <= MAX_CHUNK:
                replaced, lo = (chunks[k - 1].merged(smaller),), k - 1
            else:
                replaced = (smaller,)
        else:
            replaced = (smaller,)
        chunks = chunks.copy()
        sizes = self.sizes.copy()
        firsts = self.firsts.copy()
        chunks[lo:hi] = replaced
        if hi - lo == 1 and replaced:
            sizes[lo] = len(smaller.ids)
            firsts[lo] = smaller.hashes[0]
        else:
            sizes[lo:hi] = [len(c.ids) for c in replaced]
            firsts[lo:hi] = [c.hashes[0] for c in replaced]
        return Ring._make(chunks, sizes, firsts, self.size - 1)


def _members(ids: list[str], mask: int) -> Iterator[str]:
    while mask:
        low = mask & -mask
        yield ids[low.bit_length() - 1]
        mask ^= low


def index_keys(caps: NodeCapabilities) -> list[IndexKey]:
    """Every index entry a node with `caps` belongs to, globally and in its pool."""
    keys = pool_index_keys(caps, GLOBAL)
    keys.extend(pool_index_keys(caps, caps.pool))
    return keys


def pool_index_keys(caps: NodeCapabilities, pool: int) -> list[IndexKey]:
    """The index entries of `pool` (or GLOBAL) a node with `caps` belongs to."""
    keys: list[IndexKey] = [(ALL, pool, "", "")]
    for stage in STAGES:
        keys.extend(stage.ring_keys(caps, pool))
    return keys


def index_member(caps: NodeCapabilities, key: IndexKey) -> bool:
    """Whether a node with `caps` belongs to the index entry `key` (any pool)."""
    kind, _, a, b = key
    if kind == ALL:
        return True
    stage = BY_RING[kind]
    return stage.ring_need(a, b) in stage.entries(caps)


_EMPTY_RING: Final = Ring()

NodeMap = immutables.Map[str, NodeState]
IndexMap = immutables.Map[IndexKey, Ring]


class Snapshot:
    """An immutable view of all nodes; every `with_*` returns a new snapshot."""

    __slots__ = ("_index", "_nodes", "version")

    def __init__(self) -> None:
        self._nodes: NodeMap = immutables.Map()
        self._index: IndexMap = immutables.Map()
        self.version = 0

    @classmethod
    def _make(cls, nodes: NodeMap, index: IndexMap, version: int) -> Snapshot:
        new = cls.__new__(cls)
        new._nodes = nodes
        new._index = index
        new.version = version
        return new

    @classmethod
    def of(cls, states: Iterable[NodeState]) -> Snapshot:
        """A snapshot holding `states` (built in one pass, for tests and resyncs).

        The collector is paused meanwhile: a 100,000-node build allocates about a
        million containers, and the collections they would trigger cost as much
        as the build itself (measured: 2.8 s vs 1.5 s)."""
        paused = gc.isenabled()
        gc.disable()
        try:
            return cls._build(states)
        finally:
            if paused:
                gc.enable()

    @classmethod
    def _build(cls, states: Iterable[NodeState]) -> Snapshot:
        nodes: dict[str, NodeState] = {}
        for state in states:
            nodes[state.node_id] = state
        # Nodes in ring order once, so that every ring's members come out sorted.
        ordered = sorted(nodes.values(), key=_ring_order)
        members: dict[IndexKey, tuple[list[int], list[str], list[NodeCapabilities]]] = {}
        for state in ordered:
            h, node_id, caps = state.ring_hash, state.node_id, state.caps
            for key in index_keys(caps):
                found = members.get(key)
                if found is None:
                    members[key] = ([h], [node_id], [caps])
                else:
                    found[0].append(h)
                    found[1].append(node_id)
                    found[2].append(caps)
        rings: dict[IndexKey, Ring] = {}
        for key, (hashes, ids, caps_list) in members.items():
            conds = _build_conds(key)
            rings[key] = Ring.build(
                hashes, ids, caps_list, conds or (), features=conds is not None
            )
        return cls._make(immutables.Map(nodes), immutables.Map(rings), 1)

    # --- reading ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self._nodes.values())

    def __repr__(self) -> str:
        return f"Snapshot(version={self.version}, nodes={len(self._nodes)})"

    def get(self, node_id: str) -> NodeState | None:
        return self._nodes.get(node_id)

    def ring(self, kind: str, pool: int, a: str = "", b: str = "") -> Ring:
        """The members of one index entry (empty when none)."""
        return self._index.get((kind, pool, a, b), _EMPTY_RING)

    def rings(self) -> Iterator[tuple[IndexKey, Ring]]:
        """Every index entry (for tests and inspection)."""
        return iter(self._index.items())

    @property
    def index_token(self) -> object:
        """An object that changes whenever membership or capabilities change (and only
        then): a cache of what depends on them alone may key on its identity."""
        return self._index

    @property
    def lookup(self) -> Callable[[str], NodeState]:
        """`lookup(node_id)`: the state of a node the indexes name (KeyError for an
        unknown one). A bound method taken once per selection, for its hot loop."""
        return self._nodes.__getitem__

    # --- deriving ----------------------------------------------------------------

    def with_node(self, state: NodeState) -> Snapshot:
        """Join a node, or replace it; indexes change only if its capabilities did."""
        old = self._nodes.get(state.node_id)
        nodes = self._nodes.set(state.node_id, state)
        if old is not None and old.caps == state.caps and old.ring_hash == state.ring_hash:
            return Snapshot._make(nodes, self._index, self.version + 1)
        index = self._index.mutate()
        if old is not None:
            _unindex(index, old)
        _index(index, state)
        return Snapshot._make(nodes, index.finish(), self.version + 1)

    def without_node(self, node_id: str) -> Snapshot:
        old = self._nodes.get(node_id)
        if old is None:
            return self
        index = self._index.mutate()
        _unindex(index, old)
        return Snapshot._make(self._nodes.delete(node_id), index.finish(), self.version + 1)

    def with_running(self, node_id: str, running: int) -> Snapshot:
        """The cheap path: a load change touches no index."""
        old = self._nodes.get(node_id)
        if old is None or old.running == running:
            return self
        return Snapshot._make(
            self._nodes.set(node_id, old.with_running(running)), self._index, self.version + 1
        )

    def with_status(self, node_id: str, status: NodeStatus) -> Snapshot:
        old = self._nodes.get(node_id)
        if old is None or old.status == status:
            return self
        return Snapshot._make(
            self._nodes.set(node_id, old.with_status(status)), self._index, self.version + 1
        )


def _ring_order(state: NodeState) -> tuple[int, str]:
    return state.ring_hash, state.node_id


def _build_conds(key: IndexKey) -> tuple[Cond, ...] | None:
    """The conditions a one-pass build makes the bitmaps of in ring `key` at once, or
    None (then it makes none, features included).

    A ring whose key names a whole direction (a pair's) is the one every request
    with that stage enabled searches, and a default-pipeline request asks it for
    every other stage in that direction (ASR of the source, TTS of the target), and
    many for features. Rings of the other kinds make theirs when asked."""
    kind, _, a, b = key
    stage = BY_RING.get(kind)
    direction = None if stage is None else stage.ring_direction(a, b)
    if direction is None:
        return None
    return tuple((other.cond, other.need(direction)) for other in STAGES if other is not stage)


def _index(index: immutables.MapMutation[IndexKey, Ring], state: NodeState) -> None:
    caps = state.caps
    for key in index_keys(caps):
        index[key] = index.get(key, _EMPTY_RING).with_member(state.ring_hash, state.node_id, caps)


def _unindex(index: immutables.MapMutation[IndexKey, Ring], state: NodeState) -> None:
    for key in index_keys(state.caps):
        ring = index.get(key)
        if ring is None:
            continue
        smaller = ring.without_member(state.ring_hash, state.node_id)
        if len(smaller):
            index[key] = smaller
        else:
            del index[key]
