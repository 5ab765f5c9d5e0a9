"""Tokens and certificates for the authentication tests, made in the test (no fixtures on
disk): HS256 tokens with a test secret, P-256 and RSA key pairs for ES256/RS256, and a
self-signed TLS certificate for 127.0.0.1 / localhost generated with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

SECRET = "test-secret-0123456789-abcdefghijklmnop"
"""An HS256 secret of the right length (>= 32 bytes)."""
OTHER_SECRET = "another-secret-0123456789-abcdefghijk"


def token(
    role: str | None = "client", sub: str = "someone", *, secret: str = SECRET,
    ttl_s: float = 600, algorithm: str = "HS256", key: Any = None, **claims: Any,
) -> str:
    """A signed token; `claims` add or (with None) remove claims (`role=None`: no role)."""
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl_s)}
    if role is not None:
        payload["role"] = role
    for name, value in claims.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key if key is not None else secret, algorithm=algorithm)


def public_pem(private_key: Any) -> bytes:
    return bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass
class Certificate:
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this (self-signed) certificate only."""
        return ssl.create_default_context(cafile=str(self.cert_file))


def self_signed(directory: Path, name: str = "hub") -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, written to `directory`."""
    key = ec_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return Certificate(cert_file, key_file)
