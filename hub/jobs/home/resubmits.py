"""`Resubmits`: a submit whose `request_id` is already bound to a job, wherever it runs.

The resubmitting client becomes another *watcher* of the existing job and
gets its `accepted` (`duplicate: true`) and its one `result`: from the job if
it is active (or being created) here, from the archive if it finished, from
its home hub (a `Watch` envelope, answered with `Deliver` envelopes) if it
runs there, or by running it again here (*taking it over*) when nobody holds
it: its home died before archiving it, or the job was never recorded (a lost
binding reply, a failed commit, a binding released meanwhile).

Resolution is a bounded loop over what the binding says: taking over either
moves the binding to a new job here (atomically: one hub wins), or finds it
moved or released, and then follows it (a released one is bound afresh). It
ends with exactly one answer for the client: `accepted` (then the `result`),
or a `rejected` with the request id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.envelopes import HandedJob, Unknown, Watch
from hub.core.errors import StoreUnavailable
from hub.core.job_state import Watcher, job_home
from hub.core.messages import ClientOutbound, Rejected, Submit
from hub.core.metrics import Metrics
from hub.core.principal import DEFAULT_TENANT, Principal
from hub.jobs.home.admission import Admission
from hub.jobs.home.answers import SubmitReply
from hub.jobs.home.delivery import ClientDelivery
from hub.jobs.home.previous import PreviousRuns, Stranded
from hub.jobs.home.table import JobTable, Pending
from hub.jobs.home.watches import RemoteWatch, RemoteWatches
from hub.jobs.links import Link
from hub.store.archive import JobArchive
from hub.store.base import Store

MAX_ROUNDS: Final = 5
"""Times one resubmit follows its binding (moved by another hub, or released)."""


class Resubmits:
    def __init__(
        self,
        *,
        config: HubConfig,
        table: JobTable,
        admission: Admission,
        delivery: ClientDelivery,
        archive: JobArchive,
        peers: Peers,
        store: Store,
        metrics: Metrics,
        previous: PreviousRuns,
        reap: Callable[[str], Awaitable[None]],
    ) -> None:
        """`reap` drains a dead hub's inbox (results it never passed on) and returns once
        that is done (the cluster's `Reaper`)."""
        self.config = config
        self._reap = reap
        self.previous = previous
        self.hub_id = config.hub_id
        self.table = table
        self.admission = admission
        self.delivery = delivery
        self.archive = archive
        self.peers = peers
        self.store = store
        self.metrics = metrics
        self.remote = RemoteWatches()
        """This hub's clients waiting on jobs homed elsewhere."""

    async def resolve(
        self, link: Link, message: Submit, job_id: str, principal: Principal,
        reply: SubmitReply, *, home_unknown: bool = False,
    ) -> None:
        """Answer `message` of the principal's tenant, whose request is bound to `job_id`
        (it is the tenant's own: the binding that named it is scoped to the tenant),
        wherever the job runs (`home_unknown`: the job's live home said it does not know
        it)."""
        tenant = principal.tenant
        request_id = message.request_id
        watcher = self.delivery.watcher(link, request_id)
        for _ in range(MAX_ROUNDS):
            if await self.add_watcher(job_id, watcher, tenant=tenant, reply=reply):
                return
            home = job_home(job_id)
            if self.previous.owns(job_id):
                # An earlier run of this hub made it: still running elsewhere (watch it),
                # finished (its result was archived meanwhile), or nowhere (run it).
                await self.previous.ready()
                if await self.previous.watch(job_id, watcher, message, tenant, reply=reply):
                    return
                if await self.add_watcher(job_id, watcher, tenant=tenant, reply=reply):
                    return
            elif home != self.hub_id and not home_unknown:
                peers = self.peers
                if not peers.is_live(home):
                    await peers.refresh_live()
                if peers.is_live(home):
                    self.watch_remote(link, message, job_id, home, tenant)
                    reply.deferred()  # the home answers, through this hub
                    return
                # The home hub died: results it never archived may still sit in its inbox.
                await self._reap(home)
                if await self.add_watcher(job_id, watcher, tenant=tenant, reply=reply):
                    return
            # Nobody holds the job: run it here, unless the binding moved meanwhile.
            bound_to = await self.take_over(link, message, job_id, principal, reply)
            if bound_to is None:
                return
            job_id, home_unknown = bound_to, False
        # Bound, but it kept moving: let the client try again later.
        reply.rejected(
            error_codes.DUPLICATE_IN_FLIGHT,
            f"request {request_id} is already being handled; submit it again later",
        )

    async def take_over(
        self, link: Link, message: Submit, job_id: str, principal: Principal,
        reply: SubmitReply,
    ) -> str | None:
        """Run here, under a new job id, a request of `tenant` bound to `job_id` that
        nobody holds.

        Its attempts were revoked when its home's death was noticed
        (`NodeOwner.home_lost` on every hub), or it never reached a node (a
        Dispatch that may have left with a lost binding reply is tracked here until
        its attempt ends: `Admission.keep_unconfirmed`), so it is not running
        anywhere. The binding moves atomically (one hub wins); if
        it had been released, it is bound afresh. Returns None when the job was
        created here (the client is answered), else the job the request is bound
        to now (another hub moved it first)."""
        config = self.config
        tenant = principal.tenant
        ttl_ms = config.idempotency_ttl_ms + config.job_budget_ms(message.timeout_ms)
        new_job_id = self.table.new_job_id()
        request_id = message.request_id
        store = self.store
        # Until the job exists, duplicates of it wait here (as for a new submit).
        pending = self.table.pending[new_job_id] = Pending()
        try:
            if await store.rebind_request(request_id, job_id, new_job_id, ttl_ms, tenant=tenant):
                self.metrics.submits.inc("adopted")
            else:
                bound = await store.bind_request(request_id, new_job_id, ttl_ms, tenant=tenant)
                if bound is not None:
                    return bound
            pending.early = None
            rejected = await self.admission.create(link, message, new_job_id, reply, principal)
        except BaseException:
            for waiting in pending.watchers:  # a duplicate that arrived meanwhile
                self.delivery.to_watcher(waiting, _failed(waiting.request_id))
            raise
        finally:
            del self.table.pending[new_job_id]
        for waiting in pending.watchers:
            if rejected is not None:
                self.delivery.to_watcher(waiting, rejected)
            else:
                await self.add_watcher(new_job_id, waiting)
        return None

    async def add_watcher(
        self, job_id: str, watcher: Watcher, *, again: bool = False, tenant: str | None = None,
        reply: SubmitReply | None = None,
    ) -> bool:
        """Have `watcher` get the job's `accepted` (duplicate) and its one `result`.

        False when this hub knows nothing of the job (not active here, no record), or
        (with `tenant`) the active job is another tenant's: a duplicate joins only a
        job of its own tenant. With `again` (a watch sent once more) a watcher the job
        already has is not added twice. `reply`: the watcher's own submit, here (its
        `accepted` goes through it)."""
        pending = self.table.pending.get(job_id)
        if pending is not None:
            if not (again and watcher in pending.watchers):
                pending.watchers.append(watcher)  # answered once the job exists (`Submits`)
            if reply is not None:
                reply.deferred()
            return True
        job = self.table.get(job_id)
        if job is not None:
            if tenant is not None and job.tenant != tenant:
                return False
            if not (again and watcher in job.watchers):
                job.watchers.append(watcher)
                if reply is not None:
                    reply.accepted(job_id, job.node_id, queued=job.queued)
                else:
                    self.delivery.accepted(watcher, job_id, job.node_id, queued=job.queued)
            return True
        stored = await self.archive.load(job_id)
        if stored is None or stored.result is None:
            return False  # (a record's tenant is not checked: a replayed result archived
            # by a hub that never saw the job's dispatch has none; the binding that named
            # `job_id` is the tenant's own)
        if reply is not None:
            reply.accepted(job_id, stored.result.node_id)
        else:
            self.delivery.accepted(watcher, job_id, stored.result.node_id)
        self.delivery.result(watcher, stored.result)
        return True

    # --- watches at other homes ----------------------------------------------------------

    def watch_remote(
        self, link: Link, message: Submit, job_id: str, home: str,
        tenant: str = DEFAULT_TENANT, *, again: bool = False,
    ) -> None:
        """Ask the job's (live) home to answer this client; kept until it has."""
        self.remote.add(RemoteWatch(link.peer_id, job_id, home, message, tenant=tenant))
        self.peers.send(home, Watch(
            self.hub_id, job_id=job_id, client_id=link.peer_id, submit=message, tenant=tenant,
            again=again,
        ))

    def deliverable(self, client_id: str, message: ClientOutbound) -> bool:
        """A home delivers a message to one of this hub's clients: pass it on? (Once per
        watch: see `RemoteWatches.deliverable`.)"""
        return self.remote.deliverable(client_id, message)

    def client_gone(self, client_id: str) -> None:
        self.remote.drop_client(client_id)

    async def resolve_again(
        self, watcher: Watcher, submit: Submit, job_id: str, tenant: str = DEFAULT_TENANT
    ) -> None:
        """The job `watcher` waited on is gone without a result (an earlier run's job
        whose attempt was lost): resolve its request (of `tenant`) again, here or at its
        hub."""
        if watcher.hub_id == self.hub_id:
            link = self.delivery.clients.get(watcher.client_id)
            if link is not None:
                await self._answering(link, submit, job_id, tenant)
        elif self.peers.is_live(watcher.hub_id):
            self.peers.send(watcher.hub_id, Unknown(
                self.hub_id, job_id=job_id, client_id=watcher.client_id, submit=submit,
                tenant=tenant,
            ))

    async def resolve_stranded(self, job_id: str, stranded: Stranded) -> None:
        """An earlier run's job runs nowhere now: resolve each of its resubmits again."""
        for watcher, submit, tenant in stranded:
            await self.resolve_again(watcher, submit, job_id, tenant)

    async def home_unknown(self, client_id: str, job_id: str, submit: Submit) -> None:
        """The home of a watched job does not know it: resolve the request again here
        (for the tenant the watch was made for)."""
        watch = self.remote.take(client_id, submit.request_id)
        link = self.delivery.clients.get(client_id)
        if watch is None or link is None:
            return
        await self._answering(link, submit, job_id, watch.tenant, home_unknown=True)

    async def home_lost_watch(self, client_id: str, job_id: str, submit: Submit) -> None:
        """A `Watch` of ours was found unread in a dead home's inbox."""
        watch = self.remote.take(client_id, submit.request_id)
        link = self.delivery.clients.get(client_id)
        if watch is None or link is None:
            return  # answered already, being resolved (`home_lost`), or the client left
        await self._answering(link, submit, job_id, watch.tenant)

    async def home_lost(self, hub_id: str) -> None:
        """A home died: every client of ours waiting on it gets its request resolved again
        (from what its inbox held, or by running the job here)."""
        for watch in self.remote.take_home(hub_id):
            link = self.delivery.clients.get(watch.client_id)
            if link is not None:
                await self._answering(link, watch.submit, watch.job_id, watch.tenant)

    def resend_watches(self) -> None:
        """The store restarted empty: watches (and answers to them) in flight through it
        are gone. Ask every home again (it ignores a watcher it has)."""
        for home in {w.home for w in self.remote.all()}:
            self.home_restarted(home)

    def home_restarted(self, hub_id: str) -> None:
        """A home restarted under its id: it may have lost the watches its previous run
        had read. Ask it again (it ignores those it has)."""
        for watch in self.remote.take_home(hub_id):
            link = self.delivery.clients.get(watch.client_id)
            if link is not None:
                self.watch_remote(
                    link, watch.submit, watch.job_id, hub_id, watch.tenant, again=True
                )

    async def take_handed(self, sender: str, jobs: list[HandedJob]) -> None:
        """A draining hub's unfinished jobs: each runs here under its request id (bound
        to a new job, `take_over`), unless a resubmit moved the request first. Nobody
        watches them here until their clients resubmit; the result is archived."""
        link = Unwatched(f"handoff:{sender}")
        for handed in jobs:
            submit = handed.submit
            reply = SubmitReply(
                link, submit, self.metrics, self.admission.attempts.log, duplicate=True
            )
            principal = self.delivery.principal(link.peer_id, handed.tenant)
            try:
                await self.take_over(link, submit, handed.job_id, principal, reply)
            except Exception:
                logger.exception(
                    "taking over request {} from draining hub {} failed",
                    submit.request_id, sender,
                )
        if jobs:
            logger.info("took over {} unfinished jobs of draining hub {}", len(jobs), sender)

    async def _answering(
        self, link: Link, submit: Submit, job_id: str, tenant: str,
        *, home_unknown: bool = False,
    ) -> None:
        """`resolve` for a client whose submit was taken earlier, and handed on (its
        reply deferred): this is its answer. A store outage now is that answer
        (`rejected` `store_unavailable`), not an inbox failure."""
        reply = SubmitReply(
            link, submit, self.metrics, self.admission.attempts.log, duplicate=True
        )
        principal = self.delivery.principal(link.peer_id, tenant)
        try:
            await self.resolve(link, submit, job_id, principal, reply, home_unknown=home_unknown)
        except Exception as exc:
            logger.opt(exception=exc).warning("resolving {} failed", submit.request_id)
            failed = _failed(submit.request_id, exc)
            if not reply.answered:
                reply.rejected(failed.code, failed.message)


class Unwatched:
    """The `Link` of jobs taken over from a draining hub: their submitter is gone (its
    clients resubmit, and watch them then), so what the job path says to it is dropped."""

    __slots__ = ("peer_id",)

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id

    async def send(self, message: msgspec.Struct) -> None:
        return None

    def queue(self, message: msgspec.Struct, *, flush: bool = False) -> None:
        return None

    async def close(self, code: int, reason: str) -> None:
        return None

    def abort(self) -> None:
        return None


def _failed(request_id: str, exc: BaseException | None = None) -> Rejected:
    """The answer to a submit whose handling failed: the store's outage, or a bug."""
    if isinstance(exc, StoreUnavailable):
        return Rejected(
            request_id=request_id, code=error_codes.STORE_UNAVAILABLE, message=str(exc)
        )
    return Rejected(
        request_id=request_id, code=error_codes.INTERNAL_ERROR, message="the hub failed"
    )
