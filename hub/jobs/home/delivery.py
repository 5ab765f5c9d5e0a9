"""`ClientDelivery`: getting a message to a job's watchers, wherever they are connected.

A watcher is a client session waiting for a job's `result`: the submitter,
and every duplicate submit of the same request. It is connected to this hub
(its `Link` is registered here) or to another (the message travels there as a
`Deliver` envelope, if that hub is alive). A watcher whose connection is gone
misses the message; it gets the result by submitting its request again.
"""

from __future__ import annotations

import dataclasses

import msgspec

from hub.cluster.peers import Peers
from hub.core.envelopes import Deliver
from hub.core.job_state import Job, Watcher
from hub.core.messages import Accepted, ClientOutbound, Progress, Result
from hub.core.principal import ANONYMOUS, Principal
from hub.jobs.links import Link


class ClientDelivery:
    __slots__ = ("_internal", "_peers", "_principals", "clients", "hub_id")

    def __init__(self, *, hub_id: str, peers: Peers) -> None:
        self.hub_id = hub_id
        self._peers = peers
        self.clients: dict[str, Link] = {}
        """Client sessions connected to this hub, by peer id."""
        self._principals: dict[str, Principal] = {}
        self._internal: set[str] = set()
        """Links of this hub's own (a live session's utterances, a room's jobs)."""

    def __repr__(self) -> str:
        return f"ClientDelivery({len(self.clients)} clients)"

    def connected(
        self, link: Link, principal: Principal = ANONYMOUS, *, internal: bool = False
    ) -> None:
        """A client (`internal`: a submitter inside this hub, not a connection)."""
        self.clients[link.peer_id] = link
        self._principals[link.peer_id] = principal
        if internal:
            self._internal.add(link.peer_id)

    def disconnected(self, link: Link) -> None:
        # Jobs go on: the client may reconnect and resubmit its request_id to get the result.
        self.clients.pop(link.peer_id, None)
        self._principals.pop(link.peer_id, None)
        self._internal.discard(link.peer_id)

    @property
    def connections(self) -> int:
        """Client connections (not this hub's own submitters)."""
        return len(self.clients) - len(self._internal)

    def principal(self, client_id: str, tenant: str) -> Principal:
        """Who the client session `client_id` of this hub speaks for (a session of
        `tenant`, as its watch said, if it is gone)."""
        principal = self._principals.get(client_id)
        if principal is not None and principal.tenant == tenant:
            return principal
        return dataclasses.replace(ANONYMOUS, tenant=tenant)

    def watcher(self, link: Link, request_id: str) -> Watcher:
        """The watcher of a submit received on `link`."""
        return Watcher(self.hub_id, link.peer_id, request_id)

    def to_watcher(self, watcher: Watcher, message: ClientOutbound) -> None:
        if watcher.hub_id == self.hub_id:
            link = self.clients.get(watcher.client_id)
            if link is not None:
                link.queue(message)
        elif self._peers.is_live(watcher.hub_id):
            self._peers.send(
                watcher.hub_id, Deliver(self.hub_id, client_id=watcher.client_id, message=message)
            )

    def to_client(self, client_id: str, message: ClientOutbound) -> None:
        """A message for a client session of this hub (delivered from another hub)."""
        link = self.clients.get(client_id)
        if link is not None:
            link.queue(message)

    def accepted(
        self, watcher: Watcher, job_id: str, node_id: str, *, queued: bool = False
    ) -> None:
        """A duplicate submit's `accepted` (`duplicate: true`)."""
        self.to_watcher(
            watcher,
            Accepted(
                request_id=watcher.request_id, job_id=job_id, node_id=node_id, duplicate=True,
                queued=queued,
            ),
        )

    def result(self, watcher: Watcher, result: Result) -> None:
        """The job's result, addressed to the watcher's own request id."""
        if watcher.request_id != result.request_id:
            result = msgspec.structs.replace(result, request_id=watcher.request_id)
        self.to_watcher(watcher, result)

    def progress(self, job: Job, progress: Progress) -> None:
        """Progress goes once to each client session watching, not once per submit."""
        told: set[tuple[str, str]] = set()
        for watcher in job.watchers:
            if (watcher.hub_id, watcher.client_id) not in told:
                told.add((watcher.hub_id, watcher.client_id))
                self.to_watcher(watcher, progress)
