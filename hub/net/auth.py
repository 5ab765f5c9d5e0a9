"""Authentication at the door: every request on the hub's port passes `Gate.admit` first.

`WsServer` calls it in websockets' `process_request`, during the handshake,
so a refused peer never gets a session and an admitted one costs nothing
more per message. In order:

1. `Origin` (`allowed_origins`): a request whose `Origin` header is present
   and not listed gets HTTP 403, whatever the `auth` mode (a browser page of
   another site must not reach an internal hub);
2. the path's roles (`hub.core.principal.required_roles`): the health probes
   (and `/metrics` with `metrics_public`) need no token;
3. with `auth = "jwt"`, the token from `Authorization: Bearer` or `?token=`,
   verified by `TokenVerifier` (PyJWT: HS256 with the configured secrets, RS256
   or ES256 with the configured public keys; `exp` required): missing, bad
   signature, expired or malformed is HTTP 401; a valid token of a role the
   path does not take is HTTP 403.

An `Origin` or `Authorization` header that the request sends more than once
is HTTP 400 (`bad_request`) wherever the gate reads it: which one holds would
be a guess.

A refusal is a `Refusal` (status, wire code, message) that the server turns
into the JSON body `{"error": ..., "message": ...}`. The messages never
contain the token or a key. `mint_token` makes the HS256 tokens of
`hub token`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.core import error_codes
from hub.core.config import MIN_JWT_SECRET_BYTES, HubConfig
from hub.core.errors import ConfigError, HubError
from hub.core.principal import (
    ANONYMOUS,
    DEFAULT_TENANT,
    NODE,
    ClaimsError,
    Principal,
    is_loopback_host,
    principal_from_claims,
    required_roles,
)

HS256: Final = "HS256"
RS256: Final = "RS256"
ES256: Final = "ES256"
MIN_RSA_BITS: Final = 2048
MAX_TOKEN_CHARS: Final = 8192
"""A longer token is refused before it is parsed."""

PUBLIC: Final = Principal(sub="", role="", tenant="")
"""The principal of a request to an open path under `auth = "jwt"`: no role, no tenant."""

_json = msgspec.json.Encoder()
_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.DOTALL)


class Refusal(HubError):
    """A request refused at the door: its HTTP status and JSON body."""

    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def body(self) -> bytes:
        return _json.encode({"error": self.code, "message": self.message})

    def __repr__(self) -> str:
        return f"Refusal({int(self.status)}, {self.code!r}, {self.message!r})"


def _unauthorized(message: str) -> Refusal:
    return Refusal(HTTPStatus.UNAUTHORIZED, error_codes.UNAUTHORIZED, message)


def _forbidden(message: str) -> Refusal:
    return Refusal(HTTPStatus.FORBIDDEN, error_codes.FORBIDDEN, message)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, None when absent; `Refusal` 400 when it was sent
    more than once (websockets' `Headers` then raises `MultipleValuesError`, a
    `LookupError` but not a `KeyError`)."""
    try:
        return headers.get(name)
    except LookupError:
        raise Refusal(
            HTTPStatus.BAD_REQUEST, error_codes.BAD_REQUEST,
            f"the {name} header is sent more than once",
        ) from None


# --- keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """The keys that verify tokens, by JWT algorithm; the first HS256 secret signs."""

    by_alg: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def signing_secret(self) -> bytes | None:
        secrets = self.by_alg.get(HS256)
        return secrets[0] if secrets else None

    def __repr__(self) -> str:  # never the keys themselves
        return f"KeySet({ {alg: len(keys) for alg, keys in self.by_alg.items()} })"


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def _secrets(data: bytes) -> list[bytes]:
    secrets = []
    for number, line in enumerate(data.splitlines(), 1):
        secret = line.strip()
        if not secret or secret.startswith(b"#"):
            continue
        if len(secret) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"jwt_secret_file: the secret on line {number} is shorter than "
                f"{MIN_JWT_SECRET_BYTES} bytes"
            )
        secrets.append(secret)
    if not secrets:
        raise ConfigError("jwt_secret_file holds no secret")
    return secrets


def _public_keys(data: bytes) -> dict[str, list[Any]]:
    keys: dict[str, list[Any]] = {}
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise ConfigError("jwt_public_key_file holds no PEM public key")
    for index, block in enumerate(blocks, 1):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError:
            raise ConfigError(
                f"jwt_public_key_file: PEM block {index} is not a public key"
            ) from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise ConfigError(
                    f"jwt_public_key_file: RSA key {index} has {key.key_size} bits "
                    f"(at least {MIN_RSA_BITS})"
                )
            keys.setdefault(RS256, []).append(key)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys.setdefault(ES256, []).append(key)
        else:
            raise ConfigError(
                f"jwt_public_key_file: key {index} is neither RSA (RS256) nor P-256 (ES256)"
            )
    return keys


def load_keys(config: HubConfig) -> KeySet:
    """The configured secrets and public keys; `ConfigError` naming the key on a problem."""
    by_alg: dict[str, list[Any]] = {}
    if config.jwt_secret:
        by_alg[HS256] = [config.jwt_secret.encode()]
    elif config.jwt_secret_file:
        by_alg[HS256] = _secrets(_read(config.jwt_secret_file, "jwt_secret_file"))
    if config.jwt_public_key_file:
        by_alg.update(_public_keys(_read(config.jwt_public_key_file, "jwt_public_key_file")))
    return KeySet(by_alg)


# --- tokens --------------------------------------------------------------------------------


class TokenVerifier:
    """Verifies a JWT with the configured keys and makes its `Principal`.

    The token's `alg` header picks the keys (a token may only be verified with a
    key of its own kind: no HS256 token is ever checked against a public key);
    every key of that kind is tried (rotation: old and new side by side)."""

    def __init__(self, keys: KeySet) -> None:
        if not keys.by_alg:
            raise ConfigError("no key to verify tokens with")
        self._keys = keys
        self._jwt = jwt.PyJWT()

    def __repr__(self) -> str:
        return f"TokenVerifier({self._keys!r})"

    def verify(self, token: str) -> Principal:
        """The token's principal; `Refusal` 401 when it cannot be trusted or used."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise _unauthorized("malformed token") from None
        keys = self._keys.by_alg.get(alg) if isinstance(alg, str) else None
        if not keys or not isinstance(alg, str):
            raise _unauthorized(f"token algorithm {alg!r} is not accepted here")
        for key in keys:
            try:
                claims = self._jwt.decode(
                    token, key, algorithms=[alg],
                    options={"require": ["exp", "sub", "role"]},
                )
            except jwt.InvalidSignatureError:
                continue  # perhaps the next key (rotation)
            except jwt.ExpiredSignatureError:
                raise _unauthorized("token expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise _unauthorized(f"token lacks the claim {exc.claim!r}") from None
            except jwt.InvalidTokenError as exc:
                raise _unauthorized(f"invalid token: {exc}") from None
            try:
                return principal_from_claims(claims)
            except ClaimsError as exc:
                raise _unauthorized(str(exc)) from None
        raise _unauthorized("token signature does not verify")


def mint_token(
    secret: bytes | str,
    *,
    role: str,
    sub: str,
    ttl_s: float,
    tenant: str = DEFAULT_TENANT,
    node_ids: Iterable[str] = (),
    now: Callable[[], float] = time.time,
) -> str:
    """An HS256 token (`hub token`, the demo, tests), checked against the claim rules."""
    issued = int(now())
    claims: dict[str, Any] = {
        "sub": sub, "role": role, "tenant": tenant, "iat": issued, "exp": issued + int(ttl_s),
    }
    patterns = list(node_ids)
    if patterns:
        claims["node_ids"] = patterns
    principal_from_claims(claims)  # ClaimsError: refuse to mint what no hub would accept
    if role != NODE and patterns:
        raise ClaimsError("node_ids only apply to role 'node'")
    return jwt.encode(claims, secret, algorithm=HS256)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `24h`, `7d` -> seconds (`ValueError` otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 30m, 24h, 7d)")
    return float(match[1]) * _UNITS[match[2]]


# --- the door ------------------------------------------------------------------------------


class Gate:
    """Origin, then token and role, for one request (see the module docstring)."""

    def __init__(self, config: HubConfig, verifier: TokenVerifier | None) -> None:
        self._origins = frozenset(origin.lower() for origin in config.allowed_origins)
        self._metrics_public = config.metrics_public
        self._verifier = verifier

    @classmethod
    def from_config(cls, config: HubConfig) -> Gate:
        """Reads the key files (`ConfigError` on a problem)."""
        verifier = TokenVerifier(load_keys(config)) if config.auth == "jwt" else None
        return cls(config, verifier)

    @property
    def authenticates(self) -> bool:
        return self._verifier is not None

    @property
    def mode(self) -> str:
        """The `auth` key this gate enforces, for the log."""
        return "jwt" if self._verifier is not None else "none"

    def exposure_warning(self, host: str, port: int) -> str | None:
        """What to warn an operator of before serving on `host`: a hub without
        authentication reachable from another machine."""
        if self._verifier is not None or is_loopback_host(host):
            return None
        return (
            f'auth = "none" on {host}, which is not a loopback address: anyone who reaches '
            f"port {port} can register as a node (and receive clients' payloads), submit "
            'jobs and read job records. Set auth = "jwt" (docs/operations.md, "Running in '
            'production").'
        )

    def admit(
        self, path: str, query: str, headers: Mapping[str, str], *, method: str = "GET"
    ) -> Principal:
        """Who the request speaks for; `Refusal` (400, 401 or 403) when it may not pass.
        `headers` is case-insensitive (websockets' `Headers`)."""
        if self._origins:
            origin = _header(headers, "Origin")
            if origin is not None and str(origin).lower() not in self._origins:
                raise _forbidden("this Origin is not allowed")
        if self._verifier is None:
            return ANONYMOUS
        roles = required_roles(path, method=method, metrics_public=self._metrics_public)
        if not roles:
            return PUBLIC
        principal = self._verifier.verify(self._token(query, headers))
        if principal.role not in roles:
            raise _forbidden(f"role {principal.role!r} may not use {path}")
        return principal

    @staticmethod
    def _token(query: str, headers: Mapping[str, str]) -> str:
        authorization = _header(headers, "Authorization")
        if authorization is not None:
            scheme, _, token = str(authorization).strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized("Authorization must be 'Bearer <token>'")
            return token.strip()
        if query:
            tokens = parse_qs(query).get("token")
            if tokens:
                return tokens[0]
        raise _unauthorized("no token: send 'Authorization: Bearer <token>' or '?token='")
