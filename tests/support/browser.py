"""A real headless Chromium for the console tests, driven over its own DevTools protocol.

No browser download and no driver: Debian's `chromium` package (installed by
`scripts/test.sh` when missing and root), started with `--remote-debugging-port=0`;
the port it picked is read from `DevToolsActivePort` in its fresh profile
directory, and the test talks to it over one WebSocket (`websockets`) with
flattened target sessions (`Target.attachToTarget`).

`Chromium` is the process (sync: a module-scoped fixture); `Browser` is one
DevTools connection (async, per test) that opens `Page`s. A `Page` collects
the page's JavaScript exceptions, console errors and failed loads (a CSP
violation is one) in `problems`, which the tests assert empty.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    """`NODEHUB_CHROMIUM`, or the first Chromium on PATH."""
    override = os.environ.get("NODEHUB_CHROMIUM")
    if override:
        return override if shutil.which(override) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium process with a throwaway profile."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        # Errors removing it are ignored: a file a dying helper process wrote last.
        self._dir = tempfile.TemporaryDirectory(
            prefix="nodehub-chromium-", ignore_cleanup_errors=True
        )
        self.profile = Path(self._dir.name) / "profile"
        self.log_path = Path(self._dir.name) / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws_url = ""

    def start(self) -> None:
        args = [
            self.binary, *FLAGS, f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            "--window-size=1440,1000", "about:blank",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited at start:\n{self.output()}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                port, path = port_file.read_text().split("\n")[:2]
                if port.strip() and path.strip():
                    self.ws_url = f"ws://127.0.0.1:{int(port)}{path.strip()}"
                    return
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop Chromium and every helper process it started (its own process group:
        a renderer still writing into the profile would race the profile's removal)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._dir.cleanup()


class CdpError(Exception):
    pass


class Browser:
    """One DevTools connection: `async with Browser(chromium.ws_url) as browser:`."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        self._ws = await connect(self.ws_url, max_size=None, ping_interval=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for page in list(self._pages.values()):
            with contextlib.suppress(Exception):
                await page.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for frame in self._ws:
                message = json.loads(frame)
                if "id" in message:
                    future = self._waiting.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    page = self._pages.get(message.get("sessionId", ""))
                    if page is not None:
                        page.event(message["method"], message.get("params", {}))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CdpError("the DevTools connection closed"))

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
    ) -> dict[str, Any]:
        assert self._ws is not None
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        await self._ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self, *, width: int = 1440, height: int = 1000) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.call(f"{domain}.enable")
        await page.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
        })
        return page


class Page:
    """One tab."""

    def __init__(self, browser: Browser, target_id: str, session: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session = session
        self.problems: list[str] = []
        """JavaScript exceptions, console errors, failed loads, CSP violations."""
        self.requests: list[dict[str, Any]] = []
        """Every request the page sent: `{"url", "method", "headers"}`."""
        self._loaded = asyncio.Event()

    def event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.problems.append(f"console.error: {args}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error" and not _expected_http_error(entry):
                self.problems.append(f"log: {entry.get('text')} ({entry.get('url', '')})")
        elif method == "Network.requestWillBeSent":
            request = params.get("request", {})
            self.requests.append({
                "url": request.get("url", ""), "method": request.get("method", ""),
                "headers": request.get("headers", {}),
            })
        elif method == "Page.loadEventFired":
            self._loaded.set()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.call(method, params, session=self.session)

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        reply = await self.call("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"cannot open {url}: {reply['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), CALL_TIMEOUT_S)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        reply = await self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
        })
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression!r} raised {text}")
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            last = await self.evaluate(expression)
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {expression!r} "
                    f"(last value {last!r}; page problems {self.problems})"
                )
            await asyncio.sleep(0.05)

    async def text(self, selector: str) -> str:
        value = await self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent"
        )
        return "" if value is None else str(value)

    async def click(self, selector: str) -> None:
        found = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise AssertionError(f"nothing to click at {selector!r}")

    async def type_into(self, selector: str, text: str) -> None:
        """Set an input's value, as typing would (the page reads `.value`)."""
        await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.focus(); e.value = {json.dumps(text)};"
            " e.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )

    async def submit(self, form_selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(form_selector)}).requestSubmit()")

    async def screenshot(self, path: Path) -> bytes:
        reply = await self.call("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(reply["data"])
        await asyncio.to_thread(_write, path, data)
        return data

    async def close(self) -> None:
        self.browser._pages.pop(self.session, None)
        await self.browser.call("Target.closeTarget", {"targetId": self.target_id})


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _expected_http_error(entry: dict[str, Any]) -> bool:
    """A 401/403/404 answer the console handles itself (asking for a token, a job that
    does not exist): Chromium logs every failed fetch as an error."""
    text = str(entry.get("text", ""))
    return entry.get("source") == "network" and any(
        f"status of {status}" in text for status in (401, 403, 404)
    )
