"""TLS on the hub's one port: with `tls_cert_file` and `tls_key_file` set,
the port speaks `wss://` and `https://` only.

The context is the standard library's server default (certificate chain and
key from the files, TLS 1.2 at least); a file that cannot be read or does not
hold a matching certificate and key is a `ConfigError` at start, naming the
keys.
"""

from __future__ import annotations

import ssl

from hub.core.config import HubConfig
from hub.core.errors import ConfigError


def server_context(config: HubConfig) -> ssl.SSLContext | None:
    """The port's TLS context, or None when TLS is off."""
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls_cert_file / tls_key_file: cannot load {config.tls_cert_file} and "
            f"{config.tls_key_file}: {exc}"
        ) from None
    return context
