"""Keys and TLS over real sockets: RS256 / ES256 with public keys, HS256 secrets
from a file (rotation), and the port speaking TLS only with a self-signed certificate
generated in the test."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from agent_sim.agent import JobContext, NodeAgent
from agent_sim.client import HubClient
from hub.core.errors import ConfigError
from hub.core.messages import Capabilities, LanguagePair, Result
from tests.conftest import MakeHub, Net
from tests.support.auth import (
    OTHER_SECRET,
    SECRET,
    ec_key,
    public_pem,
    rsa_key,
    self_signed,
    token,
)
from tests.support.hubtest import TIMEOUT_S, http_get


async def handshake_status(url: str, tok: str, tls: ssl.SSLContext | None = None) -> int:
    """101 when the hub takes the handshake, else the HTTP status it answered."""
    try:
        ws = await asyncio.wait_for(
            connect(url, additional_headers={"Authorization": f"Bearer {tok}"}, ssl=tls,
                    compression=None, ping_interval=None),
            TIMEOUT_S,
        )
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def test_rs256_and_es256_tokens_verify_with_the_public_keys(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    ec_private, rsa_private, stranger = ec_key(), rsa_key(), ec_key()
    keys = tmp_path / "keys.pem"
    keys.write_bytes(public_pem(ec_private) + public_pem(rsa_private))
    hub = await make_hub(auth="jwt", jwt_public_key_file=str(keys))
    url = hub.url + "/v1/client"
    assert await handshake_status(url, token(algorithm="ES256", key=ec_private)) == 101
    assert await handshake_status(url, token(algorithm="RS256", key=rsa_private)) == 101
    # Signed by a key the hub does not hold; an HS256 token with no secret configured;
    # an ES256 token relabelled RS256 (a key is only used for its own algorithm).
    assert await handshake_status(url, token(algorithm="ES256", key=stranger)) == 401
    assert await handshake_status(url, token()) == 401
    assert await handshake_status(url, token(algorithm="RS256", key=rsa_key())) == 401


async def test_secret_file_holds_old_and_new_secrets(make_hub: MakeHub, tmp_path: Path) -> None:
    secrets = tmp_path / "jwt.secrets"
    secrets.write_text(f"# new first: it signs `hub token`\n{SECRET}\n\n{OTHER_SECRET}\n")
    hub = await make_hub(auth="jwt", jwt_secret_file=str(secrets))
    url = hub.url + "/v1/client"
    assert await handshake_status(url, token(secret=SECRET)) == 101
    assert await handshake_status(url, token(secret=OTHER_SECRET)) == 101
    assert await handshake_status(url, token(secret="x" * 40)) == 401


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"short\n", "shorter than 32"), (b"# only a comment\n", "no secret")],
)
async def test_a_bad_secret_file_is_a_config_error(
    make_hub: MakeHub, tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "jwt.secrets"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=needle):
        await make_hub(auth="jwt", jwt_secret_file=str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        await make_hub(auth="jwt", jwt_secret_file=str(tmp_path / "missing"))
    path.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="jwt_public_key_file"):
        await make_hub(auth="jwt", jwt_public_key_file=str(path))


async def test_the_port_speaks_tls_only(make_hub: MakeHub, net: Net, tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    hub = await make_hub(
        auth="jwt", jwt_secret=SECRET, tls_cert_file=str(cert.cert_file),
        tls_key_file=str(cert.key_file),
    )
    assert hub.url.startswith("wss://") and hub.http_url.startswith("https://")
    trust = cert.client_context()
    # The SDK: a node agent and a client over wss:// with the test's CA.
    caps = Capabilities(max_concurrency=2, language_pairs=[LanguagePair("en", "de")],
                        asr_languages=["en"], tts_languages=["de"])

    async def echo(ctx: JobContext) -> str:
        return f"ran {ctx.payload}"

    agent = NodeAgent(node_id="tls-1", capabilities=caps, hub_urls=[hub.url], handler=echo,
                      token=token("node", "tls-1"), ssl_context=trust)
    async with agent, HubClient(hub.url, token=token(), ssl_context=trust) as client:
        await agent.wait_registered(TIMEOUT_S)
        handle = await client.submit("en", "de", payload="x")
        result = await asyncio.wait_for(handle.result, TIMEOUT_S)
    assert isinstance(result, Result) and result.ok and result.output == "ran x"
    # HTTPS on the same port.
    status, _, body = await http_get(hub.http_url, "/healthz", tls=trust)
    assert status == 200 and json.loads(body)["status"] == "ok"
    # A plain WebSocket handshake on the TLS port gets no HTTP answer; an untrusted
    # certificate is refused by the client.
    plain = hub.url.replace("wss://", "ws://")
    with pytest.raises(InvalidMessage):
        await asyncio.wait_for(connect(plain + "/v1/client", ping_interval=None), TIMEOUT_S)
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await http_get(hub.http_url.replace("https://", "http://"), "/healthz")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.wait_for(
            connect(hub.url + "/v1/client", ssl=ssl.create_default_context()), TIMEOUT_S
        )


async def test_a_bad_certificate_is_a_config_error(make_hub: MakeHub, tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    other = self_signed(tmp_path, "other")
    with pytest.raises(ConfigError, match="tls_cert_file"):
        await make_hub(tls_cert_file=str(cert.cert_file), tls_key_file=str(other.key_file))
    with pytest.raises(ConfigError, match="tls_cert_file"):
        await make_hub(tls_cert_file=str(cert.cert_file))
