"""Pick the store backend from the configuration: the one place the mode matters."""

from __future__ import annotations

from hub.config import HubConfig
from hub.errors import ConfigError
from hub.store.base import Store
from hub.store.memory import MemoryStore


def make_store(config: HubConfig) -> Store:
    if config.deployment_mode == "local":
        return MemoryStore(hub_id=config.hub_id)
    raise ConfigError(
        "deployment_mode 'cross_instance' needs the Redis store, which this build lacks"
    )
