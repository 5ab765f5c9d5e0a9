"""The hub's one frozen configuration, its keys, defaults and validation.

Every key has a production default. Values are validated here, raising
`ConfigError` with the key's name; where they come from (a TOML file <
`NODEHUB_<KEY>` environment variables < `--key-with-dashes` flags) is
`hub.app.settings`. Durations carry their unit in the name (`_ms`). Pure: no
file or environment is read here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from hub.core.errors import ConfigError

DeploymentMode = Literal["local", "cross_instance"]


def _default_hub_id() -> str:
    return f"hub-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True, slots=True)
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    deployment_mode: DeploymentMode = "local"
    hub_id: str = field(default_factory=_default_hub_id)
    heartbeat_interval_ms: int = 5_000
    node_timeout_ms: int = 15_000
    accept_timeout_ms: int = 2_000
    job_timeout_ms: int = 300_000
    max_attempts: int = 3
    idempotency_ttl_ms: int = 600_000
    max_frame_bytes: int = 1_048_576
    max_protocol_errors: int = 20
    """Consecutive refused messages after which a session is closed with 1008."""
    session_affinity: bool = False
    """Use the client's session id as routing key when a submit has none."""
    default_pool: int = 0
    selection_seed: int | None = None
    """Seed of the selector's random choices; None seeds from the OS."""
    load_publish_interval_ms: int = 20
    """Cross-instance: how often coalesced load changes are published."""
    resync_interval_ms: int = 30_000
    """Cross-instance: how often other hubs' nodes are re-read from the store."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "nodehub"
    log_level: str = "INFO"
    log_json: bool = False
    # --- issue 12: exactly one answer, drain, dead-hub exclusion ---
    hub_timeout_ms: int = 3_000
    """Cross-instance: a hub that stopped answering this long is excluded from selection
    on every other hub (its nodes stop being chosen; its work fails over later, when its
    presence lapses)."""
    drain_timeout_ms: int = 30_000
    """On SIGTERM, how long running jobs may finish before the rest fail `hub_shutdown`."""

    def __post_init__(self) -> None:
        if self.deployment_mode not in get_args(DeploymentMode):
            raise ConfigError(
                f"deployment_mode must be one of {get_args(DeploymentMode)}, "
                f"not {self.deployment_mode!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, not {self.port}")
        for name in (
            "heartbeat_interval_ms",
            "node_timeout_ms",
            "accept_timeout_ms",
            "job_timeout_ms",
            "idempotency_ttl_ms",
            "max_frame_bytes",
            "max_attempts",
            "max_protocol_errors",
            "load_publish_interval_ms",
            "resync_interval_ms",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.node_timeout_ms <= self.heartbeat_interval_ms:
            raise ConfigError("node_timeout_ms must be longer than heartbeat_interval_ms")
        if not 0 <= self.default_pool <= 65535:
            raise ConfigError(f"default_pool must be in 0..65535, not {self.default_pool}")
        if not self.hub_id:
            raise ConfigError("hub_id must not be empty")
        # --- issue 12 ---
        if self.hub_timeout_ms < 100:
            raise ConfigError(f"hub_timeout_ms must be >= 100, not {self.hub_timeout_ms}")
        if self.drain_timeout_ms < 0:
            raise ConfigError(f"drain_timeout_ms must be >= 0, not {self.drain_timeout_ms}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> HubConfig:
        """A configuration from raw values (strings from the environment or flags, TOML
        values), each turned into its key's type; `ConfigError` names the bad key."""
        return cls(**{name: coerce(name, value) for name, value in values.items()})

    def job_budget_ms(self, timeout_ms: int | None) -> int:
        """A job's overall time budget: the client's `timeout_ms`, else what its
        attempts can take (each has its own deadline and their number is capped)."""
        return timeout_ms or self.max_attempts * (self.accept_timeout_ms + self.job_timeout_ms)

    def with_changes(self, **changes: Any) -> HubConfig:
        return replace(self, **changes)


_KEYS: dict[str, Any] = {f.name: f.type for f in fields(HubConfig)}


def coerce(name: str, value: Any) -> Any:
    """Turn a file, env or flag value into the key's type, or raise ConfigError."""
    if name not in _KEYS:
        raise ConfigError(f"unknown configuration key {name!r}")
    kind = str(_KEYS[name])
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in ("int", "int | None"):
            if value is None or (kind == "int | None" and str(value).lower() in ("", "none")):
                return None
            if isinstance(value, bool | float):  # int(2.5) would silently be 2
                raise ValueError(value)
            return int(value)
        return str(value)
    except ValueError:
        raise ConfigError(f"{name}: cannot use {value!r} (expected {kind})") from None


def config_keys() -> list[str]:
    """Every key, in declaration order (for `--help` and the CLI's flags)."""
    return list(_KEYS)
