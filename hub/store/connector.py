"""`RedisConnector`: every connection the hub opens to Redis, from one `redis_url`.

The forms (docs/operations.md, "Which Redis"):

- `redis://[user:password@]host:port/db`, `unix:///path?db=N`;
- `rediss://...`: TLS; the query parameters `ssl_ca_certs`, `ssl_certfile`,
  `ssl_keyfile` and `ssl_cert_reqs` (`required` by default, `optional`,
  `none`), as redis-py spells them, apply to every connection;
- `redis+sentinel://[user:password@]host1:26379,host2:26379/service/db`
  (`rediss+sentinel://` for TLS to the sentinels and the master): the
  master of `service` as the sentinels name it, asked again whenever a
  connection is (re)opened; `sentinel_password` (query) authenticates to the
  sentinels, the userinfo to the master.

redis-py's pool (presence, leases, pub/sub, resyncs) is a blocking pool; for
a Sentinel URL its connections are redis-py's sentinel-managed ones, which ask
a `SentinelMaster` where the master is whenever they (re)connect and drop
themselves when their server answers `READONLY`. The two pipelined
connections of the hot path (`RespPipe`) get their address from `endpoint()`
each time they are opened, so they follow a failover the same way. Only this
module and the store's backends know the URL's forms; the URL's password is
never printed (`redacted`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from hub.core.errors import ConfigError

SSL_OPTIONS: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
CERT_REQS: Final = {
    "none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED,
}
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT: Final = 26379


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one connection goes: a TCP address (with TLS or not) or a Unix socket."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A parsed `redis_url` (pure: no connection)."""

    url: str
    tls: bool
    db: int = 0
    username: str | None = None
    password: str | None = None
    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_password: str | None = None
    ssl_options: dict[str, str] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)
    """Query parameters passed on to redis-py (e.g. `socket_timeout`)."""

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def redacted(self) -> str:
        """The URL with its passwords as `***`."""
        text = self.url
        for secret in (self.password, self.sentinel_password):
            if secret:
                text = text.replace(quote(secret, safe=""), "***").replace(secret, "***")
        return text


def parse_redis_url(url: str) -> RedisUrl:
    """Parse a `redis_url`; `ConfigError` (naming the key, never the password) when bad."""
    shown = parse_redacted(url)
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        query: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as exc:
        raise ConfigError(f"redis_url {shown}: cannot parse it ({exc})") from None
    for name, value in list(query.items()):
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is not None and name != "db":
            try:
                query[name] = parser(value)
            except (TypeError, ValueError):
                raise ConfigError(f"redis_url {shown}: bad value for {name}") from None
    ssl_options: dict[str, str] = {k: str(query.pop(k)) for k in SSL_OPTIONS if k in query}
    reqs = ssl_options.get("ssl_cert_reqs", "required").lower()
    if reqs not in CERT_REQS:
        raise ConfigError(
            f"redis_url: ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {reqs!r}"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if scheme in SENTINEL_SCHEMES:
        hosts = parts.netloc.rpartition("@")[2]
        sentinels = tuple(_host_port(item, shown) for item in hosts.split(",") if item)
        path = [p for p in parts.path.split("/") if p]
        if not sentinels or not path or len(path) > 2:
            raise ConfigError(
                f"redis_url {shown}: expected "
                "redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]"
            )
        return RedisUrl(
            url=url, tls=scheme == "rediss+sentinel", db=_db(path[1] if len(path) > 1 else "0",
                                                           shown),
            username=username, password=password, sentinels=sentinels, service=path[0],
            sentinel_password=query.pop("sentinel_password", None), ssl_options=ssl_options,
            other=query,
        )
    if scheme == "unix":
        return RedisUrl(
            url=url, tls=False, db=_db(query.pop("db", "0"), shown), username=username,
            password=password, path=unquote(parts.path), other=query,
        )
    if scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"redis_url {shown}: the scheme must be redis, rediss, unix, redis+sentinel "
            "or rediss+sentinel"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigError(f"redis_url {shown}: bad port") from None
    db_text = parts.path.strip("/") or query.pop("db", "0")
    return RedisUrl(
        url=url, tls=scheme == "rediss", db=_db(db_text, shown), username=username,
        password=password, host=parts.hostname or "localhost", port=port,
        ssl_options=ssl_options, other=query,
    )


def parse_redacted(url: str) -> str:
    """`url` with the password of its userinfo replaced (before it is parsed further)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, tail = rest.partition("@")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in userinfo else url


def _host_port(item: str, shown: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep:
        return item, DEFAULT_SENTINEL_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"redis_url {shown}: bad sentinel address {item!r}") from None


def _db(text: str, shown: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"redis_url {shown}: the database must be a number, not {text!r}"
        ) from None


def ssl_context(options: dict[str, str]) -> ssl.SSLContext:
    """A client TLS context from redis-py's `ssl_*` options."""
    reqs = CERT_REQS[options.get("ssl_cert_reqs", "required").lower()]
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if reqs != ssl.CERT_REQUIRED:
        context.check_hostname = False
    context.verify_mode = reqs
    return context


class SentinelMaster:
    """Where redis-py's sentinel-managed connections find the master of `service`.

    `SentinelManagedConnection` asks its `connection_pool` for `is_master`,
    `check_connection` and `get_master_address()` each time it (re)connects, and
    drops itself on `READONLY` (a demoted master). This is that, given to a plain
    `BlockingConnectionPool` as its connections' `connection_pool`: the pool keeps
    its blocking checkout (a burst waits for a connection instead of failing with
    "too many connections"), this object knows where the master is. When the
    sentinels name a new master, the pool's idle connections are dropped so that
    they reconnect to it.
    """

    is_master: Final = True
    check_connection: Final = False

    def __init__(self, service: str, manager: Sentinel) -> None:
        self.service = service
        self.manager = manager
        self.master_address: tuple[str, int] | None = None
        self.pool: aioredis.ConnectionPool | None = None
        """The pool whose idle connections go when the master moves."""

    def __repr__(self) -> str:
        return f"SentinelMaster({self.service!r} at {self.master_address})"

    async def get_master_address(self) -> tuple[str, int]:
        address: tuple[str, int] = await self.manager.discover_master(self.service)
        if address != self.master_address:
            self.master_address = address
            if self.pool is not None:
                await self.pool.disconnect(inuse_connections=False)
        return address


class RedisConnector:
    """Opens the hub's Redis connections for one `redis_url`."""

    def __init__(self, url: str) -> None:
        self.parsed = parse_redis_url(url)
        self._tls = ssl_context(self.parsed.ssl_options) if self.parsed.tls else None
        self._sentinel: Sentinel | None = None

    def __repr__(self) -> str:
        return f"RedisConnector({self.parsed.redacted})"

    @property
    def redacted(self) -> str:
        return self.parsed.redacted

    def _ssl_kwargs(self) -> dict[str, Any]:
        if not self.parsed.tls:
            return {}
        options = self.parsed.ssl_options
        kwargs: dict[str, Any] = {
            "ssl": True,
            "ssl_cert_reqs": options.get("ssl_cert_reqs", "required").lower(),
            "ssl_check_hostname": self._tls is not None and self._tls.check_hostname,
        }
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if name in options:
                kwargs[name] = options[name]
        return kwargs

    def pool(self, **kwargs: Any) -> aioredis.ConnectionPool:
        """redis-py's blocking connection pool (`kwargs`: its options)."""
        p = self.parsed
        kwargs = {**p.other, **kwargs, "db": p.db, "username": p.username,
                  "password": p.password}
        if p.sentinel:
            assert p.service is not None
            kwargs.update(self._ssl_kwargs())
            master = SentinelMaster(p.service, self._sentinel_manager(kwargs))
            connection_class = (
                SentinelManagedSSLConnection if kwargs.pop("ssl", False)
                else SentinelManagedConnection
            )
            pool = aioredis.BlockingConnectionPool(
                connection_class=connection_class, connection_pool=master, **kwargs
            )
            master.pool = pool
            return pool
        if p.path is not None:
            return aioredis.BlockingConnectionPool(
                connection_class=aioredis.UnixDomainSocketConnection, path=p.path, **kwargs
            )
        kwargs.update(self._ssl_kwargs())
        if kwargs.pop("ssl", False):
            kwargs["connection_class"] = aioredis.SSLConnection
        return aioredis.BlockingConnectionPool(host=p.host, port=p.port, **kwargs)

    def _sentinel_manager(self, kwargs: dict[str, Any]) -> Sentinel:
        if self._sentinel is None:
            p = self.parsed
            sentinel_kwargs: dict[str, Any] = {
                k: v for k, v in kwargs.items() if k.startswith("socket_")
            }
            if p.sentinel_password:
                sentinel_kwargs["password"] = p.sentinel_password
            if p.tls:
                ssl_kwargs = self._ssl_kwargs()
                ssl_kwargs.pop("ssl")
                sentinel_kwargs.update(ssl=True, **ssl_kwargs)
            # Called through a typed alias: redis-py ships `Sentinel.__init__`
            # untyped in some releases and typed in others, and an ignore
            # comment would be wrong for one of them.
            make_sentinel: Callable[..., Sentinel] = Sentinel
            self._sentinel = make_sentinel(list(p.sentinels), sentinel_kwargs=sentinel_kwargs)
        return self._sentinel

    async def endpoint(self, *, timeout_s: float) -> Endpoint:
        """Where a new connection goes now (for Sentinel: the master the sentinels
        name at this moment)."""
        p = self.parsed
        if p.path is not None:
            return Endpoint(path=p.path, username=p.username, password=p.password, db=p.db)
        host, port = p.host, p.port
        if p.sentinel:
            manager = self._sentinel_manager({
                "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
            })
            assert p.service is not None
            host, port = await manager.discover_master(p.service)
        return Endpoint(host=host, port=int(port), tls=self._tls, username=p.username,
                        password=p.password, db=p.db)

    async def aclose(self) -> None:
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()
