"""`FairTime`: how long a party waits before the hub reads its next frame.

The hub handles one frame at a time and cannot preempt one. Two rules share
its time between peers:

- **Turns.** A peer whose frames keep coming is handled frame after frame; after
  `TURN_SLICE_S` of hub time on them the others take their turn first. That
  bounds what cheap frames (a client's thousands of small submits) cost
  everyone else: at most one slice.
- **Expensive frames pay for themselves.** A frame that takes milliseconds
  (a 0.5 MiB capability list, a submit whose payload is a long list) holds
  every other peer's frame for that long, whatever the turns. So while another
  party is active, the sender of a frame that took more than a slice waits
  `PAUSE_FACTOR` times the hub time it took before its next frame is read: a
  stream of expensive frames gets at most 1 / (1 + `PAUSE_FACTOR`) of the hub,
  and the rest stays free, so another peer's frame rarely finds one in
  progress. Its frames wait in its own connection, then in its socket (TCP
  backpressure): the flood costs the flooder latency, and nobody is closed for
  being fast. Alone on the hub (no other party's frame for `CONTENDED_S`) a
  party never waits: the rule holds back nothing the others could use.

The wait is the connection's, and its *party*'s (`Principal.party`: a token, or
without authentication the session) for the first frame of the party's next
connection: a token that reconnects for every frame (a node registering the
largest capabilities in a loop) waits there too, while the other sessions of
a token many nodes share are not held up by one node's frames. Whether the hub
is contended is a matter of parties.

Only frames of `HEAVY_FRAME_BYTES` or more are measured (their decode alone
takes tens of microseconds; a smaller frame's cost is bounded by the turns),
in CPU time of the hub's thread around the frame's decode and handling: time
the handling spent waiting (a store round trip) is not its cost. A handling
that was suspended while other frames ran is charged its decode only: the
rest of that time was theirs.

Pure: the caller passes the times (`perf_counter` seconds).
"""

from __future__ import annotations

from typing import Final

TURN_SLICE_S: Final = 0.0005
"""Hub time one peer's frames may take before the other peers get a turn."""
PAUSE_FACTOR: Final = 4.0
"""How many times its cost an expensive frame's sender waits."""
CONTENDED_S: Final = 0.1
"""Another party's frame this recent makes the hub contended."""
MAX_PAUSE_S: Final = 1.0
"""The longest wait after one frame."""
HEAVY_FRAME_BYTES: Final = 16 * 1024
"""Frames this big or bigger are measured (characters for a text frame)."""
PRUNE_AT: Final = 1024
"""Parties owing a wait past which those whose wait is over are forgotten."""


class FairTime:
    """Which party's frame began last, and how long each party still waits."""

    __slots__ = ("_last_at", "_last_party", "_other_at", "frames", "owed", "paused_s")

    def __init__(self) -> None:
        self._last_party: object = None
        self._last_at = float("-inf")
        self._other_at = float("-inf")
        """When the most recent party other than `_last_party` began a frame."""
        self.owed: dict[object, float] = {}
        """Peer or party -> until when its next frame waits (empty nearly always: the
        frame loop looks at it before asking `wait_s`)."""
        self.frames = 0
        """Frames begun, hub-wide: a frame whose handling saw it move was suspended."""
        self.paused_s = 0.0
        """Total of the waits imposed so far."""

    def __len__(self) -> int:
        """Parties that owe a wait (or did until recently)."""
        return len(self.owed)

    def wait_s(self, peer: object, now_s: float, *, party: object = None) -> float:
        """How long `peer`'s next frame must wait from `now_s` (0: go ahead); with
        `party` (a connection's first frame), what that party owes too."""
        if not self.owed:  # every frame asks: nobody owes anything, nearly always
            return 0.0
        wait = self._owed_by(peer, now_s)
        if party is not None:
            wait = max(wait, self._owed_by(party, now_s))
        return wait

    def forget(self, peer: object) -> None:
        """`peer`'s connection ended: what it owed goes (its party's debt stays)."""
        self.owed.pop(peer, None)

    def _owed_by(self, key: object, now_s: float) -> float:
        until = self.owed.get(key)
        if until is None:
            return 0.0
        if until <= now_s:
            del self.owed[key]
            return 0.0
        return until - now_s

    def begin(self, party: object, now_s: float) -> int:
        """A frame of `party` is handled from `now_s`; returns the mark `end` takes."""
        if party != self._last_party:
            self._other_at = self._last_at
            self._last_party = party
        self._last_at = now_s
        self.frames += 1
        return self.frames

    def contended(self, party: object, now_s: float) -> bool:
        """Whether a party other than `party` began a frame within `CONTENDED_S`."""
        if party != self._last_party:
            return now_s - self._last_at < CONTENDED_S
        return now_s - self._other_at < CONTENDED_S

    def end(
        self, peer: object, party: object, mark: int, *, cpu_s: float, decode_s: float,
        started_s: float, now_s: float,
    ) -> float:
        """A heavy frame of `peer` (of `party`, begun at `started_s` with mark `mark`)
        took `cpu_s` of the hub's CPU time, `decode_s` of it to decode, and was handled
        by `now_s`: how long the peer, and its party's next connection, wait (recorded
        for `wait_s`). Whether others were held up is judged as the frame began."""
        # Suspended while other frames ran (the mark moved): only the decode was surely
        # its own.
        cost_s = cpu_s if self.frames == mark else decode_s
        if cost_s <= TURN_SLICE_S or not self.contended(party, started_s):
            return 0.0
        pause_s = min(MAX_PAUSE_S, cost_s * PAUSE_FACTOR)
        self.paused_s += pause_s
        owed = self.owed
        if len(owed) >= PRUNE_AT:
            for key in [key for key, until in owed.items() if until <= now_s]:
                del owed[key]
        until = now_s + pause_s
        owed[peer] = until
        owed[party] = max(owed.get(party, 0.0), until)
        return pause_s
