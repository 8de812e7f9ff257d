"""The alert rules, the Grafana dashboards and the OpenTelemetry collector's configuration are
valid: promtool parses every rule and every dashboard query, the scrape job is a valid Prometheus
configuration, every alert says how bad it is and where its runbook is, and what the overlays ship
as ConfigMaps is exactly what is checked here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import Tools
from tests.deploy.manifests import OVERLAYS, ROOT
from tests.deploy.promql import DASHBOARDS, MONITORING, RULES, alert_queries, dashboard_queries

DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"


def promtool(tools: Tools, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools.promtool), *args], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_alert_rules(tools: Tools):
    result = promtool(tools, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_queries())} rules found" in result.stdout


def test_promtool_refuses_a_broken_rule(tools: Tools, tmp_path: Path):
    """The check has teeth: a rule with a PromQL syntax error fails it."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES.read_text().replace("> 5000", "> > 5000", 1))
    assert promtool(tools, "check", "rules", str(broken)).returncode != 0


def test_every_dashboard_query_is_valid_promql(tools: Tools, tmp_path: Path):
    """promtool parses each query (Grafana's variables substituted) as a recording rule."""
    rules = [{"record": f"flourish:dashboard_query:{i}", "expr": query.expr} for i, query in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool(tools, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scrape_job_is_valid_prometheus_configuration(tools: Tools, tmp_path: Path):
    """Debian's Prometheus is built without Kubernetes service discovery, so the job is checked
    with static targets in its place: its relabelling (regexes, label names) is what can break."""
    jobs = yaml.safe_load((MONITORING / "prometheus-scrape-config.yaml").read_text())
    assert [job["job_name"] for job in jobs] == ["flourish"]
    for job in jobs:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "scrape_configs": jobs}))
    result = promtool(tools, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    relabelled = {step.get("target_label") for step in jobs[0]["relabel_configs"]}
    assert {"namespace", "service", "component", "pod"} <= relabelled


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists():
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")
               for heading in re.findall(r"^#+\s+(.*)$", DEPLOYMENT_DOC.read_text(), re.M)}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"]
            document, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert document == "docs/deployment.md" and anchor in anchors, f"{rule['alert']}: no section #{anchor}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_each_dashboard_is_grafana_json_on_a_chosen_prometheus(path: Path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem and dashboard["title"].startswith("Flourish")
    assert "flourish" in dashboard["tags"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat") and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        # Paths hold pupil ids: panels group by the route template, never by a path.
        assert not any(re.search(r"\b(path|url|target)\b", t["expr"]) for t in panel["targets"])


def test_the_dashboards_cover_what_the_operators_asked_for():
    titles = " | ".join(q.where for q in dashboard_queries()).lower()
    for topic in ("by type", "lag", "outbox backlog", "webhook", "audit checkpoint age", "latency", "errors"):
        assert topic in titles, topic


@pytest.mark.parametrize("path", [MONITORING / "collector" / "collector.yaml", ROOT / "deploy/k8s/overlays/dev/collector.yaml"],
                         ids=["base", "dev"])
def test_the_collector_pipelines_use_only_components_it_configures(path: Path):
    config = yaml.safe_load(path.read_text())
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{path.name}: {component} is not configured under {kind}"
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_ship_exactly_the_checked_rules_and_dashboards(overlays, overlay):
    maps = {c["metadata"]["name"]: c for c in overlays[overlay] if c["kind"] == "ConfigMap"}
    assert maps["flourish-prometheus-rules"]["data"]["flourish-alerts.yaml"] == RULES.read_text()
    dashboards = maps["flourish-grafana-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    for path in DASHBOARDS:
        assert dashboards["data"][path.name] == path.read_text()
