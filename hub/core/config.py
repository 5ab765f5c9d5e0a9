"""The hub's one frozen configuration, its keys, defaults and validation.

Every key has a production default. Values are validated here, raising
`ConfigError` with the key's name; where they come from (a TOML file <
`NODEHUB_<KEY>` environment variables < `--key-with-dashes` flags) is
`hub.app.settings`. Durations carry their unit in the name (`_ms`). Pure: no
file or environment is read here.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal, get_args

import msgspec

from hub.core.errors import ConfigError
from hub.core.redact import redact_url

DeploymentMode = Literal["local", "cross_instance"]
AuthMode = Literal["none", "jwt"]
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
JOB_LOG_LEVELS = (*LOG_LEVELS, "OFF")
"""`log_level` and `job_log_level` choices (case does not matter)."""
MIN_JWT_SECRET_BYTES = 32
"""An HS256 secret shorter than the hash (RFC 7518, 3.2) is refused."""


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
    """Refused messages within any 10 s window after which a session is closed with 1008."""
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
    # --- authentication, tenancy, TLS (protocol-v1.1, "Authentication and
    # tenancy"; hub/net/auth.py, hub/net/tls.py) -------------------------------------------
    auth: AuthMode = "none"
    """"none": every handshake is accepted; "jwt": every WebSocket handshake and HTTP
    request except the health probes needs a token."""
    jwt_secret: str = field(default="", repr=False)
    """HS256 shared secret (inline); never printed."""
    jwt_secret_file: str = ""
    """A file holding HS256 secrets, one per line: every one verifies, the first signs."""
    jwt_public_key_file: str = ""
    """A file holding PEM public keys (RSA: RS256, P-256: ES256); every one verifies."""
    metrics_public: bool = False
    """With auth = "jwt", serve /metrics without a token."""
    allowed_origins: tuple[str, ...] = ()
    """When not empty, a request whose Origin header is present and not listed gets 403."""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    """Both set: the port speaks TLS only (wss:// and https://)."""
    # --- the admission queue -------------------------------------------------
    queue_timeout_ms: int = 30_000
    """How long a job may wait for a free slot (a submit's `queue_timeout_ms` overrides
    it); 0: never wait, `rejected` `no_node` at once as in v1."""
    max_queued_jobs: int = 10_000
    """Jobs waiting on this hub; past it a submit gets `rejected` `overloaded`."""
    # --- per-peer limits (protocol v1.1, "Limits"; docs/operations.md) ---
    max_outbound_bytes: int = 4_194_304
    """Bytes queued for one peer above which it counts as slow."""
    slow_peer_timeout_ms: int = 10_000
    """A peer over `max_outbound_bytes` this long is closed with 4006 `slow_consumer`."""
    max_capability_entries: int = 1024
    """Language pairs + ASR + TTS languages + features of one node, together."""
    capabilities_interval_ms: int = 1000
    """A node's `capabilities` updates apply at most once per this interval (the latest
    of those sent meanwhile applies at its end)."""
    max_jobs_per_session: int = 1024
    """Unfinished jobs one client session may hold; past it `rejected` `overloaded`."""
    max_held_payload_bytes: int = 1_073_741_824
    """Payload bytes of unfinished jobs plus bytes queued for peers that fell behind,
    across all peers; a submit past it gets `rejected` `overloaded`, and past half of it
    each tenant (client session without auth) holds at most its share."""
    max_connections: int = 20_000
    """Open WebSocket sessions; past it the handshake gets HTTP 503."""
    max_archive_bytes: int = 268_435_456
    """Bytes of finished job records (results included) held in this process's memory for
    resubmits: the local store's records, and records waiting for an unreachable Redis.
    Past it the oldest results are evicted, leaving a tombstone (`result_expired`)."""
    # --- scale out ---------------------------------------------------------
    gc_pacing: bool = True
    """Freeze what survived a long full garbage collection, so that the next ones stay
    short on a big heap (hub/runtime/gc_pacer.py)."""
    gc_thaw_interval_ms: int = 600_000
    """How often the frozen objects are thawed (one full collection of everything)."""
    # --- operating it ------------------------------------------------------
    job_log_level: str = "INFO"
    """The level of the job lifecycle lines (accepted, assigned, failover, result...);
    DEBUG turns them down below an INFO log, OFF skips them."""
    # --- exactly one answer, drain, dead-hub exclusion ---
    hub_timeout_ms: int = 3_000
    """Cross-instance: a hub that stopped answering this long is excluded from selection
    on every other hub (its nodes stop being chosen; its work fails over later, when its
    presence lapses)."""
    drain_timeout_ms: int = 30_000
    """On SIGTERM, how long running jobs may finish before the rest fail `hub_shutdown`."""
    # --- live sessions (protocol-v1.2) ---
    max_sessions_per_connection: int = 64
    """Live sessions one client connection may hold open; past it `session_limit`."""
    session_idle_ms: int = 300_000
    """A live session with no connection and no running utterance is closed after this
    long (`idle_timeout`); until then a client may resume it."""
    max_room_members: int = 64
    """Members of one room, across hubs; past it `room_join` gets `room_limit`."""
    max_rooms_per_connection: int = 16
    """Rooms one client connection may be in; past it `room_limit`."""

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
        self._check_auth()
        self._check_queue()
        self._check_limits()
        self._check_scale()
        self._check_ops()
        self._check_answers()

    def _check_auth(self) -> None:
        """The authentication, Origin and TLS keys (no secret in a message)."""
        if self.auth not in get_args(AuthMode):
            raise ConfigError(f"auth must be one of {get_args(AuthMode)}, not {self.auth!r}")
        if self.jwt_secret and self.jwt_secret_file:
            raise ConfigError("set jwt_secret or jwt_secret_file, not both")
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(f"jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes")
        if self.auth == "jwt" and not (
            self.jwt_secret or self.jwt_secret_file or self.jwt_public_key_file
        ):
            raise ConfigError(
                'auth = "jwt" needs jwt_secret, jwt_secret_file or jwt_public_key_file'
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file and tls_key_file must be set together")
        for origin in self.allowed_origins:
            scheme, sep, rest = origin.partition("://")
            if not sep or not rest or "/" in rest or scheme not in ("http", "https"):
                raise ConfigError(
                    f"allowed_origins: {origin!r} is not an origin (scheme://host[:port])"
                )

    def _check_queue(self) -> None:
        """The admission queue's keys."""
        for name in ("queue_timeout_ms", "max_queued_jobs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.queue_timeout_ms > 86_400_000:
            raise ConfigError(f"queue_timeout_ms must be <= 86400000, not {self.queue_timeout_ms}")

    def _check_limits(self) -> None:
        """The per-peer limits."""
        for name in (
            "max_outbound_bytes",
            "slow_peer_timeout_ms",
            "max_capability_entries",
            "capabilities_interval_ms",
            "max_jobs_per_session",
            "max_held_payload_bytes",
            "max_connections",
            "max_archive_bytes",
            "max_sessions_per_connection",
            "session_idle_ms",
            "max_room_members",
            "max_rooms_per_connection",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")

    def _check_scale(self) -> None:
        """Scale out."""
        if self.gc_thaw_interval_ms < 1_000:
            raise ConfigError(
                f"gc_thaw_interval_ms must be >= 1000, not {self.gc_thaw_interval_ms}"
            )

    def _check_ops(self) -> None:
        """The log levels are names loguru knows (one clear line, not a
        traceback at the first log call)."""
        for name, choices in (("log_level", LOG_LEVELS), ("job_log_level", JOB_LOG_LEVELS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value.upper() not in choices:
                raise ConfigError(
                    f"{name} must be one of {', '.join(choices)}, not {value!r}"
                )

    def _check_answers(self) -> None:
        """Exactly one answer, drain, dead-hub exclusion."""
        if self.hub_timeout_ms < 100:
            raise ConfigError(f"hub_timeout_ms must be >= 100, not {self.hub_timeout_ms}")
        if self.drain_timeout_ms < 0:
            raise ConfigError(f"drain_timeout_ms must be >= 0, not {self.drain_timeout_ms}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> HubConfig:
        """A configuration from raw values (strings from the environment or flags, TOML
        values), each turned into its key's type; `ConfigError` names the bad key (an
        unknown one with the nearest known key)."""
        return convert(values)

    def redacted(self) -> dict[str, Any]:
        """Every key and its value, secrets as `***` (`hub config`)."""
        shown: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_KEYS and value:
                value = "***"
            elif f.name == "redis_url":
                value = redact_url(value)
            shown[f.name] = value
        return shown

    def job_budget_ms(self, timeout_ms: int | None) -> int:
        """A job's overall time budget: the client's `timeout_ms`, else what its
        attempts can take (each has its own deadline and their number is capped)."""
        return timeout_ms or self.max_attempts * (self.accept_timeout_ms + self.job_timeout_ms)

    def queue_timeout(self, requested_ms: int | None) -> int:
        """How long a job may wait for a slot: the submit's `queue_timeout_ms`, else the
        hub's."""
        return self.queue_timeout_ms if requested_ms is None else requested_ms

    def with_changes(self, **changes: Any) -> HubConfig:
        return replace(self, **changes)

    @property
    def tls(self) -> bool:
        """Whether the port speaks TLS."""
        return bool(self.tls_cert_file and self.tls_key_file)

    def __repr__(self) -> str:
        """Every key; secrets redacted (`jwt_secret`, a `redis_url` password)."""
        shown = [f"{name}={value!r}" for name, value in self.redacted().items()]
        return f"HubConfig({', '.join(shown)})"


_KEYS: dict[str, Any] = {f.name: f.type for f in fields(HubConfig)}
SECRET_KEYS = frozenset({"jwt_secret"})
"""Keys whose values are never printed (`redis_url` shows its password as `***`)."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def nearest_key(name: str) -> str | None:
    """The configuration key `name` most likely meant (a typo, a missing `_ms`)."""
    name = name.lower()
    matches = difflib.get_close_matches(name, list(_KEYS), n=1, cutoff=0.6)
    if matches:
        return matches[0]
    prefixed = [key for key in _KEYS if key.startswith(name) or name.startswith(key)]
    return min(prefixed, key=len) if prefixed else None


def unknown_key(name: str, *, spelled: str | None = None) -> ConfigError:
    """The error for an unknown key `name` (shown as `spelled`: a flag, a variable)."""
    shown = spelled or name
    guess = nearest_key(name)
    if guess is None:
        return ConfigError(f"unknown configuration key {shown!r}")
    if spelled is not None and spelled.startswith("NODEHUB_"):
        guess_shown = "NODEHUB_" + guess.upper()
    else:
        guess_shown = guess
    return ConfigError(f"unknown configuration key {shown!r}: did you mean {guess_shown!r}?")


def _prepared(name: str, value: Any) -> Any:
    """A raw value made ready for msgspec's lax conversion: the spellings of the
    environment and flags (`yes`/`off` booleans, `none`, comma-separated lists)."""
    kind = str(_KEYS[name])
    if not isinstance(value, str):
        return value
    text = value.strip()
    if kind == "bool":
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else value
    if kind == "int | None" and text.lower() in ("", "none", "null"):
        return None
    if kind.startswith("tuple["):
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _choices(name: str) -> str:
    kind = _KEYS[name]
    options: tuple[Any, ...] = ()
    if kind in ("DeploymentMode", "AuthMode"):
        options = get_args(DeploymentMode if kind == "DeploymentMode" else AuthMode)
    return f" (one of: {', '.join(options)})" if options else ""


def convert(values: Mapping[str, Any]) -> HubConfig:
    """`HubConfig` from raw values with msgspec's lax conversion (strings to numbers and
    booleans); `ConfigError` names the key, the value and what was expected."""
    for name in values:
        if name not in _KEYS:
            raise unknown_key(name)
    prepared = {name: _prepared(name, value) for name, value in values.items()}
    try:
        return msgspec.convert(prepared, HubConfig, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        detail, _, where = message.rpartition(" - at `$.")
        name = where.rstrip("`").split(".")[0].split("[")[0]
        if name in values:
            raise ConfigError(
                f"{name}: cannot use {values[name]!r}: "
                f"{detail[0].lower() + detail[1:] if detail else message}{_choices(name)}"
            ) from None
        raise ConfigError(f"configuration: {message}") from None


def config_keys() -> list[str]:
    """Every key, in declaration order (for `--help` and the CLI's flags)."""
    return list(_KEYS)


def default_of(name: str) -> Any:
    """A key's default (None for `hub_id`, whose default is made at random)."""
    for f in fields(HubConfig):
        if f.name == name:
            return None if f.default is MISSING else f.default
    raise unknown_key(name)


def key_type(name: str) -> str:
    """A key's type as declared (`int`, `bool`, `str`, `AuthMode`, ...)."""
    return str(_KEYS[name])
