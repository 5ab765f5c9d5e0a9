"""The HTTP endpoints on the hub's port: `/livez`, `/readyz`, `/healthz`, `/metrics`,
`/v1/nodes`, `/v1/jobs/<id>`.

Transport-neutral: `HttpApi.respond` turns a request path into an
`HttpResponse` (status, body, content type); the server writes it.

`/livez` answers 200 whenever the event loop does. `/readyz` (and `/healthz`,
which answers the same) is 200 only while the hub takes submits: not draining
or stopping, and its store answering (`Cluster.store_ok`); else 503 with the
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec

from hub.cluster.cluster import Cluster
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.fleet_view import FleetView
from hub.core.metrics import Metrics
from hub.core.snapshot import NodeState
from hub.jobs.service import JobService
from hub.net.sessions import Sessions

JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: HTTPStatus
    body: bytes
    content_type: str = JSON

    @classmethod
    def json(cls, status: HTTPStatus, value: Any) -> HttpResponse:
        return cls(status, _json.encode(value))


class HttpApi:
    def __init__(
        self,
        *,
        config: HubConfig,
        fleet: FleetView,
        service: JobService,
        metrics: Metrics,
        sessions: Sessions,
        cluster: Cluster,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.fleet = fleet
        self.service = service
        self.metrics = metrics
        self.sessions = sessions

    async def respond(self, path: str) -> HttpResponse:
        """The answer to `GET path` (the query string already removed)."""
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
        if path == "/v1/nodes":
            return HttpResponse.json(
                HTTPStatus.OK, [self._node_view(state) for state in self.fleet.snapshot]
            )
        if path.startswith("/v1/jobs/"):
            record = await self.service.job_record(path[len("/v1/jobs/"):])
            if record is None:
                return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": error_codes.UNKNOWN_JOB})
            return HttpResponse.json(HTTPStatus.OK, msgspec.to_builtins(record))
        return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": "not_found", "path": path})

    def readiness(self) -> tuple[str, str]:
        """(status, reason): `ok`, `draining`, `stopping` or `unavailable`."""
        if self.sessions.stopping:
            if self.sessions.draining:
                return "draining", "the hub is draining: running jobs finish, no new ones"
            return "stopping", "the hub is shutting down"
        if not self.cluster.store_ok:
            return "unavailable", "the store (Redis) is unreachable"
        return "ok", ""

    def _node_view(self, state: NodeState) -> dict[str, Any]:
        node = self.service.nodes.registered.get(state.node_id)
        return {
            "node_id": state.node_id,
            "hub_id": state.hub_id,
            "pool": state.caps.pool,
            "status": state.status,
            "running": state.running,
            "max_concurrency": state.caps.max_concurrency,
            "capabilities": msgspec.to_builtins(state.caps.to_wire()),
            "reported": node.load if node is not None else None,
            "version": node.version if node is not None else None,
        }
