"""`load_config`: file < environment < flags, and clear errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.app.settings import load_config
from hub.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = load_config(env={})
    assert cfg.port == 8765 and cfg.deployment_mode == "local" and cfg.max_attempts == 3
    assert cfg.hub_id.startswith("hub-")


def test_limit_defaults_are_the_contracts() -> None:
    """protocol-v1.1.md, "Limits" (and this hub's own `max_archive_bytes`)."""
    cfg = load_config(env={})
    assert cfg.max_outbound_bytes == 4_194_304 and cfg.slow_peer_timeout_ms == 10_000
    assert cfg.max_capability_entries == 1024 and cfg.max_jobs_per_session == 1024
    assert cfg.max_connections == 20_000 and cfg.max_archive_bytes == 256 * 1024 * 1024
    flagged = load_config(env={"NODEHUB_MAX_CONNECTIONS": "5"},
                          overrides={"slow_peer_timeout_ms": "250"})
    assert flagged.max_connections == 5 and flagged.slow_peer_timeout_ms == 250


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[hub]\nport = 1111\nhub_id = "from-file"\nmax_attempts = 5\nlog_level = "DEBUG"\n'
        "session_affinity = true\n",
    )
    cfg = load_config(path=path, env={})
    assert (cfg.port, cfg.hub_id, cfg.max_attempts, cfg.session_affinity) == (
        1111, "from-file", 5, True
    )
    env = {"NODEHUB_PORT": "2222", "NODEHUB_HUB_ID": "from-env", "NODEHUB_SESSION_AFFINITY": "0"}
    cfg = load_config(path=path, env=env)
    assert (cfg.port, cfg.hub_id, cfg.max_attempts, cfg.session_affinity) == (
        2222, "from-env", 5, False
    )
    cfg = load_config(path=path, env=env, overrides={"port": "3333", "hub_id": None})
    assert (cfg.port, cfg.hub_id, cfg.log_level) == (3333, "from-env", "DEBUG")


def test_top_level_file_keys_and_optional_int(tmp_path: Path) -> None:
    path = write(tmp_path, "selection_seed = 7\nheartbeat_interval_ms = 100\n")
    cfg = load_config(path=path, env={})
    assert cfg.selection_seed == 7 and cfg.heartbeat_interval_ms == 100
    assert load_config(path=path, env={"NODEHUB_SELECTION_SEED": "none"}).selection_seed is None


def test_unrelated_environment_is_ignored() -> None:
    # An unknown NODEHUB_* variable (NODEHUB_NOT_A_KEY here before)
    # is now an error (below); other variables, and the admin CLI's, are still ignored.
    cfg = load_config(env={"PORT": "1", "NODEHUB_URL": "http://h:1", "NODEHUB_TOKEN": "t"})
    assert cfg.port == 8765
    with pytest.raises(ConfigError, match="NODEHUB_NOT_A_KEY"):
        load_config(env={"NODEHUB_NOT_A_KEY": "1", "PORT": "1"})


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ({"env": {"NODEHUB_PORT": "notanumber"}}, "port"),
        ({"env": {"NODEHUB_PORT": "70000"}}, "port"),
        ({"overrides": {"max_attempts": "0"}}, "max_attempts"),
        ({"overrides": {"heartbeat_interval_ms": "-5"}}, "heartbeat_interval_ms"),
        ({"overrides": {"session_affinity": "maybe"}}, "session_affinity"),
        ({"overrides": {"deployment_mode": "galactic"}}, "deployment_mode"),
        ({"overrides": {"default_pool": "65536"}}, "default_pool"),
        ({"overrides": {"no_such_key": "1"}}, "no_such_key"),
        ({"overrides": {"heartbeat_interval_ms": "5000", "node_timeout_ms": "5000"}},
         "node_timeout_ms"),
        ({"overrides": {"port": True}}, "port"),
        ({"overrides": {"max_outbound_bytes": "0"}}, "max_outbound_bytes"),
        ({"overrides": {"slow_peer_timeout_ms": "-1"}}, "slow_peer_timeout_ms"),
        ({"overrides": {"max_capability_entries": "0"}}, "max_capability_entries"),
        ({"overrides": {"max_jobs_per_session": "0"}}, "max_jobs_per_session"),
        ({"overrides": {"max_connections": "0"}}, "max_connections"),
        ({"env": {"NODEHUB_MAX_ARCHIVE_BYTES": "lots"}}, "max_archive_bytes"),
    ],
)
def test_bad_values_name_the_key(source: dict[str, dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=source.get("env", {}), overrides=source.get("overrides"))  # type: ignore[arg-type]
    assert key in str(info.value)


def test_bad_file_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(path=write(tmp_path, 'port = "eighty"\n'), env={})
    with pytest.raises(ConfigError, match="max_attempts"):
        load_config(path=write(tmp_path, "max_attempts = 2.5\n"), env={})
    with pytest.raises(ConfigError, match="bogus"):
        load_config(path=write(tmp_path, "bogus = 1\n"), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path=write(tmp_path, "port = \n"), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path=tmp_path / "missing.toml", env={})


def test_with_changes_validates() -> None:
    cfg = load_config(env={})
    assert cfg.with_changes(port=0).port == 0
    with pytest.raises(ConfigError, match="port"):
        cfg.with_changes(port=-1)


def _hub_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "hub.app.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env=env, check=False,
    )


def test_cli_bad_flag_value_is_one_clear_line() -> None:
    proc = _hub_cli("serve", "--port", "notanumber")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "port" in lines[0] and "notanumber" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_bad_config_file_is_one_clear_line(tmp_path: Path) -> None:
    proc = _hub_cli("serve", "--config", str(write(tmp_path, "max_attempts = 0\n")))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_attempts" in lines[0], proc.stderr
