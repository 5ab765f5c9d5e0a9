"""Who a session or an HTTP request speaks for: the `Principal` a token's claims make.

A token (protocol-v1.1, "Authentication and tenancy") carries `sub`, `role`
(`node`, `client` or `admin`), `exp`, `tenant` (default `"default"`) and,
for role `node`, `node_ids`: glob patterns of the node ids it may register
(default `[sub]`). `principal_from_claims` checks claims that a verified
token already passed the signature and `exp` checks with (hub/net/auth.py);
it raises `ClaimsError` with a message fit for the peer. Which endpoint takes
which role is decided here too (`required_roles`), so that the rule is pure
and tested on its own. Without authentication every peer is `ANONYMOUS`.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

from hub.core.errors import HubError

NODE: Final = "node"
CLIENT: Final = "client"
ADMIN: Final = "admin"
ROLES: Final = frozenset({NODE, CLIENT, ADMIN})
DEFAULT_TENANT: Final = "default"

TENANT_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
"""A tenant name: no `:` (it is part of the Redis binding key), no spaces, at most 128."""
MAX_NODE_ID_PATTERNS: Final = 1024
MAX_CLAIM_CHARS: Final = 256

OPEN_PATHS: Final = frozenset({"/healthz", "/livez", "/readyz"})
"""Paths served without a token (probes of load balancers and orchestrators)."""
NODE_PATH: Final = "/v1/node"
CLIENT_PATH: Final = "/v1/client"
METRICS_PATH: Final = "/metrics"
JOB_PATH_PREFIX: Final = "/v1/jobs/"
UI_PATH: Final = "/ui"
"""The console's page and its static files: no data in them, so no token;
the page's own data requests carry the admin token."""


def is_ui_path(path: str) -> bool:
    """`/ui` and everything under `/ui/`."""
    return path == UI_PATH or path.startswith(UI_PATH + "/")


class ClaimsError(HubError):
    """A verified token whose claims the hub cannot use (a 401 at the handshake)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session or a request speaks for."""

    sub: str
    role: str
    tenant: str = DEFAULT_TENANT
    node_ids: tuple[str, ...] = ()
    """Glob patterns (`fnmatch`, case-sensitive) of the node ids a node token may register."""
    exp: float | None = None
    """The token's expiry, Unix epoch seconds; None without authentication."""
    authenticated: bool = False
    """A verified token made it: it names who speaks, so a tenant's peers are one
    party (their queue share) and a node's new session may replace its old one."""

    def share_key(self, session_key: str) -> str:
        """Whose fair share of the admission queue a waiting job takes: its tenant's
        with authentication; without it every client session (`session_key`) is a
        party of its own (the default tenant is everyone)."""
        return self.tenant if self.authenticated else session_key

    def party(self, session: object) -> object:
        """Whose hub time a session's frames spend (`FairTime`): its token's with
        authentication (one token's sessions, including the next one it opens, are one
        party), else the session's own."""
        return (self.role, self.tenant, self.sub) if self.authenticated else session

    @property
    def may_take_over(self) -> bool:
        """Whether a `register` for a node id with a live session replaces that session:
        only a token proves the new session is the same node (without authentication a
        second session for the id is a conflict, the first one stays)."""
        return self.authenticated

    def may_register(self, node_id: str) -> bool:
        return any(fnmatchcase(node_id, pattern) for pattern in self.node_ids)

    def may_read(self, tenant: str) -> bool:
        """Whether this principal may see a job of `tenant` (admins see every tenant)."""
        return self.role == ADMIN or tenant == self.tenant


ANONYMOUS: Final = Principal(sub="", role=ADMIN, tenant=DEFAULT_TENANT, node_ids=("*",))
"""Every peer with `auth = "none"`: any endpoint, any node id, the default tenant."""


def _text(claims: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = claims.get(name, default)
    if not isinstance(value, str) or not value:
        raise ClaimsError(f"claim {name!r} must be a non-empty string")
    if len(value) > MAX_CLAIM_CHARS:
        raise ClaimsError(f"claim {name!r} is longer than {MAX_CLAIM_CHARS} characters")
    return value


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """The principal of a verified token's claims; `ClaimsError` when they do not fit."""
    sub = _text(claims, "sub")
    role = _text(claims, "role")
    if role not in ROLES:
        raise ClaimsError(f"claim 'role' must be one of {sorted(ROLES)}, not {role!r}")
    tenant = _text(claims, "tenant", DEFAULT_TENANT)
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ClaimsError(
            "claim 'tenant' must be 1..128 characters of letters, digits and ._@- "
            "(starting with a letter or digit)"
        )
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise ClaimsError("claim 'exp' must be a number")
    node_ids: tuple[str, ...] = ()
    if role == NODE:
        raw = claims.get("node_ids", [sub])
        if (
            not isinstance(raw, list)
            or not raw
            or len(raw) > MAX_NODE_ID_PATTERNS
            or not all(isinstance(p, str) and 0 < len(p) <= MAX_CLAIM_CHARS for p in raw)
        ):
            raise ClaimsError(
                f"claim 'node_ids' must be a list of 1..{MAX_NODE_ID_PATTERNS} non-empty "
                "strings"
            )
        node_ids = tuple(raw)
    return Principal(
        sub=sub, role=role, tenant=tenant, node_ids=node_ids, exp=float(exp), authenticated=True
    )


def required_roles(
    path: str, *, method: str = "GET", metrics_public: bool = False
) -> frozenset[str]:
    """The roles that may use `method path` (no query string); empty: no token needed.

    `/v1/node` takes `node`; `/v1/client` takes `client` or `admin`;
    `GET /v1/jobs/<id>` takes `client` (its own tenant's jobs) or `admin`;
    `/healthz`, `/livez`, `/readyz` are open, `/metrics` too with
    `metrics_public`, and `GET /ui` and `GET /ui/...` (the console's static
    files); every other path (the inspection and admin endpoints,
    and unknown paths) takes `admin`.
    """
    if path in OPEN_PATHS or (metrics_public and path == METRICS_PATH):
        return frozenset()
    if method == "GET" and is_ui_path(path):
        return frozenset()
    if path == NODE_PATH:
        return frozenset({NODE})
    if path == CLIENT_PATH:
        return frozenset({CLIENT, ADMIN})
    if (
        method == "GET"
        and path.startswith(JOB_PATH_PREFIX)
        and "/" not in path[len(JOB_PATH_PREFIX):]
    ):
        return frozenset({CLIENT, ADMIN})
    return frozenset({ADMIN})


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` keeps the port on this machine (`localhost`, 127.0.0.0/8,
    ::1); `0.0.0.0`, `::`, an empty host and any other name or address are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
