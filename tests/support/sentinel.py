"""A real Redis Sentinel deployment for tests: a master, a replica and three
`redis-server --sentinel` processes, on free ports, stopped by PID."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.redis_server import RedisServer, free_port

SERVICE = "mymaster"


def command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """One command over a raw socket (inline protocol); the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout) as conn:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        conn.sendall(b"".join(parts))
        reply = b""
        conn.settimeout(timeout)
        while True:
            chunk = conn.recv(65536)
            reply += chunk
            if not chunk or len(chunk) < 65536:
                return reply


class SentinelSetup:
    """`start()`: master, replica (in sync), three sentinels agreeing on both."""

    def __init__(self, *, down_after_ms: int = 600, failover_timeout_ms: int = 4000) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.master = RedisServer()
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", "0"])
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._dir = tempfile.TemporaryDirectory(prefix="nodehub-sentinel-")
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        self._wait(lambda: b"master_link_status:up" in command(
            self.replica.port, "INFO", "replication"), "the replica to sync")
        for port in self.sentinel_ports:
            conf = Path(self._dir.name) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f"dir {self._dir.name}\nlogfile {self._dir.name}/sentinel-{port}.log\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(subprocess.Popen(
                [self.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.sentinel_ports:
            self._wait(lambda port=port: self._sentinel_ready(port), f"sentinel {port}")

    def _sentinel_ready(self, port: int) -> bool:
        try:
            replicas = command(port, "SENTINEL", "REPLICAS", SERVICE)
            others = command(port, "SENTINEL", "SENTINELS", SERVICE)
        except OSError:
            return False
        return str(self.replica.port).encode() in replicas and others.startswith(b"*2")

    def _wait(self, cond: object, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if callable(cond) and cond():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}\n{self.logs()}")

    def master_port(self) -> int:
        """The master's port as the first sentinel names it now."""
        reply = command(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(reply.split(b"\r\n")[-2])

    def kill_master(self) -> None:
        """SIGKILL the master (no goodbye: the failure Sentinel must handle)."""
        assert self.master.proc is not None
        self.master.proc.send_signal(signal.SIGKILL)
        self.master.proc.wait(10)

    def wait_promoted(self, timeout: float = 30.0) -> None:
        self._wait(lambda: self.master_port() == self.replica.port and b"role:master" in
                   command(self.replica.port, "INFO", "replication"),
                   "the replica's promotion", timeout)

    def logs(self) -> str:
        out = []
        for path in sorted(Path(self._dir.name).glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(out)

    def close(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.master.close()
        self.replica.close()
        self._dir.cleanup()
