"""The dispatch benchmark's authentication variants (`--auth`): beside the
plain hub of the same run, a hub with `auth = "jwt"` (HS256) and one with JWT and TLS on
its port (a self-signed P-256 certificate made for the run with `cryptography`). Each
gets its own fleet of no-op nodes (with a node token) and its load generator (with a
client token, and the certificate as its CA for TLS)."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from _procs import Child, ProcGroup
from _topology import _start_hub
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.net.auth import mint_token

TOKEN_TTL_S = 24 * 3600


@dataclass
class AuthHub:
    """One authenticating hub of the run and what its peers need."""

    name: str
    hub: Child
    url: str
    node_token: str
    client_token: str
    ca_file: Path | None = None

    def peer_args(self, token: str) -> list[str]:
        """The `--token` (and `--ca-file`) arguments of a fleet or load generator."""
        args = ["--token", token]
        if self.ca_file is not None:
            args += ["--ca-file", str(self.ca_file)]
        return args


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "bench-hub.crt", directory / "bench-hub.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_file, key_file


def start_auth_hubs(procs: ProcGroup, node_prefix: str) -> list[AuthHub]:
    """The `jwt` and `tls` hubs (local mode), their secret passed in the environment."""
    secret = secrets.token_urlsafe(32)
    env = {"NODEHUB_AUTH": "jwt", "NODEHUB_JWT_SECRET": secret}
    node_token = mint_token(secret, role="node", sub="bench-fleet",
                            node_ids=[f"{node_prefix}-*"], ttl_s=TOKEN_TTL_S)
    client_token = mint_token(secret, role="client", sub="bench-load", ttl_s=TOKEN_TTL_S)
    hubs: list[AuthHub] = []
    hub, url = _start_hub(procs, "hub-jwt", env=env)
    hubs.append(AuthHub("jwt", hub, url, node_token, client_token))
    cert_file, key_file = _certificate(procs.dir)
    tls = ssl.create_default_context(cafile=str(cert_file))
    hub, url = _start_hub(procs, "hub-tls", env=env, tls=tls, extra=(
        "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
    ))
    hubs.append(AuthHub("tls", hub, url, node_token, client_token, ca_file=cert_file))
    return hubs
