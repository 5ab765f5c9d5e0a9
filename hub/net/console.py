"""`ConsoleAssets`: the live fleet console's static files, served at `/ui`.

The console is a page of plain HTML, CSS and JavaScript in `hub/net/ui/`
(package data: no build step, no CDN, nothing fetched from elsewhere). It
holds no data: the page's script reads `/v1/stats` and `/v1/nodes` like any
admin client, with the admin token the operator gives it. So the gate
(`hub.core.principal.required_roles`) lets `GET /ui` and `GET /ui/<file>`
pass without a token.

The files are read once, when the hub starts. `/ui` and `/ui/` answer the
page, whose references to its script and style carry a hash of their
content (`console.js?v=...`): those can then be cached for good, and a new
hub version is never mixed with an old script. Every answer carries a strict
Content-Security-Policy (only this origin's script, style and connections; no
inline script; no framing), so even a node id or label crafted as markup could
not run as script (the script also only ever sets text, never HTML).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from hub.core.principal import UI_PATH

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The console's files (in `hub/net/ui/`) and their content types."""
INDEX: Final = "index.html"

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CACHE_FOREVER: Final = "public, max-age=31536000, immutable"
CACHE_NEVER: Final = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    """One answer of the console: a file's bytes, content type and headers."""

    body: bytes
    content_type: str
    headers: dict[str, str]


class ConsoleAssets:
    """The console's files, read once; `respond(path)` for `/ui`, `/ui/` and `/ui/<file>`."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        files = files if files is not None else load_files()
        self._versions = {
            name: hashlib.sha256(body).hexdigest()[:12] for name, body in files.items()
        }
        index = files.get(INDEX)
        if index is not None:
            for name, version in self._versions.items():
                index = index.replace(
                    f'"{UI_PATH}/{name}"'.encode(), f'"{UI_PATH}/{name}?v={version}"'.encode()
                )
            files = {**files, INDEX: index}
        self._files = files

    def __repr__(self) -> str:
        return f"ConsoleAssets({sorted(self._files)})"

    def lookup(self, path: str, query: str = "") -> Asset | None:
        """The file at `path` (a `/ui` path); None for a name that is not one of them
        (the caller answers 404 with `SECURITY_HEADERS`)."""
        name = INDEX if path in (UI_PATH, UI_PATH + "/") else path[len(UI_PATH) + 1:]
        body = self._files.get(name)
        if body is None:
            return None
        versioned = name != INDEX and f"v={self._versions[name]}" in query.split("&")
        headers = {
            **SECURITY_HEADERS, "Cache-Control": CACHE_FOREVER if versioned else CACHE_NEVER,
        }
        return Asset(body, ASSETS[name], headers)


def load_files() -> dict[str, bytes]:
    """The console's files from the package (`hub/net/ui/`). One that is missing (an
    install without the package data) is left out: the hub serves without it (404),
    rather than not at all."""
    folder = resources.files("hub.net").joinpath("ui")
    files = {}
    for name in ASSETS:
        try:
            files[name] = folder.joinpath(name).read_bytes()
        except OSError:
            continue
    return files
