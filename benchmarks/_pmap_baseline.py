"""A small persistent (immutable, structurally shared) hash map.

The snapshot must derive its next version in microseconds when one node's
load changes, even with 100,000 nodes. Copying a dict of that size costs a
millisecond; this map is a fixed two-level trie of 64 x 64 leaves, so one
update copies one small leaf dict and two 64-slot arrays and shares the rest.
The arrays are Python lists (copying a list is several times cheaper than
slicing a tuple) that are never mutated once a map that holds them exists:
every container reachable from a published `PMap` is frozen by convention.
Keys are bucketed by Python's `hash`, so iteration order is stable within a
process but not across processes: callers that need a portable order sort.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

_WIDTH = 64
_MASK = _WIDTH - 1
_SHIFT = 6
_EMPTY_LEAF: dict[object, object] = {}  # shared; never mutated
_EMPTY_MID: list[dict[object, object]] = [_EMPTY_LEAF] * _WIDTH  # shared; never mutated

Root = list[list[dict[K, V]]]


class PMap(Generic[K, V]):
    """An immutable mapping; `set`, `delete` and `update` return a new map."""

    __slots__ = ("_len", "_root")

    def __init__(self) -> None:
        self._root: Root[K, V] = [_EMPTY_MID] * _WIDTH  # type: ignore[list-item]
        self._len = 0

    @classmethod
    def _make(cls, root: Root[K, V], length: int) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._root = root
        new._len = length
        return new

    @classmethod
    def from_mapping(cls, items: Mapping[K, V]) -> PMap[K, V]:
        return cls().update(items)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        h = hash(key)
        return key in self._root[h & _MASK][(h >> _SHIFT) & _MASK]

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        h = hash(key)
        return self._root[h & _MASK][(h >> _SHIFT) & _MASK].get(key, default)

    def __getitem__(self, key: K) -> V:
        h = hash(key)
        return self._root[h & _MASK][(h >> _SHIFT) & _MASK][key]

    def set(self, key: K, value: V) -> PMap[K, V]:
        # The hot path (one node's load changes): one leaf and two arrays copied.
        h = hash(key)
        i = h & _MASK
        j = (h >> _SHIFT) & _MASK
        root = self._root
        mid = root[i]
        leaf = mid[j]
        new_leaf = leaf.copy()
        new_leaf[key] = value
        new_mid = mid.copy()
        new_mid[j] = new_leaf
        new_root = root.copy()
        new_root[i] = new_mid
        new = PMap.__new__(PMap)
        new._root = new_root
        new._len = self._len + (len(new_leaf) - len(leaf))
        return new

    def delete(self, key: K) -> PMap[K, V]:
        """A map without `key`; the same map when `key` is absent."""
        if key not in self:
            return self
        return self.update({}, deletions=(key,))

    def update(self, items: Mapping[K, V], *, deletions: tuple[K, ...] = ()) -> PMap[K, V]:
        """Set every item and delete every key of `deletions`, in one copy per touched leaf."""
        if not items and not deletions:
            return self
        touched: dict[tuple[int, int], dict[K, V]] = {}
        root = self._root
        length = self._len
        for key in deletions:
            h = hash(key)
            slot = (h & _MASK, (h >> _SHIFT) & _MASK)
            leaf = touched.get(slot)
            if leaf is None:
                leaf = touched[slot] = dict(root[slot[0]][slot[1]])
            if leaf.pop(key, _MISSING) is not _MISSING:
                length -= 1
        for key, value in items.items():
            h = hash(key)
            slot = (h & _MASK, (h >> _SHIFT) & _MASK)
            leaf = touched.get(slot)
            if leaf is None:
                leaf = touched[slot] = dict(root[slot[0]][slot[1]])
            if key not in leaf:
                length += 1
            leaf[key] = value
        new_root = root.copy()
        copied: set[int] = set()
        for (i, j), leaf in touched.items():
            if i not in copied:
                new_root[i] = new_root[i].copy()
                copied.add(i)
            new_root[i][j] = leaf
        return PMap._make(new_root, length)

    def items(self) -> Iterator[tuple[K, V]]:
        for mid in self._root:
            if mid is _EMPTY_MID:
                continue
            for leaf in mid:
                yield from leaf.items()

    def values(self) -> Iterator[V]:
        for mid in self._root:
            if mid is _EMPTY_MID:
                continue
            for leaf in mid:
                yield from leaf.values()

    def __iter__(self) -> Iterator[K]:
        for mid in self._root:
            if mid is _EMPTY_MID:
                continue
            for leaf in mid:
                yield from leaf

    def __repr__(self) -> str:
        return f"PMap(len={self._len})"


_MISSING = object()
