"""Where the configuration comes from: TOML file < `NODEHUB_*` environment < flags.

`load_config` reads the three sources and hands the merged raw values to
`HubConfig.from_values` (hub/core/config.py), which types and validates them
(msgspec's lax conversion). Nothing is ignored silently: a key the
file does not know, a top-level key next to a `[hub]` table, a `NODEHUB_*`
variable that is no key (other than the admin CLI's `NODEHUB_URL`,
`NODEHUB_TOKEN`, `NODEHUB_CA_FILE`) are errors that name the nearest key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub.core.config import HubConfig, config_keys, unknown_key
from hub.core.errors import ConfigError

ENV_PREFIX = "NODEHUB_"
URL_ENV = "NODEHUB_URL"
TOKEN_ENV = "NODEHUB_TOKEN"
CA_FILE_ENV = "NODEHUB_CA_FILE"
CLIENT_ENV = frozenset({URL_ENV, TOKEN_ENV, CA_FILE_ENV})
"""`NODEHUB_*` variables of the admin CLI (`hub nodes` ...), not configuration keys."""


def file_values(data: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The keys of a TOML file: its `[hub]` table, or its top level when it has none. A
    top-level key next to a `[hub]` table is an error (it would be ignored)."""
    table = data.get("hub", data)
    keys = set(config_keys())
    if "hub" not in data:
        for key in table:
            if key not in keys:
                raise ConfigError(f"{path}: {unknown_key(key)}")
        return dict(table)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: `hub` must be a table ([hub]), not {type(table).__name__}")
    others = sorted(key for key in data if key != "hub")
    if others:
        raise ConfigError(
            f"{path}: {', '.join(repr(k) for k in others)} next to the [hub] table would be "
            "ignored: move it into [hub] (or drop the [hub] header)"
        )
    for key in table:
        if key not in keys:
            raise ConfigError(f"{path}: {unknown_key(key)}")
    return dict(table)


def env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The `NODEHUB_<KEY>` variables; an unknown `NODEHUB_*` one is an error."""
    keys = set(config_keys())
    values: dict[str, str] = {}
    for variable, raw in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in CLIENT_ENV:
            continue
        name = variable[len(ENV_PREFIX):].lower()
        if name not in keys:
            raise unknown_key(name, spelled=variable)
        values[name] = raw
    return values


def load_config(
    *,
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> HubConfig:
    """Merge a TOML file (its `[hub]` table, or its top level), `NODEHUB_*`
    environment variables and overrides (flags; None means not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        values.update(file_values(data, path))
    values.update(env_values(os.environ if env is None else env))
    if overrides:
        values.update({k: v for k, v in overrides.items() if v is not None})
    return HubConfig.from_values(values)
