"""PMap behaves like a dict, and every version stays as it was."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hub.core.pmap import PMap

# Small ints collide in the trie's buckets (hash(i) == i), strings spread out.
KEYS = st.one_of(st.integers(-5000, 5000), st.text(max_size=3))


class PMapVersusDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pmap: PMap[object, int] = PMap()
        self.oracle: dict[object, int] = {}
        self.history: list[tuple[PMap[object, int], dict[object, int]]] = []

    def _commit(self, new: PMap[object, int]) -> None:
        self.history.append((self.pmap, dict(self.oracle)))
        self.pmap = new

    @rule(key=KEYS, value=st.integers())
    def set(self, key: object, value: int) -> None:
        self._commit(self.pmap.set(key, value))
        self.oracle[key] = value

    @rule(key=KEYS)
    def delete(self, key: object) -> None:
        self._commit(self.pmap.delete(key))
        self.oracle.pop(key, None)

    @rule(items=st.dictionaries(KEYS, st.integers(), max_size=20), dels=st.lists(KEYS, max_size=5))
    def update(self, items: dict[object, int], dels: list[object]) -> None:
        self._commit(self.pmap.update(items, deletions=tuple(dels)))
        for key in dels:
            self.oracle.pop(key, None)
        self.oracle.update(items)

    @rule(key=KEYS)
    def lookups(self, key: object) -> None:
        assert (key in self.pmap) == (key in self.oracle)
        assert self.pmap.get(key) == self.oracle.get(key)
        assert self.pmap.get(key, -1) == self.oracle.get(key, -1)

    @invariant()
    def same_as_dict(self) -> None:
        assert len(self.pmap) == len(self.oracle)
        assert dict(self.pmap.items()) == self.oracle
        assert sorted(map(repr, self.pmap)) == sorted(map(repr, self.oracle))
        assert sorted(self.pmap.values()) == sorted(self.oracle.values())
        for key, value in self.oracle.items():
            assert self.pmap[key] == value

    @invariant()
    def old_versions_unchanged(self) -> None:
        # Checking every version each step is quadratic; the last few suffice.
        for old, snapshot in self.history[-3:]:
            assert dict(old.items()) == snapshot
            assert len(old) == len(snapshot)


PMapVersusDict.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestPMapVersusDict = PMapVersusDict.TestCase


def test_random_operations_against_dict_oracle() -> None:
    rng = random.Random(7)
    pmap: PMap[int, int] = PMap()
    oracle: dict[int, int] = {}
    versions: list[tuple[PMap[int, int], dict[int, int]]] = []
    for step in range(6000):
        key = rng.randrange(3000) * rng.choice((1, 64, 4096))  # hits shared buckets
        op = rng.random()
        if op < 0.6:
            pmap = pmap.set(key, step)
            oracle[key] = step
        elif op < 0.9:
            pmap = pmap.delete(key)
            oracle.pop(key, None)
        else:
            batch = {rng.randrange(3000): step for _ in range(rng.randrange(1, 30))}
            pmap = pmap.update(batch, deletions=(key,))
            oracle.pop(key, None)
            oracle.update(batch)
        if step % 500 == 0:
            versions.append((pmap, dict(oracle)))
        assert len(pmap) == len(oracle)
    assert dict(pmap.items()) == oracle
    for old, expected in versions:
        assert dict(old.items()) == expected


def test_persistence_of_set_and_delete() -> None:
    a: PMap[str, int] = PMap.from_mapping({f"k{i}": i for i in range(1000)})
    b = a.set("k1", -1)
    c = b.delete("k2")
    d = c.set("new", 5)
    assert a["k1"] == 1 and b["k1"] == -1
    assert "k2" in b and "k2" not in c
    assert "new" not in c and d["new"] == 5
    assert (len(a), len(b), len(c), len(d)) == (1000, 1000, 999, 1000)
    assert dict(a.items()) == {f"k{i}": i for i in range(1000)}


def test_no_op_changes_return_same_map() -> None:
    a: PMap[str, int] = PMap.from_mapping({"x": 1})
    assert a.delete("absent") is a
    assert a.update({}) is a
    assert repr(a) == "PMap(len=1)"


def test_empty_map() -> None:
    empty: PMap[str, int] = PMap()
    assert len(empty) == 0
    assert list(empty) == [] and list(empty.items()) == [] and list(empty.values()) == []
    assert empty.get("x") is None and "x" not in empty
