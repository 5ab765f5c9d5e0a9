"""`Membership`: which hubs count as alive, which are excluded, and when one is dead.

A hub is alive while its presence is seen in the store, or while it speaks to
this hub (an envelope or a fleet update proves it alive until the next
presence check says otherwise). It is dead after missing from presence on
`GRACE_TICKS` checks in a row, so that a store restart (every presence key
gone at once) declares nobody dead. A dead hub is *buried* once (its work is
failed over) and stays buried until it announces itself again.

Faster than that, a hub whose liveness beats stopped (`Store.beat`, every few
hundred ms) is *excluded*: its nodes are not selected, although nothing of its
work is failed over yet; it is included again as soon as it beats. The beats
also carry each hub's boot token: a hub seen with a new one *restarted* under
its id (its previous run's in-memory state is gone).

Pure bookkeeping: the presence and beat readings come from the caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Final

GRACE_TICKS: Final = 3
"""Presence checks a hub must miss in a row before it is declared dead."""


@dataclass(slots=True)
class BeatChanges:
    """What one reading of the beats changed (each list sorted)."""

    excluded: list[str] = field(default_factory=list)
    """Hubs that stopped answering: their nodes leave selection."""
    included: list[str] = field(default_factory=list)
    """Excluded hubs that answer again."""
    restarted: list[str] = field(default_factory=list)
    """Hubs seen with a new boot token: their previous run is gone."""
    first_seen: list[str] = field(default_factory=list)
    """Hubs whose beats (and boot token) this hub sees for the first time."""


class Membership:
    __slots__ = ("_buried", "_missing", "boots", "excluded", "hub_id", "live")

    def __init__(self, hub_id: str) -> None:
        self.hub_id = hub_id
        self.live: set[str] = {hub_id}
        self._buried: set[str] = set()
        self._missing: Counter[str] = Counter()
        self.excluded: set[str] = set()
        """Hubs whose beats stopped: not selected from."""
        self.boots: dict[str, str] = {}
        """Each other hub's boot token as last seen."""

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

    def revived(self, present: Set[str]) -> list[str]:
        """Buried hubs whose presence is back (the same run, woken from a freeze, or
        reachable again), sorted; `check` then counts them alive."""
        return sorted(self._buried & present)

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

    def is_excluded(self, hub_id: str) -> bool:
        return hub_id in self.excluded

    def beats(
        self, beats: Mapping[str, tuple[int, str]], threshold_ms: int, *, exclude: bool = True
    ) -> BeatChanges:
        """One reading of every hub's (ms since its last beat, boot token): hubs silent
        for more than `threshold_ms` are excluded (unless not `exclude`: this reading
        cannot tell), those beating again included, those with a new boot token
        restarted."""
        changes = BeatChanges()
        for hub_id, (age_ms, boot) in sorted(beats.items()):
            if hub_id == self.hub_id:
                continue
            known = self.boots.get(hub_id)
            if boot and known != boot:
                self.boots[hub_id] = boot
                (changes.first_seen if known is None else changes.restarted).append(hub_id)
            if age_ms > threshold_ms:
                if exclude and hub_id not in self.excluded:
                    self.excluded.add(hub_id)
                    changes.excluded.append(hub_id)
            elif hub_id in self.excluded:
                self.excluded.discard(hub_id)
                changes.included.append(hub_id)
        for hub_id in sorted(self.excluded - beats.keys()):  # dropped from the beats: gone
            self.excluded.discard(hub_id)
        return changes

    def restarted(self, hub_id: str, boot: str) -> bool:
        """A hub told us its boot token (an envelope); True when it is a new one."""
        known = self.boots.get(hub_id)
        self.boots[hub_id] = boot
        return known is not None and known != boot
