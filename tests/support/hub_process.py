"""Real hub processes (`python -m hub.app.cli serve`) for multi-hub tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from tests.support.redis_server import free_port


class HubProcess:
    """One `hub serve` child process in cross-instance mode, with short timers."""

    def __init__(self, hub_id: str, redis_url: str, prefix: str, **flags: Any) -> None:
        self.hub_id = hub_id
        self.port = free_port()
        settings = {
            "hub_id": hub_id,
            "port": self.port,
            "deployment_mode": "cross_instance",
            "redis_url": redis_url,
            "redis_prefix": prefix,
            "heartbeat_interval_ms": 100,
            "node_timeout_ms": 1500,
            "accept_timeout_ms": 1000,
            "job_timeout_ms": 3000,
            "load_publish_interval_ms": 10,
            "resync_interval_ms": 1000,
            "log_level": "INFO",
        }
        settings.update(flags)
        self.args = [sys.executable, "-m", "hub.app.cli", "serve"]
        for key, value in settings.items():
            self.args += [f"--{key.replace('_', '-')}", str(value)]
        self._dir = tempfile.TemporaryDirectory(prefix=f"hub-{hub_id}-")
        self.log_path = os.path.join(self._dir.name, "hub.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub {self.hub_id} exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.http_url + "/healthz", timeout=0.5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"hub {self.hub_id} did not serve within {timeout_s}s:\n{self.output()}")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http_url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.http_url + path, timeout=5) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup (the failure the other hubs must survive)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        """Send a signal (SIGTERM drains, a second one stops at once)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def get_status(self, path: str) -> tuple[int, Any]:
        """(HTTP status, JSON body) of a GET, whatever the status."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
            if time.monotonic() - started > 5:
                print(f"hub {self.hub_id} took {time.monotonic() - started:.1f}s to stop:")
                print(self.output())

    def output(self) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()[-5000:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()
