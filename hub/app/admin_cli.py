"""The operator's commands: `hub nodes`, `hub jobs`, `hub job ID`, `hub drain
NODE`, `hub undrain NODE`, `hub cancel JOB`, `hub stats`, over the admin HTTP API.

Each talks to `--url` (env `NODEHUB_URL`; `ws://`/`wss://` hub URLs work too;
default `http://127.0.0.1:8765`) with `--token` (env `NODEHUB_TOKEN`: an admin
token when the hub runs `auth = "jwt"`), and `--ca-file` (env `NODEHUB_CA_FILE`) to
trust a private CA for `https://`. Tables by default, `--json` for machines.

HTTP: the standard library's `urllib.request` with an `ssl` context. A command
makes one request at a time (`hub nodes` a few, one per page), so a client library
(httpx, requests) would add a dependency and buy nothing here.

Exit status: 0 done; 1 the hub answered no (unknown node or job, a finished job, a
hub that did not answer in time); 2 the command could not be carried out (the
hub is unreachable, the token was refused: 401/403, a bad argument). Errors are
one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from hub.app.settings import CA_FILE_ENV, TOKEN_ENV, URL_ENV

DEFAULT_URL: Final = "http://127.0.0.1:8765"
TIMEOUT_S: Final = 10.0
PAGE: Final = 500
COMMANDS: Final = ("nodes", "jobs", "job", "drain", "undrain", "cancel", "stats")


class CliError(Exception):
    """One line for stderr, and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def base_url(url: str) -> str:
    """The hub's HTTP base URL from what an operator may type (`ws://host:port`,
    `https://host`, `host:port`)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url {url!r} is not an http(s):// or ws(s):// URL", 2)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


class AdminClient:
    """The admin HTTP API of one hub."""

    def __init__(self, url: str, token: str | None, ca_file: str | None = None) -> None:
        self.url = base_url(url)
        self.token = token or None
        self._ssl: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"--ca-file {ca_file}: {exc}", 2) from None

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None) -> Answer:
        target = self.url + path
        if query:
            target += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(
            target, method=method, data=b"" if method != "GET" else None
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._ssl) as resp:
                return Answer(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, dict(exc.headers.items()), exc.read())
            raise self._refusal(answer) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the hub at {self.url}: {reason}", 2) from None

    def _refusal(self, answer: Answer) -> CliError:
        try:
            body = answer.json() or {}
        except ValueError:
            body = {}
        code = body.get("error", "") if isinstance(body, dict) else ""
        message = body.get("message", "") if isinstance(body, dict) else ""
        detail = f"{code}: {message}" if message else code or answer.body[:200].decode(
            "utf-8", "replace"
        )
        if answer.status == 401:
            hint = f" (pass an admin token: --token or {TOKEN_ENV}; `hub token --role admin`)"
            return CliError(f"401 {detail}{hint}", 2)
        if answer.status == 403:
            return CliError(f"403 {detail} (this command needs a token of role admin)", 2)
        status = 1 if answer.status in (404, 409, 503, 504) else 2
        return CliError(f"{answer.status} {detail}", status)

    def nodes(self, *, pool: int | None, status: str | None, limit: int | None) -> list[Any]:
        """Every node (or the first `limit`), following `X-Next-After` page by page."""
        nodes: list[Any] = []
        after: str | None = None
        while limit is None or len(nodes) < limit:
            answer = self.request("GET", "/v1/nodes", {
                "limit": PAGE, "after": after, "pool": pool, "status": status,
            })
            nodes.extend(answer.json())
            after = answer.headers.get("X-Next-After") or answer.headers.get("x-next-after")
            if not after:
                break
        return nodes if limit is None else nodes[:limit]


# --- printing ------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows)
               for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _pairs(caps: Mapping[str, Any]) -> str:
    pairs = [f"{p['src']}>{p['tgt']}" for p in caps.get("language_pairs", [])]
    shown = ",".join(pairs[:3])
    return shown + (f",+{len(pairs) - 3}" if len(pairs) > 3 else "") if pairs else "-"


def print_nodes(nodes: list[Any]) -> None:
    rows = [[n["node_id"], n["hub_id"], n["pool"], n["status"], n["running"],
             n["max_concurrency"], _pairs(n.get("capabilities", {})), n.get("version") or "-"]
            for n in nodes]
    print(table(["NODE", "HUB", "POOL", "STATUS", "RUNNING", "MAX", "PAIRS", "VERSION"], rows))
    print(f"{len(nodes)} node(s)")


def _age(created_ms: int) -> str:
    seconds = max(0.0, time.time() - created_ms / 1000)
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def print_jobs(jobs: list[Any]) -> None:
    rows = [[j["job_id"], j["state"], j["status"], j["node_id"] or "-", j["attempt"],
             f"{j['src_lang']}>{j['tgt_lang']}", _age(j["created_ms"]), j["request_id"],
             j["tenant"]] for j in jobs]
    print(table(["JOB", "STATE", "STATUS", "NODE", "ATTEMPT", "PAIR", "AGE", "REQUEST",
                 "TENANT"], rows))
    print(f"{len(jobs)} job(s)")


def print_job(job: Mapping[str, Any]) -> None:
    for key in ("job_id", "request_id", "tenant", "state", "status", "hub_id", "node_id",
                "attempt", "src_lang", "tgt_lang", "features", "created_ms", "timeout_ms",
                "excluded"):
        if key in job:
            value = job[key]
            print(f"{key:<12} {', '.join(value) if isinstance(value, list) else value}")
    attempts = job.get("attempts") or []
    if attempts:
        print("attempts")
        print(table(["ATTEMPT", "NODE", "STARTED_MS", "OUTCOME"],
                    [[a["attempt"], a["node_id"], a["started_ms"], a["outcome"]]
                     for a in attempts]))
    result = job.get("result")
    if result:
        error = result.get("error") or {}
        outcome = "ok" if result.get("ok") else (
            f"failed: {error.get('code')} {error.get('message', '')}"
        )
        print(f"{'result':<12} {outcome.strip()}")


def print_stats(stats: Mapping[str, Any]) -> None:
    nodes = stats["nodes"]
    print("nodes    " + "  ".join(f"{k} {v}" for k, v in nodes.items()))
    print(f"slots    total {stats['slots']['total']}  busy {stats['slots']['busy']}")
    print(f"jobs     active {stats['jobs']['active']}  queued {stats['jobs']['queued']}  "
          f"{stats['jobs_per_s']} finished/s")
    pools = stats.get("pools") or {}
    if pools:
        rows = [[int(pool), p["nodes"],
                 " ".join(f"{k} {v}" for k, v in p.get("status", {}).items()),
                 p["slots"]["total"], p["slots"]["busy"]] for pool, p in pools.items()]
        print(table(["POOL", "NODES", "STATUS", "SLOTS", "BUSY"], rows))


# --- the commands ----------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """The admin commands, as subcommands of `hub`."""
    def common(cmd: argparse.ArgumentParser) -> argparse.ArgumentParser:
        cmd.add_argument("--url", default=None,
                         help=f"the hub (http://, https://, ws://, wss://); env {URL_ENV}; "
                              f"default {DEFAULT_URL}")
        cmd.add_argument("--token", default=None,
                         help=f"an admin token (auth = jwt); env {TOKEN_ENV}")
        cmd.add_argument("--ca-file", default=None, metavar="PEM",
                         help=f"CA certificates to trust for https://; env {CA_FILE_ENV}")
        cmd.add_argument("--json", action="store_true", help="print JSON, not a table")
        return cmd

    nodes = common(commands.add_parser("nodes", help="list the nodes (every page)"))
    nodes.add_argument("--pool", type=int, help="only this pool")
    nodes.add_argument("--status", choices=("online", "draining", "offline"),
                       help="only nodes with this status")
    nodes.add_argument("--limit", type=int, help="at most this many nodes")
    jobs = common(commands.add_parser("jobs", help="list this hub's unfinished jobs"))
    jobs.add_argument("--state", choices=("active", "queued"), default="active",
                      help="active: every unfinished job (default); queued: waiting for a slot")
    jobs.add_argument("--limit", type=int, default=100, help="at most this many (1..1000)")
    job = common(commands.add_parser("job", help="one job's record"))
    job.add_argument("job_id", metavar="JOB_ID")
    for name, what in (("drain", "no new jobs for a node (running ones finish)"),
                       ("undrain", "a drained node takes jobs again")):
        cmd = common(commands.add_parser(name, help=what))
        cmd.add_argument("node_id", metavar="NODE_ID")
    cancel = common(commands.add_parser("cancel", help="cancel an unfinished job"))
    cancel.add_argument("job_id", metavar="JOB_ID")
    common(commands.add_parser("stats", help="fleet and job counts"))


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Carry out one admin command; its exit status."""
    env = os.environ if environ is None else environ
    try:
        client = AdminClient(
            args.url or env.get(URL_ENV) or DEFAULT_URL,
            args.token or env.get(TOKEN_ENV),
            args.ca_file or env.get(CA_FILE_ENV),
        )
        return _run(client, args)
    except CliError as exc:
        print(f"hub {args.command}: {exc.message}", file=sys.stderr)
        return exc.status


def _run(client: AdminClient, args: argparse.Namespace) -> int:
    command = args.command
    value: Any
    if command == "nodes":
        value = client.nodes(pool=args.pool, status=args.status, limit=args.limit)
        if not args.json:
            print_nodes(value)
    elif command == "jobs":
        value = client.request(
            "GET", "/v1/jobs", {"state": args.state, "limit": args.limit}
        ).json()
        if not args.json:
            print_jobs(value)
    elif command == "job":
        value = client.request("GET", "/v1/jobs/" + quote(args.job_id, safe="")).json()
        if not args.json:
            print_job(value)
    elif command in ("drain", "undrain"):
        client.request("POST", f"/v1/nodes/{quote(args.node_id, safe='')}/{command}")
        value = {"node_id": args.node_id, "action": command, "ok": True}
        if not args.json:
            print(f"node {args.node_id}: {'draining' if command == 'drain' else 'online'}")
    elif command == "cancel":
        client.request("DELETE", "/v1/jobs/" + quote(args.job_id, safe=""))
        value = {"job_id": args.job_id, "action": "cancel", "ok": True}
        if not args.json:
            print(f"job {args.job_id}: cancelled")
    else:
        value = client.request("GET", "/v1/stats").json()
        if not args.json:
            print_stats(value)
    if args.json:
        print(json.dumps(value, indent=2))
    return 0
