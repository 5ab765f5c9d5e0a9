"""Where the configuration comes from: TOML file < `NODEHUB_*` environment < flags.

`load_config` reads the three sources and hands the merged raw values to
`HubConfig.from_values` (hub/core/config.py), which types and validates them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub.core.config import HubConfig, config_keys
from hub.core.errors import ConfigError

ENV_PREFIX = "NODEHUB_"


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
        values.update(data.get("hub", data))
    environ = os.environ if env is None else env
    for name in config_keys():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    if overrides:
        values.update({k: v for k, v in overrides.items() if v is not None})
    return HubConfig.from_values(values)
