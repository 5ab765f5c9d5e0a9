"""`redis_url` forms (hub/store/connector.py): parsed, validated, redacted."""

from __future__ import annotations

import ssl

import pytest

from hub.core.errors import ConfigError
from hub.store.connector import RedisConnector, parse_redis_url, ssl_context


def test_plain_tls_and_unix_forms() -> None:
    plain = parse_redis_url("redis://u:p%40ss@10.0.0.5:6380/3")
    assert (plain.host, plain.port, plain.db, plain.username, plain.password, plain.tls) == (
        "10.0.0.5", 6380, 3, "u", "p@ss", False)
    assert not plain.sentinel
    tls = parse_redis_url(
        "rediss://h:6379/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_cert_reqs=optional&socket_timeout=2.5"
    )
    assert tls.tls and tls.ssl_options == {
        "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
        "ssl_cert_reqs": "optional"}
    assert tls.other == {"socket_timeout": 2.5}
    unix = parse_redis_url("unix:///run/redis.sock?db=4")
    assert (unix.path, unix.db) == ("/run/redis.sock", 4)
    assert parse_redis_url("redis://localhost").port == 6379


def test_sentinel_forms() -> None:
    s = parse_redis_url(
        "redis+sentinel://:secret@s1:26379,s2:26380,s3/mymaster/2?sentinel_password=sp")
    assert s.sentinel and not s.tls
    assert s.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (s.service, s.db, s.password, s.sentinel_password) == ("mymaster", 2, "secret", "sp")
    assert parse_redis_url("redis+sentinel://s1:26379/mymaster").db == 0
    t = parse_redis_url("rediss+sentinel://s1:26379/m/0?ssl_cert_reqs=none")
    assert t.tls and t.ssl_options == {"ssl_cert_reqs": "none"}


@pytest.mark.parametrize("url", [
    "http://h:1/0",
    "redis+sentinel://s1:26379",  # no service
    "redis+sentinel://s1:26379/m/0/extra",
    "redis+sentinel://s1:x/m",
    "redis://h:1/notanumber",
    "rediss://h/0?ssl_cert_reqs=sometimes",
    "redis://h/0?socket_timeout=soon",
])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        parse_redis_url(url)


def test_passwords_are_never_shown() -> None:
    for url in ("redis://user:hunter2@h:1/0", "redis+sentinel://:hunter2@s:1/m/0",
                "redis://h:1/0", "redis+sentinel://s:1/m?sentinel_password=hunter2"):
        shown = parse_redis_url(url).redacted
        assert "hunter2" not in shown
        assert repr(RedisConnector(url)).count("hunter2") == 0
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis://user:hunter2@h:1/nope")
    assert "hunter2" not in str(info.value)


def test_ssl_context_options() -> None:
    strict = ssl_context({})
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    lax = ssl_context({"ssl_cert_reqs": "none"})
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname
    assert ssl_context({"ssl_cert_reqs": "optional"}).verify_mode == ssl.CERT_OPTIONAL
