"""The pure parts of authentication: claims to `Principal`, roles per path, node id globs, the
loopback check, and URL redaction."""

from __future__ import annotations

from typing import Any

import pytest

from hub.core.principal import (
    ANONYMOUS,
    ClaimsError,
    Principal,
    is_loopback_host,
    principal_from_claims,
    required_roles,
)
from hub.core.redact import redact_url

EXP = 2_000_000_000


def claims(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"sub": "n1", "role": "node", "exp": EXP}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def test_claims_make_a_principal_with_defaults() -> None:
    node = principal_from_claims(claims())
    assert node == Principal(sub="n1", role="node", tenant="default", node_ids=("n1",),
                             exp=float(EXP), authenticated=True)
    client = principal_from_claims(claims(role="client", tenant="acme", node_ids=["x"]))
    assert (client.tenant, client.node_ids) == ("acme", ())  # node_ids only for nodes
    assert not client.may_register("x")


def test_a_token_decides_takeover_and_queue_shares() -> None:
    """Tenancy policy comes from the principal: a token's tenant is one party of the
    queue and may take its node sessions over; without a token, each session is its
    own party and a second session for a node id is a conflict."""
    client = principal_from_claims(claims(role="client", tenant="acme"))
    assert client.share_key("hub:c1") == "acme"
    assert client.may_take_over
    assert ANONYMOUS.share_key("hub:c1") == "hub:c1"
    assert not ANONYMOUS.may_take_over


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"sub": ""}, "'sub'"), ({"sub": 7}, "'sub'"), ({"sub": "x" * 300}, "longer"),
        ({"role": "root"}, "'role'"), ({"role": None}, "'role'"),
        ({"tenant": "a:b"}, "'tenant'"), ({"tenant": " acme"}, "'tenant'"),
        ({"tenant": "x" * 129}, "'tenant'"), ({"exp": "soon"}, "'exp'"), ({"exp": True}, "'exp'"),
        ({"node_ids": "gpu-*"}, "'node_ids'"), ({"node_ids": []}, "'node_ids'"),
        ({"node_ids": ["ok", ""]}, "'node_ids'"), ({"node_ids": ["a"] * 1025}, "'node_ids'"),
    ],
)
def test_claims_that_do_not_fit_are_refused(bad: dict[str, Any], needle: str) -> None:
    values = claims()
    values.update(bad)
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ClaimsError, match=needle):
        principal_from_claims(values)


def test_node_id_globs_are_case_sensitive_fnmatch() -> None:
    node = principal_from_claims(claims(node_ids=["gpu-??", "eu-*-a100", "exact"]))
    assert node.may_register("gpu-01") and node.may_register("eu-west-a100")
    assert node.may_register("exact")
    assert not node.may_register("gpu-001") and not node.may_register("GPU-01")
    assert not node.may_register("exact2")
    assert ANONYMOUS.may_register("anything")


def test_tenant_visibility() -> None:
    acme = Principal(sub="a", role="client", tenant="acme")
    assert acme.may_read("acme") and not acme.may_read("globex") and not acme.may_read("")
    assert Principal(sub="o", role="admin", tenant="ops").may_read("acme")


@pytest.mark.parametrize(
    ("method", "path", "roles"),
    [
        ("GET", "/healthz", set()), ("GET", "/livez", set()), ("GET", "/readyz", set()),
        ("GET", "/v1/node", {"node"}), ("GET", "/v1/client", {"client", "admin"}),
        ("GET", "/v1/jobs/h.1.2", {"client", "admin"}), ("DELETE", "/v1/jobs/h.1.2", {"admin"}),
        ("GET", "/v1/jobs", {"admin"}), ("GET", "/v1/jobs/a/b", {"admin"}),
        ("GET", "/v1/nodes", {"admin"}), ("POST", "/v1/nodes/n1/drain", {"admin"}),
        ("GET", "/v1/stats", {"admin"}), ("GET", "/metrics", {"admin"}),
        ("GET", "/anything", {"admin"}),
    ],
)
def test_roles_per_endpoint(method: str, path: str, roles: set[str]) -> None:
    assert required_roles(path, method=method) == roles


@pytest.mark.parametrize(
    ("method", "path", "roles"),
    [
        # the console's page and files hold no data: no token.
        ("GET", "/ui", set()), ("GET", "/ui/", set()), ("GET", "/ui/console.js", set()),
        ("GET", "/ui/anything/else", set()),
        # Not the console: a look-alike prefix, another method.
        ("GET", "/uix", {"admin"}), ("GET", "/ui.js", {"admin"}), ("POST", "/ui", {"admin"}),
        ("DELETE", "/ui/console.js", {"admin"}),
    ],
)
def test_the_console_is_open(method: str, path: str, roles: set[str]) -> None:
    assert required_roles(path, method=method) == roles


def test_metrics_public() -> None:
    assert required_roles("/metrics", metrics_public=True) == set()
    assert required_roles("/v1/nodes", metrics_public=True) == {"admin"}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
     ("hub.internal", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://user:p:w@db/1", "rediss://user:***@db/1"),
        ("redis://db:6379/0?password=s3cret&db=2", "redis://db:6379/0?password=***&db=2"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
        ("redis://db:6379/0", "redis://db:6379/0"),
        ("redis://:s3cret@db:port/0", "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
