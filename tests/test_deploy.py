"""`deploy/`: the Grafana dashboard and the Prometheus alerts name only metrics a real hub
exports, and the alerts the issue asks for exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from hub.app.hub import Hub
from tests.support.hubtest import http_get

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "nodehub.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_OWN = {"up"}
"""Series Prometheus records itself for every target (not exported by the hub)."""
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in IDENT.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group() in KEYWORDS:
            continue  # a function or a keyword
        names.add(match.group())
    return names


async def exported(hub: Hub) -> set[str]:
    """Every series name `/metrics` can carry, from its `# TYPE` lines."""
    status, _, body = await http_get(hub.http_url, "/metrics")
    assert status == 200
    names: set[str] = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":
                names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
            elif kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
            else:
                names.add(name)
    return names


def dashboard_exprs() -> list[str]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_metric_names_parser() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (op, le) (rate(x_bucket{op="a b"}[5m]))) > 0.05'
    ) == {"x_bucket"}
    assert metric_names("sum(a_total) / clamp_min(sum(b_total), 0.001)") == {"a_total", "b_total"}


async def test_every_expression_names_exported_metrics(hub: Hub) -> None:
    names = await exported(hub)
    assert {"nodehub_jobs_total", "nodehub_job_seconds_bucket", "process_open_fds"} <= names
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    for expr in exprs:
        used = metric_names(expr)
        assert used, expr
        unknown = used - names - PROMETHEUS_OWN
        assert not unknown, f"{expr!r} names {sorted(unknown)}, which the hub does not export"


def test_the_alerts_the_issue_asks_for() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for alert, metric in (
        ("NodehubDown", "up"),
        ("NodehubNoNodes", "nodehub_nodes"),
        ("NodehubHighNoNodeRate", "nodehub_no_node_total"),
        ("NodehubHighQueueTimeoutRate", "nodehub_jobs_total"),
        ("NodehubStoreErrors", "nodehub_store_errors_total"),
    ):
        assert metric in metric_names(rules[alert]["expr"]), alert
        assert rules[alert]["annotations"]["summary"]
        assert rules[alert]["labels"]["severity"] in ("warning", "critical")
