"""The HTTP endpoints on the hub's port: `/livez`, `/readyz`, `/healthz`, `/metrics`,
`/v1/nodes`, `/v1/stats`, `/v1/jobs/<id>`, the admin surface:
`POST /v1/nodes/<id>/drain` and `/undrain`, `DELETE /v1/jobs/<id>`,
`GET /v1/jobs?state=&limit=` (`hub/jobs/admin.py` acts, on whichever hub must), and
the console's files at `/ui` (hub/net/console.py).

Transport-neutral: `HttpApi.respond` turns a request path and query string
into an `HttpResponse` (status, body, content type, extra headers); the
server writes it.

`/livez` answers 200 whenever the event loop does. `/readyz` (and `/healthz`,
which answers the same) is 200 only while the hub takes submits: not draining
or stopping, and its store answering (`Cluster.store_ok`); else 503 with the
reason.

`/v1/nodes` is paged (protocol-v1.1 "Admin surface"): node_id order from the
fleet's sorted index (`FleetView.node_ids`), at most `limit` nodes a page
and at most `SCAN_LIMIT` nodes looked at (a rare filter gives short pages,
never a long one), and the header `X-Next-After` when more follow. A page
costs what its nodes cost, whatever the fleet size. `/v1/stats` reads
counters the fleet view keeps current (`FleetStats`): constant time.

The console asks `/v1/stats?include=pairs,hubs,recent` for more
than the contract's counts: slots per language pair (`FleetStats.pair_view`,
kept current like the pools), per hub with its liveness, and the
last minutes of this hub's jobs (`Metrics.recent`, a `RecentJobs`); and
`/v1/nodes?hub_id=` filters by the hub a node is connected to.

Every request already passed the gate (hub/net/auth.py) with its
`Principal`: a client token sees only its own tenant's jobs (another
tenant's is 404).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import msgspec

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.capabilities import NodeCapabilities
from hub.core.config import HubConfig
from hub.core.errors import StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.held_bytes import HeldBytes
from hub.core.metrics import Metrics
from hub.core.principal import ANONYMOUS, Principal, is_ui_path
from hub.core.snapshot import DRAINING, OFFLINE, ONLINE, NodeState
from hub.core.stages import STAGES
from hub.jobs.admin import ACTIVE, JOB_STATES, OK
from hub.jobs.service import JobService
from hub.net.console import SECURITY_HEADERS, ConsoleAssets
from hub.net.sessions import Sessions

JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

MAX_PAGE: Final = 500
"""Nodes in a `/v1/nodes` page at most (a larger `limit` is clamped to it), and without
`limit`: a page of 500 distinct capability sets is about 3 ms of CPU."""
SCAN_LIMIT: Final = 5_000
"""Nodes one page may look at while filtering (about 1.5 ms)."""
RATE_WINDOW_S: Final = 60.0
"""`jobs_per_s` is the rate over about this long."""
CAPS_CACHE_MAX: Final = 4_096
"""Wire views of capability sets kept (real fleets share a few sets)."""
MAX_JOBS_PAGE: Final = 1_000
"""`GET /v1/jobs`: records in one answer at most (default 100)."""
NODES_PREFIX: Final = "/v1/nodes/"
JOBS_PREFIX: Final = "/v1/jobs/"
_GET_ONLY: Final = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", "/v1/nodes", "/v1/stats"}
)
"""Paths that answer only GET (another method: 405)."""
ADMIN_STATUS: Final = {
    OK: HTTPStatus.NO_CONTENT,
    error_codes.UNKNOWN_NODE: HTTPStatus.NOT_FOUND,
    error_codes.UNKNOWN_JOB: HTTPStatus.NOT_FOUND,
    error_codes.JOB_FINISHED: HTTPStatus.NOT_FOUND,
    error_codes.HUB_UNREACHABLE: HTTPStatus.GATEWAY_TIMEOUT,
    error_codes.STORE_UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
}
"""The HTTP status of an admin action's outcome (`hub/jobs/admin.py`)."""
# --- the console ---
INCLUDES: Final = ("pairs", "hubs", "recent", "rooms")
ROOMS_SHOWN: Final = 50
"""Rooms in `/v1/stats?include=rooms` (those with the most members here)."""
"""What `/v1/stats?include=` may add."""
PAIRS_SHOWN: Final = 50
"""Language pairs in `/v1/stats?include=pairs` (those with the most slots)."""

_json = msgspec.json.Encoder()
_STATUSES: Final = (ONLINE, DRAINING, OFFLINE)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: HTTPStatus
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: HTTPStatus, value: Any, headers: dict[str, str] | None = None
    ) -> HttpResponse:
        return cls(status, _json.encode(value), JSON, headers or {})


class BadQuery(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadQuery(name, f"{name} is given more than once")
    return values[0]


def _int(query: dict[str, list[str]], name: str, low: int, high: int) -> int | None:
    text = _one(query, name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(name, f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise BadQuery(name, f"{name} must be in {low}..{high}, not {value}")
    return value


def _bad_query(exc: BadQuery) -> HttpResponse:
    return HttpResponse.json(HTTPStatus.BAD_REQUEST, {
        "error": error_codes.INVALID_FIELD, "message": exc.message, "path": exc.name,
    })


def _not_found(path: str) -> HttpResponse:
    return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": "not_found", "path": path})


def _not_allowed(allow: str) -> HttpResponse:
    return HttpResponse.json(
        HTTPStatus.METHOD_NOT_ALLOWED,
        {"error": error_codes.METHOD_NOT_ALLOWED, "message": f"this path takes {allow}"},
        {"Allow": allow},
    )


def _outcome(outcome: str, kind: str, name: str) -> HttpResponse:
    """An admin action's answer: 204 when done, else the outcome's status and code."""
    status = ADMIN_STATUS.get(outcome, HTTPStatus.BAD_REQUEST)
    if status is HTTPStatus.NO_CONTENT:
        return HttpResponse(status, b"")
    messages = {
        error_codes.UNKNOWN_NODE: f"no node {name} in the fleet",
        error_codes.UNKNOWN_JOB: f"no job {name}",
        error_codes.JOB_FINISHED: f"job {name} is already finished",
        error_codes.HUB_UNREACHABLE: f"the hub that holds {kind} {name} did not answer",
    }
    return HttpResponse.json(
        status, {"error": outcome, "message": messages.get(outcome, outcome)}
    )


def caps_view(caps: NodeCapabilities) -> dict[str, Any]:
    """`msgspec.to_builtins(caps.to_wire())`, built directly (several times cheaper):
    lists sorted, empty lists and labels omitted, `pool` resolved."""
    view: dict[str, Any] = {"max_concurrency": caps.max_concurrency}
    for stage in STAGES:
        entries = stage.entries(caps)
        if entries:
            view[stage.capability] = stage.view(entries)
    if caps.features:
        view["features"] = sorted(caps.features)
    view["pool"] = caps.pool
    if caps.labels:
        view["labels"] = dict(caps.labels)
    return view


class JobRate:
    """Jobs finished per second over the last `RATE_WINDOW_S`, from samples of the
    finished-jobs total taken when asked (at most one a second)."""

    def __init__(self, total: int = 0) -> None:
        self._samples: deque[tuple[float, float]] = deque([(time.monotonic(), float(total))])

    def rate(self, total: float) -> float:
        now = time.monotonic()
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        then, before = samples[0]
        if now - samples[-1][0] >= 1.0:
            samples.append((now, total))
        elapsed = now - then
        return round((total - before) / elapsed, 3) if elapsed > 0 else 0.0


class HttpApi:
    def __init__(
        self,
        *,
        config: HubConfig,
        fleet: FleetView,
        service: JobService,
        metrics: Metrics,
        sessions: Sessions,
        peers: Peers | None = None,
        console: ConsoleAssets | None = None,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.service = service
        self.metrics = metrics
        self.sessions = sessions
        self.peers = peers
        """Which hubs are alive (`include=hubs`); without one only this hub is."""
        self.console = console if console is not None else ConsoleAssets()
        self._rate = JobRate()
        self._caps: dict[NodeCapabilities, Any] = {}

    async def respond(
        self, path: str, query: str = "", principal: Principal = ANONYMOUS,
        method: str = "GET",
    ) -> HttpResponse:
        """The answer to `method path?query` for `principal`."""
        if method == "GET" and is_ui_path(path):
            asset = self.console.lookup(path, query)
            if asset is None:
                return HttpResponse.json(
                    HTTPStatus.NOT_FOUND, {"error": "not_found", "path": path},
                    dict(SECURITY_HEADERS),
                )
            return HttpResponse(HTTPStatus.OK, asset.body, asset.content_type, asset.headers)
        if method != "GET" or path.endswith(("/drain", "/undrain")) or path == "/v1/jobs":
            return await self._admin(method, path, query)
        if path == "/livez":
            return HttpResponse.json(HTTPStatus.OK, {"status": "ok", "hub_id": self.config.hub_id})
        if path in ("/readyz", "/healthz"):
            status, reason = self.readiness()
            body = {"status": status, "hub_id": self.config.hub_id}
            if reason:
                body["reason"] = reason
            return HttpResponse.json(
                HTTPStatus.OK if status == "ok" else HTTPStatus.SERVICE_UNAVAILABLE, body
            )
        if path == "/metrics":
            return HttpResponse(HTTPStatus.OK, self.metrics.render().encode(), PROMETHEUS_TEXT)
        try:
            if path == "/v1/nodes":
                return self._nodes(parse_qs(query, keep_blank_values=True))
            if path == "/v1/stats":
                query_values = parse_qs(query, keep_blank_values=True)
                return HttpResponse.json(HTTPStatus.OK, self.stats(_includes(query_values)))
        except BadQuery as exc:
            return _bad_query(exc)
        if path.startswith("/v1/jobs/"):
            record = await self.service.home.job_record(path[len("/v1/jobs/"):])
            if record is None or not principal.may_read(record.tenant):
                return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": error_codes.UNKNOWN_JOB})
            return HttpResponse.json(HTTPStatus.OK, msgspec.to_builtins(record))
        return _not_found(path)

    # --- the admin surface -----------------------------------------------------

    async def _admin(self, method: str, path: str, query: str) -> HttpResponse:
        """`POST /v1/nodes/<id>/drain|undrain`, `DELETE /v1/jobs/<id>`, `GET /v1/jobs`; 405
        for another method on a path that exists."""
        admin = self.service.admin
        if path.startswith(NODES_PREFIX) and path.endswith(("/drain", "/undrain")):
            node_id, _, action = path[len(NODES_PREFIX):].rpartition("/")
            if method != "POST":
                return _not_allowed("POST")
            if not node_id:
                return _not_found(path)
            outcome = await admin.set_draining(unquote(node_id), action == "drain")
            return _outcome(outcome, "node", unquote(node_id))
        if path.startswith(JOBS_PREFIX) and "/" not in path[len(JOBS_PREFIX):]:
            if method != "DELETE":
                return _not_allowed("GET, DELETE")
            job_id = unquote(path[len(JOBS_PREFIX):])
            try:
                outcome = await admin.cancel(job_id)
            except StoreUnavailable as exc:
                return HttpResponse.json(HTTPStatus.SERVICE_UNAVAILABLE, {
                    "error": error_codes.STORE_UNAVAILABLE, "message": str(exc),
                })
            return _outcome(outcome, "job", job_id)
        if path == "/v1/jobs":
            if method != "GET":
                return _not_allowed("GET")
            try:
                args = parse_qs(query, keep_blank_values=True)
                state = _one(args, "state") or ACTIVE
                if state not in JOB_STATES:
                    raise BadQuery("state", f"state must be one of {', '.join(JOB_STATES)}")
                limit = min(_int(args, "limit", 1, 2**31) or 100, MAX_JOBS_PAGE)
            except BadQuery as exc:
                return _bad_query(exc)
            records = admin.jobs(state, limit)
            return HttpResponse.json(HTTPStatus.OK, msgspec.to_builtins(records))
        if path in _GET_ONLY or path.startswith(
            JOBS_PREFIX
        ):
            return _not_allowed("GET")
        return _not_found(path)

    # --- /v1/nodes ------------------------------------------------------------------------

    def _nodes(self, query: dict[str, list[str]]) -> HttpResponse:
        limit = min(_int(query, "limit", 1, 2**31) or MAX_PAGE, MAX_PAGE)
        pool = _int(query, "pool", 0, 65535)
        status = _one(query, "status")
        if status is not None and status not in _STATUSES:
            raise BadQuery("status", f"status must be one of {', '.join(_STATUSES)}")
        after = _one(query, "after")
        hub_id = _one(query, "hub_id")
        states, next_after = self.fleet.page(
            after=after or None, limit=limit, pool=pool, status=status, scan=SCAN_LIMIT,
            hub_id=hub_id or None,
        )
        headers = {} if next_after is None else {"X-Next-After": next_after}
        return HttpResponse.json(
            HTTPStatus.OK, [self._node_view(state) for state in states], headers
        )

    def readiness(self) -> tuple[str, str]:
        """(status, reason): `ok`, `draining`, `stopping` or `unavailable`."""
        if self.sessions.stopping:
            if self.sessions.draining:
                return "draining", "the hub is draining: running jobs finish, no new ones"
            return "stopping", "the hub is shutting down"
        if self.peers is not None and not self.peers.store_ok:
            return "unavailable", "the store (Redis) is unreachable"
        return "ok", ""

    def _node_view(self, state: NodeState) -> dict[str, Any]:
        node = self.service.registry.registered.get(state.node_id)
        return {
            "node_id": state.node_id,
            "hub_id": state.hub_id,
            "pool": state.caps.pool,
            "status": state.status,
            "running": state.running,
            "max_concurrency": state.caps.max_concurrency,
            "capabilities": self._caps_view(state.caps),
            "reported": node.load if node is not None else None,
            "version": node.version if node is not None else None,
        }

    def _caps_view(self, caps: NodeCapabilities) -> Any:
        """The wire form of a capability set, made once per set (fleets share a few)."""
        view = self._caps.get(caps)
        if view is None:
            if len(self._caps) >= CAPS_CACHE_MAX:
                self._caps.clear()
            view = self._caps[caps] = caps_view(caps)
        return view

    # --- /v1/stats ------------------------------------------------------------------------

    def stats(self, include: frozenset[str] = frozenset()) -> dict[str, Any]:
        """`{"nodes": {status: n}, "slots": {"total", "busy"}, "jobs": {"active", "queued"},
        "jobs_per_s", "live": {"sessions"}, "pools": {pool: {"nodes", "status", "slots"}}}`,
        and what `include` names of `pairs`, `hubs`, `recent` (with it, `utterances`: the
        live sessions' utterances, cut to result, in the same form)."""
        tally = self.fleet.stats.all
        home = self.service.home
        finished = sum(self.metrics.jobs.values.values())
        out = {
            "nodes": {s: tally.by_status.get(s, 0) for s in _STATUSES},
            "slots": {"total": tally.slots_total, "busy": tally.slots_busy},
            "jobs": {"active": len(home.jobs), "queued": len(home.waiting)},
            "jobs_per_s": self._rate.rate(finished),
            "live": {"sessions": len(self.sessions.live), "rooms": len(self.sessions.live.rooms)},
            "held_bytes": self._held_view(home.table.bytes),
            "pools": {
                str(pool): t.view() for pool, t in sorted(self.fleet.stats.pools.items())
            },
        }
        if "pairs" in include:
            out["pairs"] = self._pair_view()
        if "rooms" in include:
            out["rooms"] = self.sessions.live.rooms.view(ROOMS_SHOWN)
        if "hubs" in include:
            out["hubs"] = self._hub_view()
        if "recent" in include:
            now = time.monotonic()
            out["recent"] = self.metrics.recent.view(now)
            out["utterances"] = self.metrics.recent_utterances.view(now)
        return out

    @staticmethod
    def _held_view(held: HeldBytes) -> dict[str, int]:
        return {
            "jobs": held.jobs, "outbound": held.outbound, "limit": held.limit,
            "parties": held.parties,
        }

    # --- what the console adds to /v1/stats -----------------------------------

    def _pair_view(self) -> dict[str, Any]:
        top, total = self.fleet.stats.pair_view(PAIRS_SHOWN)
        return {"total": total, "top": top}

    def _hub_view(self) -> list[dict[str, Any]]:
        """Every hub that is alive or has nodes in this hub's view, this one first."""
        tallies = self.fleet.stats.hubs
        live = self.peers.members.live if self.peers is not None else set()
        me = self.config.hub_id
        out = []
        for hub_id in sorted({me, *live, *tallies}, key=lambda h: (h != me, h)):
            tally = tallies.get(hub_id)
            view = tally.view() if tally is not None else {
                "nodes": 0, "status": {}, "slots": {"total": 0, "busy": 0},
            }
            out.append({
                "hub_id": hub_id, "self": hub_id == me, "live": hub_id == me or hub_id in live,
                **view,
            })
        return out


def _includes(query: dict[str, list[str]]) -> frozenset[str]:
    """`include=pairs,hubs,recent` (comma-separated, or repeated); 400 for another name."""
    names = {
        name.strip() for value in query.get("include", []) for name in value.split(",")
        if name.strip()
    }
    unknown = names - set(INCLUDES)
    if unknown:
        raise BadQuery(
            "include", f"include takes {', '.join(INCLUDES)}, not {', '.join(sorted(unknown))}"
        )
    return frozenset(names)
