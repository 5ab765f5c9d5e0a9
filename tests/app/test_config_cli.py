"""Configuration that explains itself: `hub --version`, help and defaults for
every key, choices in one clear line, unknown keys and variables with the nearest key,
`hub config` with secrets redacted."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from hub.app.cli import main
from hub.app.settings import load_config
from hub.core.config import HubConfig, config_keys, nearest_key
from hub.core.config_help import KEY_HELP
from hub.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-" + "x" * 40


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.startswith("nodehub ") and out.split()[1][0].isdigit()


def test_every_key_has_help_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    for key in config_keys():
        assert KEY_HELP.get(key), f"{key} has no help text (hub/core/config_help.py)"
    status, out, _ = run(capsys, "serve", "--help")
    assert status == 0
    flat = " ".join(out.split())
    entries: dict[str, str] = {}  # each option's block of help lines
    for line in out.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif line.startswith("    ") and entries:
            entries[current] += line
    for f in fields(HubConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, flag
        assert "[default: " in entries[flag], f"{flag} shows no default"
    assert "--job-timeout-ms JOB_TIMEOUT_MS one attempt's budget after assignment " \
           "[default: 300000]" in flat
    assert "--auth {none,jwt}" in flat and "[default: none]" in flat


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["serve", "--log-level", "LOUD"], ["--log-level", "LOUD", "INFO"]),
        (["serve", "--auth", "maybe"], ["--auth", "maybe", "none, jwt"]),
        (["serve", "--deployment-mode", "galactic"], ["galactic", "cross_instance"]),
        (["serve", "--job-log-level", "loud"], ["--job-log-level", "OFF"]),
        (["nodes", "--status", "sleepy"], ["--status", "sleepy"]),
    ],
)
def test_bad_choices_are_one_clear_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1, err
    assert all(word in err for word in words), err
    assert "Traceback" not in err


def test_log_levels_in_any_case() -> None:
    status = load_config(env={"NODEHUB_LOG_LEVEL": "debug", "NODEHUB_JOB_LOG_LEVEL": "off"})
    assert (status.log_level, status.job_log_level) == ("debug", "off")
    with pytest.raises(ConfigError, match="log_level must be one of"):
        load_config(env={"NODEHUB_LOG_LEVEL": "LOUD"})


def test_unknown_keys_suggest_the_nearest(tmp_path: Path) -> None:
    assert nearest_key("job_timeout") == "job_timeout_ms"
    assert nearest_key("max_atempts") == "max_attempts"
    with pytest.raises(ConfigError) as info:
        load_config(env={"NODEHUB_JOB_TIMEOUT": "5000"})
    assert "'NODEHUB_JOB_TIMEOUT'" in str(info.value)
    assert "did you mean 'NODEHUB_JOB_TIMEOUT_MS'" in str(info.value)
    path = tmp_path / "hub.toml"
    path.write_text("[hub]\nmax_atempts = 2\n")
    with pytest.raises(ConfigError, match="did you mean 'max_attempts'"):
        load_config(path=path, env={})
    path.write_text("port = 1\n[hub]\nmax_attempts = 2\n")
    with pytest.raises(ConfigError, match=r"'port' next to the \[hub\] table would be ignored"):
        load_config(path=path, env={})
    path.write_text("[hub]\nmax_attempts = 2\n")
    assert load_config(path=path, env={}).max_attempts == 2


def test_config_prints_the_effective_configuration_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f'[hub]\nauth = "jwt"\njwt_secret = "{SECRET}"\nport = 1000\n')
    monkeypatch.setenv("NODEHUB_PORT", "2000")
    monkeypatch.setenv("NODEHUB_REDIS_URL", "redis://:hunter2@10.0.0.5:6379/0")
    status, out, _ = run(capsys, "config", "--config", str(path), "--max-attempts", "5")
    assert status == 0
    assert SECRET not in out and "hunter2" not in out
    assert 'jwt_secret = "***"' in out and 'redis_url = "redis://:***@10.0.0.5:6379/0"' in out
    assert "port = 2000" in out and "max_attempts = 5" in out and 'auth = "jwt"' in out
    # It is a file `hub serve --config` takes (secrets aside).
    reread = tmp_path / "out.toml"
    reread.write_text(out.replace('"***"', f'"{SECRET}"').replace(":***@", ":pw@"))
    monkeypatch.delenv("NODEHUB_PORT")
    monkeypatch.delenv("NODEHUB_REDIS_URL")
    assert load_config(path=reread).max_attempts == 5
    status, out, _ = run(capsys, "config", "--json", "--config", str(path))
    values = json.loads(out)
    assert values["jwt_secret"] == "***" and values["port"] == 1000


def test_serve_with_a_bad_env_variable_is_one_line() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NODEHUB_JOB_TIMEOUT": "5"}
    proc = subprocess.run(
        [sys.executable, "-m", "hub.app.cli", "serve"], cwd=ROOT, capture_output=True,
        text=True, timeout=60, env=env, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "NODEHUB_JOB_TIMEOUT_MS" in proc.stderr
