"""`RemoteWatches`: this hub's clients waiting on a job whose home is another hub.

A duplicate submit of a job homed elsewhere becomes a `Watch` envelope; the
home answers through `Deliver` envelopes. Until the `result` (or a
`rejected`) is delivered, the watch is kept here with its submit, so that if
the home dies or restarts before answering, this hub can resolve the request
again for that client instead of leaving it without an answer. Pure
bookkeeping: `Resubmits` decides what to do with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.core.messages import Accepted, ClientOutbound, Rejected, Result, Submit
from hub.core.principal import DEFAULT_TENANT


@dataclass(slots=True)
class RemoteWatch:
    client_id: str
    job_id: str
    home: str
    submit: Submit
    tenant: str = DEFAULT_TENANT
    """The client's tenant: the request is resolved again under it."""
    accepted: bool = False
    """The client got this watch's `accepted`."""


class RemoteWatches:
    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], list[RemoteWatch]] = {}
        """(client id, request id) -> its watches, oldest first."""

    def __len__(self) -> int:
        return sum(len(watches) for watches in self._by_key.values())

    def __repr__(self) -> str:
        return f"RemoteWatches({len(self)})"

    def add(self, watch: RemoteWatch) -> None:
        self._by_key.setdefault((watch.client_id, watch.submit.request_id), []).append(watch)

    def take(self, client_id: str, request_id: str) -> RemoteWatch | None:
        """Remove and return the oldest watch of that client's request, if any."""
        key = (client_id, request_id)
        watches = self._by_key.get(key)
        if not watches:
            return None
        watch = watches.pop(0)
        if not watches:
            del self._by_key[key]
        return watch

    def deliverable(self, client_id: str, message: ClientOutbound) -> bool:
        """A home delivers a message to a client of this hub: whether it should reach the
        client. Each watch gets one `accepted` and one result or refusal (which ends
        it): a watch sent twice (a home that restarted) is answered once."""
        if isinstance(message, Result | Rejected):
            return self.take(client_id, message.request_id) is not None
        if isinstance(message, Accepted):
            for watch in self._by_key.get((client_id, message.request_id), ()):
                if not watch.accepted:
                    watch.accepted = True
                    return True
            return False
        return True

    def take_home(self, home: str) -> list[RemoteWatch]:
        """Remove and return every watch on jobs homed at `home`."""
        taken: list[RemoteWatch] = []
        for key in list(self._by_key):
            kept: list[RemoteWatch] = []
            for watch in self._by_key[key]:
                (taken if watch.home == home else kept).append(watch)
            if kept:
                self._by_key[key] = kept
            else:
                del self._by_key[key]
        return taken

    def all(self) -> list[RemoteWatch]:
        return [w for watches in self._by_key.values() for w in watches]

    def drop_client(self, client_id: str) -> None:
        """The client disconnected: nobody is left to answer."""
        for key in [k for k in self._by_key if k[0] == client_id]:
            del self._by_key[key]
