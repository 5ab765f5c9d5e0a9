"""Authentication at the application's edges: the authentication keys of the configuration,
`hub token`, no secret in any log line, error or repr, and the start-up warning for
`auth = "none"` on a host that is not loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from loguru import logger

from hub.app.cli import main
from hub.app.hub import Hub
from hub.app.settings import load_config
from hub.core.config import HubConfig
from hub.core.errors import ConfigError
from hub.store.redis import RedisStore
from tests.conftest import FAST
from tests.support.auth import SECRET, token
from tests.support.hubtest import connect_client, connect_node
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Everything loguru writes while the test runs, at every level."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


# --- configuration -------------------------------------------------------------------


def test_auth_keys_from_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        '[hub]\nauth = "jwt"\njwt_secret_file = "/etc/nodehub/jwt"\nmetrics_public = true\n'
        'allowed_origins = ["https://a.example", "https://b.example:8443"]\n'
    )
    cfg = load_config(path=path, env={})
    assert (cfg.auth, cfg.jwt_secret_file, cfg.metrics_public) == ("jwt", "/etc/nodehub/jwt", True)
    assert cfg.allowed_origins == ("https://a.example", "https://b.example:8443")
    env = {"NODEHUB_ALLOWED_ORIGINS": "https://c.example, https://d.example",
           "NODEHUB_JWT_SECRET": SECRET, "NODEHUB_JWT_SECRET_FILE": ""}
    cfg = load_config(path=path, env=env)
    assert cfg.allowed_origins == ("https://c.example", "https://d.example")
    assert cfg.jwt_secret == SECRET and not cfg.tls
    cfg = load_config(env={}, overrides={"tls_cert_file": "c.pem", "tls_key_file": "k.pem"})
    assert cfg.tls and cfg.auth == "none"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"auth": "basic"}, "auth must be one of"),
        ({"auth": "jwt"}, "needs jwt_secret"),
        ({"jwt_secret": "short-secret"}, "at least 32 bytes"),
        ({"jwt_secret": SECRET, "jwt_secret_file": "f"}, "not both"),
        ({"tls_cert_file": "c.pem"}, "set together"),
        ({"allowed_origins": ("app.example",)}, "not an origin"),
        ({"allowed_origins": ("https://app.example/path",)}, "not an origin"),
    ],
)
def test_auth_keys_are_validated(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        HubConfig(**values)  # type: ignore[arg-type]
    assert "short-secret" not in str(info.value)


# --- hub token ------------------------------------------------------------------------


def test_hub_token_mints_what_the_hub_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nauth = "jwt"\njwt_secret = "{SECRET}"\n')
    assert main(["token", "--config", str(config), "--role", "node", "--sub", "fleet",
                 "--node-ids", "gpu-*", "spare", "--ttl", "2h", "--tenant", "acme"]) == 0
    minted = capsys.readouterr().out.strip()
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert (claims["role"], claims["sub"], claims["tenant"]) == ("node", "fleet", "acme")
    assert claims["node_ids"] == ["gpu-*", "spare"]
    assert abs(claims["exp"] - (time.time() + 7200)) < 60
    assert main(["token", "--config", str(config), "--role", "client", "--sub", "app"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["tenant"] == "default" and abs(claims["exp"] - (time.time() + 86400)) < 60


@pytest.mark.parametrize(
    ("config_text", "args", "needle"),
    [
        ('auth = "jwt"\njwt_public_key_file = "k.pem"\n', [], "cannot read"),
        ("", [], "set jwt_secret"),
        (f'jwt_secret = "{SECRET}"\n', ["--ttl", "soon"], "not a duration"),
        (f'jwt_secret = "{SECRET}"\n', ["--node-ids", "x"], "only apply to role 'node'"),
        (f'jwt_secret = "{SECRET}"\n', ["--tenant", "a:b"], "tenant"),
    ],
)
def test_hub_token_refuses_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str, args: list[str],
    needle: str,
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(config_text)
    code = main(["token", "--config", str(config), "--role", "client", "--sub", "a", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert SECRET not in err


def test_hub_token_with_only_public_keys_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.auth import ec_key, public_pem

    keys = tmp_path / "k.pem"
    keys.write_bytes(public_pem(ec_key()))
    config = tmp_path / "hub.toml"
    config.write_text(f'auth = "jwt"\njwt_public_key_file = "{keys}"\n')
    assert main(["token", "--config", str(config), "--role", "admin", "--sub", "ops"]) == 2
    assert "signs with HS256" in capsys.readouterr().err


# --- secrets -----------------------------------------------------------------------------


def test_no_secret_in_reprs() -> None:
    config = HubConfig(auth="jwt", jwt_secret=SECRET, redis_url="redis://u:hunter2@db:6379/0")
    assert SECRET not in repr(config) and "hunter2" not in repr(config)
    assert "jwt_secret='***'" in repr(config) and "redis://u:***@db:6379/0" in repr(config)
    store = RedisStore(hub_id="h", url="redis://:hunter2@db:6379/0?password=hunter3", prefix="p")
    assert "hunter" not in repr(store) and "***" in repr(store)


def test_redis_password_is_not_in_the_startup_error() -> None:
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "hub.app.cli", "serve", "--port", "0",
         "--deployment-mode", "cross_instance",
         "--redis-url", f"redis://admin:hunter2@127.0.0.1:{port}/0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach Redis at redis://admin:***@127.0.0.1" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


async def test_no_secret_or_token_in_the_logs(logs: list[str]) -> None:
    admitted = token("node", "n1")
    config = HubConfig(**{**FAST, "hub_id": "t1"}, auth="jwt", jwt_secret=SECRET,
                       log_level="DEBUG")
    async with Hub(config) as hub:
        node = await connect_node(hub.url, "n1", token=admitted)
        client = await connect_client(hub.url, token=token("client"))
        await client.submitted("r1")
        await node.run_one()
        await client.expect("result", ok=True)
        await node.aclose()
        await client.aclose()
    text = "\n".join(logs)
    assert "node registered" in text  # the logs were captured
    assert SECRET not in text and admitted not in text and admitted.split(".")[2] not in text


# --- the start-up warning ---------------------------------------------------------------


async def test_auth_none_on_a_public_host_warns(logs: list[str]) -> None:
    values = {**FAST, "hub_id": "t1"}
    async with Hub(HubConfig(**values, host="0.0.0.0")):
        pass
    warnings = [line for line in logs if "WARNING" in line and 'auth = "none"' in line]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]
    logs.clear()
    async with Hub(HubConfig(**values)):  # 127.0.0.1
        pass
    async with Hub(HubConfig(**values, host="0.0.0.0", auth="jwt", jwt_secret=SECRET)):
        pass
    assert not [line for line in logs if "WARNING" in line]
