"""`Membership`: which hubs count as alive, and when one is declared dead.

A hub is alive while its presence is seen in the store, or while it speaks to
this hub (an envelope or a fleet update proves it alive until the next
presence check says otherwise). It is dead after missing from presence on
`GRACE_TICKS` checks in a row, so that a store restart (every presence key
gone at once) declares nobody dead. A dead hub is *buried* once (its work is
failed over) and stays buried until it announces itself again.

Pure bookkeeping: the presence readings come from the caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set
from typing import Final

GRACE_TICKS: Final = 3
"""Presence checks a hub must miss in a row before it is declared dead."""


class Membership:
    __slots__ = ("_buried", "_missing", "hub_id", "live")

    def __init__(self, hub_id: str) -> None:
        self.hub_id = hub_id
        self.live: set[str] = {hub_id}
        self._buried: set[str] = set()
        self._missing: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"Membership(live={sorted(self.live)}, buried={sorted(self._buried)})"

    def is_live(self, hub_id: str) -> bool:
        """Whether `hub_id` counts as alive: its presence was seen, or it spoke to us,
        since the last presence check."""
        return hub_id in self.live

    def is_buried(self, hub_id: str) -> bool:
        return hub_id in self._buried

    def heard_from(self, hub_id: str) -> None:
        """A message from `hub_id` proves it alive until presence says otherwise."""
        if hub_id not in self.live and hub_id not in self._buried:
            self.live.add(hub_id)

    def seen(self, present: Set[str]) -> None:
        """Hubs whose presence was just read (added to the live ones, nothing removed)."""
        self.live |= present

    def check(self, present: Set[str], known: Set[str]) -> tuple[list[str], list[str]]:
        """One presence check: `present` hubs have live presence, `known` ones announced
        themselves and were not dropped. Returns the hubs that just died (to bury:
        fail over their work) and the known hubs that are dead (to reap: drain their
        inbox, then forget them), both sorted."""
        present = set(present) | {self.hub_id}
        for hub_id in (self.live | known) - present:
            self._missing[hub_id] += 1
        for hub_id in present:
            self._missing.pop(hub_id, None)
        dead = {h for h, n in self._missing.items() if n >= GRACE_TICKS}
        lost = (self.live & dead) - self._buried
        self.live = present | (self.live - dead)
        self._buried -= present  # a hub id that announces itself again is alive again
        self._buried |= lost
        return sorted(lost), sorted(known & dead)

    def forget(self, hub_id: str) -> None:
        """A dead hub was reaped: stop counting its missed checks."""
        self._missing.pop(hub_id, None)
