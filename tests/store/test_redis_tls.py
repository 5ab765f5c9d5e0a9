"""`rediss://` with a CA, client certificates and `ssl_cert_reqs`, on every connection the
hub opens (redis-py's pool, both pipes), against a real `redis-server --tls-port` that
requires client certificates. Certificates are made in the test (`tests/support/tls.py`)."""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from hub.app.hub import Hub
from hub.core.errors import StoreUnavailable
from hub.store.base import Binding
from hub.store.redis import RedisStore
from hub.store.resp import RespPipe
from tests.conftest import MakeHub, Net
from tests.support.redis_server import RedisServer, free_port
from tests.support.tls import Certs, make_certs


class TlsRedis:
    def __init__(self, server: RedisServer, tls_port: int, certs: Certs) -> None:
        self.server = server
        self.tls_port = tls_port
        self.certs = certs

    def url(self, *, ca: Path | None = None, client: bool = True, reqs: str = "required",
            db: int = 0) -> str:
        params = [f"ssl_ca_certs={quote(str(ca or self.certs.ca))}", f"ssl_cert_reqs={reqs}"]
        if client:
            params += [f"ssl_certfile={quote(str(self.certs.client_cert))}",
                       f"ssl_keyfile={quote(str(self.certs.client_key))}"]
        return f"rediss://127.0.0.1:{self.tls_port}/{db}?{'&'.join(params)}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    tls_port = free_port()
    server = RedisServer(extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "yes",
    ])
    try:
        server.start()
    except RuntimeError as exc:
        log = server.log()
        server.close()
        if "tls" in log.lower() or "tls" in str(exc).lower():
            pytest.skip(f"this redis-server was built without TLS support: {log[-300:]}")
        raise
    yield TlsRedis(server, tls_port, certs)
    server.close()


async def test_every_connection_of_the_store_speaks_tls_with_client_certificates(
    tls_redis: TlsRedis,
) -> None:
    prefix = f"tls-{uuid.uuid4().hex}"
    url = tls_redis.url(db=2)
    a = RedisStore(hub_id="tls-a", url=url, prefix=prefix)
    b = RedisStore(hub_id="tls-b", url=url, prefix=prefix)
    try:
        await a.start()  # redis-py's pool: PING, consumer group
        await b.start()
        assert await a.announce(60_000) is False  # redis-py: a script
        assert await a.live_hubs() == {"tls-a"}
        # The send pipe: a binding with its dispatch to hub b's inbox, a claim.
        bound = await a.bind_requests([Binding("r1", "j1", 60_000, send_to="tls-b",
                                               envelope=b"hello")])
        assert bound == [None]
        ((epoch, owner),) = await a.claim_nodes(["n1"], 60_000)
        assert epoch > 0 and owner == "tls-a"
        # The read pipe: hub b's blocking inbox read gets the dispatch.
        entries = await b.read_inbox(block_ms=2_000, count=10)
        assert [envelope for _, envelope in entries] == [b"hello"]
        assert await b.bind_request("r1", "other", 60_000) == "j1"
    finally:
        await a.aclose()
        await b.aclose()


async def test_tls_failures_are_store_unavailable(tls_redis: TlsRedis) -> None:
    prefix = f"tls-{uuid.uuid4().hex}"
    # Without a client certificate the server refuses the handshake...
    no_cert = RedisStore(hub_id="x", url=tls_redis.url(client=False), prefix=prefix)
    with pytest.raises(StoreUnavailable, match=r"cannot reach Redis at rediss://"):
        await no_cert.start()
    await no_cert.aclose()
    # ...and a server certificate from a CA we do not trust is refused, on the pool
    with pytest.raises(StoreUnavailable):
        wrong = RedisStore(hub_id="x", url=tls_redis.url(ca=tls_redis.certs.other_ca),
                           prefix=prefix)
        try:
            await wrong.start()
        finally:
            await wrong.aclose()
    # and on the pipe.
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        await RespPipe.open_url(tls_redis.url(ca=tls_redis.certs.other_ca), timeout_s=2.0)
    # ssl_cert_reqs=none: no check of the server's certificate (a CA we do not trust).
    lax = await RespPipe.open_url(
        tls_redis.url(ca=tls_redis.certs.other_ca, reqs="none"), timeout_s=2.0)
    try:
        assert await lax.call("PING") == b"PONG"
    finally:
        lax.close()
    # A TLS connection that failed its handshake (above, on purpose) can leave its socket
    # to the garbage collector (asyncio's SSL transport over redis-py's stream): collect
    # it here, so that its ResourceWarning does not surface in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def test_a_hub_on_tls_redis_runs_a_job(
    tls_redis: TlsRedis, make_hub: MakeHub, net: Net
) -> None:
    prefix = f"tls-{uuid.uuid4().hex}"
    hub: Hub = await make_hub(deployment_mode="cross_instance", redis_url=tls_redis.url(),
                              redis_prefix=prefix)
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await client.submitted("r1")
    await node.run_one()
    result = await client.expect("result", ok=True)
    assert result["node_id"] == "n1"
