"""Secrets out of what is printed: a URL's password becomes `***`.

Used wherever a URL that may carry credentials is logged, put in an error
message or shown by a `repr` (`redis_url`: `HubConfig`, `RedisStore`, the
`hub serve` start-up error). Pure string work.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK: Final = "***"
SECRET_QUERY_KEYS: Final = frozenset({"password", "pass", "pwd", "token", "secret"})
"""Query parameters whose values are secrets (redis-py reads `password` from the query)."""


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or query parameter) replaced by `***`; a URL
    that does not parse is masked whole rather than risk printing a secret."""
    try:
        parts = urlsplit(url)
        password = parts.password
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return MASK
    redacted = url
    if password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        redacted = redacted.replace(parts.netloc, f"{user}{sep}{MASK}@{hostinfo}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(key.lower() in SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
            )
            head, _, tail = redacted.partition("?")
            fragment = tail.partition("#")[2]
            redacted = f"{head}?{query}" + (f"#{fragment}" if fragment else "")
    return redacted
