"""Process plumbing shared by the dispatch benchmark and its helper processes.

Every child is started in its own session (so its process group id is its
pid) and is killed with its whole group when the `ProcGroup` exits, even on
error. Children report to the parent with JSON lines on stdout; their stderr
goes to a log file in the group's temporary directory, shown when one fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to at least `wanted` (the hard limit too, when root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_ns(pids: list[int]) -> int:
    """CPU time the processes `pids` have run (ns, /proc/PID/schedstat: on-CPU time)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def http_get(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return bytes(response.read())


def wait_http(url: str, timeout: float = 20.0, context: ssl.SSLContext | None = None) -> bytes:
    """GET `url` until it answers 200 or `timeout` passes (`context`: for https)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return http_get(url, timeout=2.0, context=context)
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


def metric_value(metrics_text: str, name: str) -> float | None:
    for line in metrics_text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            return float(line.rsplit(" ", 1)[1])
    return None


def emit(**fields: Any) -> None:
    """Report to the parent: one JSON line on stdout."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Child:
    """One child process, its stdout JSON lines in a queue, its stderr in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str],
                 *, stdout_to_log: bool = False, stdin: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._log if stdout_to_log else subprocess.PIPE, stderr=self._log,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env, cwd=ROOT, start_new_session=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        if stdout_to_log:
            self.lines.put(None)  # no JSON lines from a program that is not ours
        else:
            self._reader = threading.Thread(
                target=self._read, name=f"stdout-{name}", daemon=True
            )
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode(errors="replace").strip()
            if not text:
                continue
            try:
                item = json.loads(text)
            except ValueError:
                item = {"text": text}
            self.lines.put(item if isinstance(item, dict) else {"value": item})
        self.lines.put(None)

    def write(self, line: str) -> None:
        """One line to the child's stdin (spawned with `stdin=True`)."""
        assert self.proc.stdin is not None, "spawned without stdin"
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next stdout JSON line holding `key` (earlier lines are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {key!r} line within {timeout}s{self.tail()}")
            try:
                item = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                code = self.proc.wait()
                raise RuntimeError(f"{self.name} exited ({code}) before {key!r}{self.tail()}")
            if key in item:
                return item

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout}s{self.tail()}") from None

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
            if text:
                return f"\n--- {self.name} stderr ({self.log_path}) ---\n" + "\n".join(text)
        return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=5)
        # Anything the child left behind in its group goes too.
        self.signal(signal.SIGKILL)
        self._log.close()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.stdout is not None:
            reader = getattr(self, "_reader", None)
            if reader is not None:
                reader.join(timeout=5)  # it reads up to the end of the output
            self.proc.stdout.close()


class ProcGroup:
    """`with ProcGroup() as procs:` every child started here is killed on exit."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nodehub-bench-"))
        self.keep_logs = keep_logs
        self.children: list[Child] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p
        )
        self.env["PYTHONUNBUFFERED"] = "1"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        if not self.keep_logs and exc_type is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def spawn(self, name: str, script: str, *args: str, extra_env: dict[str, str] | None = None,
              python: str = sys.executable, stdin: bool = False) -> Child:
        """Run `benchmarks/<script>` with the same interpreter."""
        env = dict(self.env)
        if extra_env:
            env.update(extra_env)
        log = self.dir / f"{name}.{len(self.children)}.log"
        child = Child(name, [python, str(HERE / script), *args], log, env, stdin=stdin)
        self.children.append(child)
        return child

    def spawn_program(self, name: str, argv: list[str]) -> Child:
        """Run another program (e.g. `redis-server`), its stdout and stderr to its log."""
        log = self.dir / f"{name}.{len(self.children)}.log"
        child = Child(name, argv, log, dict(self.env), stdout_to_log=True)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        while self.children:
            self.children.pop().stop()


def redis_command(port: int, *args: str, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """One Redis command over a fresh connection (RESP2); its simple, integer or bulk reply."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        reader = sock.makefile("rb")
        line = reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"Redis at {host}:{port} closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"-":
            raise RuntimeError(f"Redis error: {rest.decode(errors='replace')}")
        if kind == b"$":
            size = int(rest)
            return b"" if size < 0 else reader.read(size + 2)[:size]
        return rest


def redis_commandstats(port: int) -> dict[str, int]:
    """`INFO commandstats` as command -> calls, without the INFO calls themselves.

    Redis counts the commands a Lua script runs (`redis.call`) as well as the
    EVALSHA that ran it."""
    calls: dict[str, int] = {}
    for line in redis_command(port, "INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            values = dict(item.split("=", 1) for item in fields.split(","))
            calls[name] = int(values["calls"])
    calls.pop("info", None)
    return calls


def calls_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per-command calls between two `redis_commandstats` snapshots (nonzero only)."""
    delta = {name: n - before.get(name, 0) for name, n in after.items()}
    return {name: n for name, n in sorted(delta.items()) if n}


def install_exit_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks kill the children."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)


def start_redis(procs: ProcGroup, program: str) -> int:
    """A throwaway `redis-server` in the group: free port, no persistence, its own
    directory (under the group's, removed with it); its port once it answers PING."""
    port = free_port()
    data_dir = procs.dir / "redis"
    data_dir.mkdir()
    redis = procs.spawn_program("redis", [
        program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(data_dir), "--logfile", "",
    ])
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis_command(port, "PING", timeout=1.0) == b"PONG":
                return port
        except OSError:
            pass
        if redis.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not come up on port {port}{redis.tail()}")
        time.sleep(0.05)


def probe_loop_lag(loop: Any, label: str = "loop") -> None:
    """From a thread, ask `loop` to run a callback every millisecond (as an I/O event
    would) and write, every 5 s, how late those callbacks ran to stderr."""
    lags: list[float] = []

    def ran(asked: float) -> None:
        lags.append(time.monotonic() - asked)

    def probe() -> None:
        window_end = time.monotonic() + 5.0
        while not loop.is_closed():
            asked = time.monotonic()
            try:
                loop.call_soon_threadsafe(ran, asked)
            except RuntimeError:  # closed meanwhile
                return
            time.sleep(0.001)
            if time.monotonic() >= window_end and lags:
                ordered = sorted(lags)
                lags.clear()
                sys.stderr.write(
                    f"bench: {label} lag ms p50 {ordered[len(ordered) // 2] * 1000:.2f} "
                    f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.2f} "
                    f"max {ordered[-1] * 1000:.2f} ({len(ordered)} probes)\n"
                )
                sys.stderr.flush()
                window_end = time.monotonic() + 5.0

    threading.Thread(target=probe, name="loop-lag", daemon=True).start()
