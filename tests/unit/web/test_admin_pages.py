"""The admin and operations pages' pieces that need no platform (their journeys: tests/browser/test_admin.py)."""

from __future__ import annotations

import json
from pathlib import Path

from services.web.pages.admin import _strand_chart
from services.web.pages.operations import DASHBOARDS, dashboard_links

ROOT = Path(__file__).resolve().parents[3]


def test_the_named_dashboards_are_the_ones_deploy_provisions() -> None:
    provisioned = sorted((ROOT / "deploy/k8s/monitoring/dashboards").glob("*.json"))
    found = sorted((json.loads(p.read_text())["uid"], json.loads(p.read_text())["title"],
                    str(p.relative_to(ROOT))) for p in provisioned)
    assert sorted(DASHBOARDS) == found


def test_dashboards_are_linked_only_to_a_configured_grafana() -> None:
    assert all(link["url"] is None for link in dashboard_links(None))
    assert all(link["url"] is None for link in dashboard_links("javascript:alert(1)"))
    links = dashboard_links("https://grafana.trust.example/")
    assert links[0]["url"] == f"https://grafana.trust.example/d/{DASHBOARDS[0][0]}"


def test_a_suppressed_cell_is_listed_never_drawn_nor_recomputed() -> None:
    chart, suppressed = _strand_chart("t", "T", {"Self": "c", "Others": 12, "World": 0})
    assert suppressed == ["Self"]
    assert [(bar.label, bar.value) for bar in chart.bars] == [("Others", 12.0), ("World", 0.0)]
    assert "Self" in chart.description
