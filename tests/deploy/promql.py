"""What the alert rules and dashboards ask Prometheus for: their PromQL expressions, the metric
names in them and the labels they match on. A small lexer, not a PromQL parser: promtool parses
the same expressions for real (test_monitoring.py), this only has to find the names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.deploy.manifests import K8S

MONITORING = K8S / "monitoring"
RULES = MONITORING / "rules" / "flourish-alerts.yaml"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
PENDING = MONITORING / "pending-metrics.txt"

# Labels Prometheus adds at scrape time (prometheus-scrape-config.yaml), not the services.
TARGET_LABELS = {"namespace", "pod", "service", "component", "job", "instance", "le"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}


@dataclass(frozen=True)
class Query:
    where: str  # "alert FlourishDeadLetters", "dashboard flourish-api: Requests per second"
    expr: str


def alert_queries(path: Path = RULES) -> list[Query]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [Query(f"{'alert' if 'alert' in rule else 'record'} {rule.get('alert') or rule.get('record')}", rule["expr"])
            for group in groups for rule in group["rules"]]


def _grafana_to_promql(expr: str) -> str:
    """Grafana's variables as Prometheus would see them after substitution."""
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?(\w+)\}?", r"\1", expr)


def dashboard_queries(paths: list[Path] = DASHBOARDS) -> list[Query]:
    queries = []
    for path in paths:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append(Query(f"dashboard {dashboard['uid']}: {panel['title']}", _grafana_to_promql(target["expr"])))
        for variable in dashboard["templating"]["list"]:
            query = variable.get("query")
            if isinstance(query, dict) and (match := re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query["query"])):
                queries.append(Query(f"dashboard {dashboard['uid']}: variable {variable['name']}",
                                     _grafana_to_promql(match.group(1))))
    return queries


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


_TOKEN = re.compile(
    r"(?P<clause>\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))"
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<matchers>\{[^}]*\})"
    r"|(?P<offset>\boffset\s+-?\w+)"
    r"|(?P<name>(?<![\w.])[A-Za-z_:][\w:]*(?![\w.]))"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.S,
)


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names it matches on) for every vector selector in the expression."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(_strip_strings(expr)) if m.lastgroup != "space"]
    for index, (kind, value) in enumerate(tokens):
        if kind != "name" or value in _KEYWORDS:
            continue
        rest = tokens[index + 1:]
        while rest and rest[0][0] == "clause":  # sum by (x) (...): the grouping comes first
            rest = rest[1:]
        following = rest[0] if rest else (None, "")
        if following[1] == "(":
            continue  # a function or an aggregation
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", following[1])) if following[0] == "matchers" else set()
        yield value, labels


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


def pending_metrics(path: Path = PENDING) -> dict[str, str]:
    """Name → why it is not exported yet, from the allow-list."""
    pending = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition("#")
            pending[name.strip()] = reason.strip()
    return pending
