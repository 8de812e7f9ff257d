"""The metrics the dashboards and alerts use are the ones the services export: every service is
started for real (as the image runs it), made to record what it can, scraped, the scrape linted
by `promtool check metrics`, and every metric name a dashboard or alert uses looked up in it.
Names not exported yet must be listed, with the reason, in deploy/k8s/monitoring/pending-metrics.txt;
the list is printed on every run, and an entry that the scrape now shows fails the test until it
is taken off the list."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flourish.local.services import SERVICES
from shared.messaging.clients import ADMIN, kafka_options
from tests.deploy import live
from tests.deploy.conftest import PENDING_REPORT, Tools
from tests.deploy.promql import TARGET_LABELS, alert_queries, dashboard_queries, pending_metrics, selectors

pytestmark = pytest.mark.infra


@pytest.fixture(scope="session")
async def scrapes(stack_settings, tmp_path_factory) -> AsyncIterator[dict[str, str]]:
    """Each service's /metrics after it has recorded everything it can record today."""
    async with live.live_platform(stack_settings, tmp_path_factory.mktemp("live-platform")) as platform:
        await live.exercise_http(platform)
        remove_oversized = await live.exercise_outbox(platform)
        with_consumers = await live.exercise_consumers(platform, kafka_options(stack_settings, ADMIN))
        conditions = {"assessment": ["flourish_outbox_published_total", "flourish_outbox_publish_failures_total"]}
        for name in with_consumers:
            conditions.setdefault(name, []).append("flourish_dead_lettered_total")
        # Everything the dashboards and alerts use that is not listed as pending should show up.
        expected = set(used_by_dashboards_and_alerts()) - set(pending_metrics())
        await live.wait_for(platform, conditions, expected)
        await remove_oversized()
        yield {name: await platform.scrape(name) for name in SERVICES}


def exported(scrapes: dict[str, str]) -> dict[str, set[str]]:
    """Every sample name in any scrape → the label names it carries."""
    labels: dict[str, set[str]] = defaultdict(set)
    for scrape in scrapes.values():
        for family in text_string_to_metric_families(scrape):
            for sample in family.samples:
                labels[sample.name] |= set(sample.labels)
    return labels


def used_by_dashboards_and_alerts() -> dict[str, list[tuple[str, set[str]]]]:
    """Metric name → where it is used, with the labels matched there."""
    uses: dict[str, list[tuple[str, set[str]]]] = defaultdict(list)
    for query in alert_queries() + dashboard_queries():
        for name, labels in selectors(query.expr):
            uses[name].append((query.where, labels))
    return uses


@pytest.mark.parametrize("service", list(SERVICES))
def test_promtool_finds_each_live_scrape_well_formed(tools: Tools, scrapes, service):
    result = subprocess.run([str(tools.promtool), "check", "metrics"], input=scrapes[service],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool check metrics on {service}'s /metrics:\n{result.stdout}{result.stderr}"
    assert "flourish_http_request_duration_seconds_count" in scrapes[service]


def test_every_metric_a_dashboard_or_alert_uses_is_exported_or_pending(scrapes):
    available = exported(scrapes)
    pending = pending_metrics()
    uses = used_by_dashboards_and_alerts()
    PENDING_REPORT.extend(f"{name}  ({reason})" for name, reason in sorted(pending.items()))
    print("\nmetrics pending (named by dashboards or alerts, not exported yet):")
    for name, reason in sorted(pending.items()):
        print(f"  {name}: {reason}")
    missing = {name: [where for where, _ in places] for name, places in uses.items()
               if name not in available and name not in pending}
    assert not missing, "used but neither exported nor listed as pending:\n" + "\n".join(
        f"  {name}: {', '.join(sorted(set(places)))}" for name, places in sorted(missing.items()))
    assert uses.keys() - pending.keys() <= available.keys()


def test_the_pending_list_holds_nothing_that_is_exported_or_unused(scrapes):
    available = exported(scrapes)
    pending = pending_metrics()
    now_exported = sorted(name for name in pending if name in available)
    assert not now_exported, f"exported now: take these off deploy/k8s/monitoring/pending-metrics.txt: {now_exported}"
    unused = sorted(pending.keys() - used_by_dashboards_and_alerts().keys())
    assert not unused, f"no dashboard or alert uses these pending metrics: {unused}"


def test_dashboards_and_alerts_match_only_on_labels_the_metrics_carry(scrapes):
    """A matcher on a label a metric does not have selects nothing (status vs. status_code)."""
    available = exported(scrapes)
    wrong = []
    for name, places in used_by_dashboards_and_alerts().items():
        if name not in available:
            continue  # pending: its labels are checked when it is exported
        for where, labels in places:
            unknown = labels - available[name] - TARGET_LABELS
            if unknown:
                wrong.append(f"{where}: {name} has no label {sorted(unknown)} (it has {sorted(available[name])})")
    assert not wrong, "\n".join(wrong)


def test_the_metric_lexer_finds_names_and_matchers_and_skips_functions_and_keywords():
    expr = ('sum by (a) (rate(x_total{b="c}", d!~"e|f"}[5m] offset 1h)) / on (a) group_left(z) y '
            'unless absent(w) > 0.5 and 1e3 < bool inf')
    assert sorted(selectors(expr)) == [("w", set()), ("x_total", {"b", "d"}), ("y", set())]
