"""Pick the store backend from the configuration: the one place the mode matters."""

from __future__ import annotations

from hub.core.config import HubConfig
from hub.core.errors import ConfigError
from hub.core.metrics import Metrics
from hub.store.base import Store
from hub.store.memory import MemoryBackplane, MemoryStore
from hub.store.meter import StoreMeter


def make_store(config: HubConfig, metrics: Metrics | None = None) -> Store:
    """The configured backend; with `metrics`, Redis calls are timed and their failures
    counted."""
    if config.deployment_mode == "local":
        plane = MemoryBackplane(max_record_bytes=config.max_archive_bytes)
        return MemoryStore(hub_id=config.hub_id, backplane=plane)
    if config.deployment_mode == "cross_instance":
        from hub.store.redis import RedisStore

        return RedisStore(
            hub_id=config.hub_id, url=config.redis_url, prefix=config.redis_prefix,
            meter=StoreMeter(metrics),
            reply_timeout_s=config.hub_timeout_ms / 1000, hub_timeout_ms=config.hub_timeout_ms,
        )
    raise ConfigError(f"unknown deployment_mode {config.deployment_mode!r}")
