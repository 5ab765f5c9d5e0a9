"""`HeldBytes`: the payload and result bytes the hub holds for its peers, against one budget.

Per-session limits bound what one connection may hold, not what many may
hold together: two client sessions queueing megabyte payloads behind a full
node held two gigabytes for a day. This is the hub-wide budget,
`max_held_payload_bytes`: the payloads of the jobs this hub is home to
(waiting or running, until their result) and the bytes queued for peers that
fell behind (`SlowPeers` reports those). A submit that would take the total
past the budget is refused `overloaded`, and once half of it is in use each
*party* (a tenant with authentication, else a client session: the admission
queue's fair share) may hold at most its share: the budget divided by the
parties holding bytes *plus one*, so that there is always room for a party
that comes next. One party alone holds at most half the budget; one party's
backlog never starves the others.

Pure bookkeeping: sizes come from the caller (a submit's frame length).
"""

from __future__ import annotations


class HeldBytes:
    __slots__ = ("_parties", "jobs", "limit", "outbound")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.jobs = 0
        """Payload bytes of the jobs held."""
        self.outbound = 0
        """Bytes queued for peers that fell behind (over `max_outbound_bytes`)."""
        self._parties: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"HeldBytes({self.total}/{self.limit}, {len(self._parties)} parties)"

    @property
    def total(self) -> int:
        return self.jobs + self.outbound

    def held_by(self, party: str) -> int:
        return self._parties.get(party, 0)

    @property
    def parties(self) -> int:
        """Parties holding job bytes now."""
        return len(self._parties)

    def hold(self, party: str, size: int) -> None:
        if size <= 0:
            return
        self.jobs += size
        self._parties[party] = self._parties.get(party, 0) + size

    def release(self, party: str, size: int) -> None:
        if size <= 0:
            return
        self.jobs -= size
        left = self._parties.get(party, 0) - size
        if left > 0:
            self._parties[party] = left
        else:
            self._parties.pop(party, None)

    def refusal(self, party: str, size: int) -> str | None:
        """Why `party` may not hold `size` more bytes now; None when it may."""
        total = self.total + size
        if total > self.limit:
            return (
                f"the hub holds {self.total} bytes of payloads and queued results; this "
                f"submit's {size} would pass max_held_payload_bytes ({self.limit}); "
                "retry later"
            )
        if total <= self.limit // 2:
            return None
        mine = self._parties.get(party, 0)
        others = len(self._parties) - (mine > 0)
        share = self.limit // (others + 2)
        if mine + size > share:
            return (
                f"this party holds {mine} bytes of payloads; with {others} other parties "
                f"holding them its share of max_held_payload_bytes is {share} (room is "
                "kept for one more); wait for results"
            )
        return None
