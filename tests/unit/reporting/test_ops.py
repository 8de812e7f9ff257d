"""The ops page reads the figures the dashboards use and says in words what needs attention."""

from __future__ import annotations

from services.reporting.ops import render, summarise

SCRAPE = """
# TYPE flourish_consumer_lag gauge
flourish_consumer_lag{consumer="planning.scores",partition="0",topic="flourish.assessment"} 1500.0
flourish_consumer_lag{consumer="planning.scores",partition="1",topic="flourish.assessment"} 20.0
# TYPE flourish_dead_lettered_total counter
flourish_dead_lettered_total{consumer="planning.consent"} 2.0
# TYPE flourish_outbox_backlog gauge
flourish_outbox_backlog{schema="planning"} 7.0
# TYPE flourish_webhook_deliveries_total counter
flourish_webhook_deliveries_total{outcome="delivered"} 40.0
flourish_webhook_deliveries_total{outcome="failed"} 3.0
"""


def test_a_scrape_is_summarised_per_consumer_and_the_problems_are_named():
    health = summarise("planning", SCRAPE)
    assert health.consumer_lag == {"planning.scores": 1520.0}
    assert health.dead_letters == {"planning.consent": 2.0}
    assert health.outbox_backlog == 7.0 and health.webhook_failures == 3.0
    assert health.attention == ["consumer lag over 1,000", "dead letters waiting", "webhook deliveries failed"]


def test_a_service_that_does_not_answer_is_shown_as_such_and_a_quiet_one_as_ok():
    silent, quiet = summarise("consent", None), summarise("assessment", "")
    assert silent.attention == ["metrics unreachable"] and quiet.attention == []
    page = render([silent, quiet])
    assert "metrics unreachable" in page and '<span class="ok">ok</span>' in page


def test_the_page_lists_each_consumer_and_a_hostile_name_stays_text():
    hostile = '"><script>alert(1)</script>'
    health = summarise(hostile, '# TYPE flourish_consumer_lag gauge\n'
                                'flourish_consumer_lag{consumer="b.scores",partition="0",topic="t"} 3.0\n'
                                'flourish_consumer_lag{consumer="a.consent",partition="0",topic="t"} 1200.0\n'
                                '# TYPE flourish_audit_verification_failures_total counter\n'
                                'flourish_audit_verification_failures_total 2.0\n')
    page = render([health])
    assert "<td>a.consent: 1200<br>b.scores: 3</td>" in page and "<td>–</td>" in page  # no dead letters
    assert "–, 2 failed verifications" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_witness_that_is_unreachable_and_a_refused_chain_show_on_the_page():
    """The names are the ones the reporting process really exports (read back from its registry)."""
    from prometheus_client import REGISTRY, generate_latest

    from services.reporting.audit import metrics

    metrics.record_unwitnessed(2)
    metrics.checkpoints_refused.add(1, {"reason": "truncated"})
    try:
        health = summarise("reporting", generate_latest(REGISTRY).decode())
    finally:
        metrics.record_unwitnessed(0)
    assert health.audit_unwitnessed_checkpoints == 2
    assert health.audit_checkpoints_refused >= 1
    assert "audit checkpoints waiting for their witness" in health.attention
    assert "audit chain does not extend its witness: checkpoints refused" in health.attention
    page = render([health])
    assert "2 checkpoints not yet witnessed" in page and "chains refused" in page


def test_events_refused_as_from_the_wrong_producer_show_one_line_per_kind_and_need_attention():
    """The kernel's counter as the process exports it (prometheus_client's own exposition)."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    refusals = Counter("flourish_security_refusals_total", "Requests and events refused as not coming from whom they must",
                       ["kind"], registry=registry)
    refusals.labels(kind="event_from_wrong_producer").inc(2)
    refusals.labels(kind="key_request_from_another_client").inc(0)
    health = summarise("assessment", generate_latest(registry).decode())
    assert health.refused == {"event_from_wrong_producer": 2.0, "key_request_from_another_client": 0.0}
    assert health.attention == ["refused: event from wrong producer"]
    page = render([health])
    assert '<span class="warn">refused event_from_wrong_producer: 2</span>' in page
    assert "key_request_from_another_client" not in page  # a kind never refused is not a line


def test_the_kernel_defines_the_refusals_counter_the_page_reads():
    from prometheus_client import REGISTRY

    from shared.telemetry import security_refusals

    before = REGISTRY.get_sample_value("flourish_security_refusals_total", {"kind": "event_from_wrong_producer"}) or 0
    security_refusals.labels(kind="event_from_wrong_producer").inc()
    assert REGISTRY.get_sample_value("flourish_security_refusals_total", {"kind": "event_from_wrong_producer"}) == before + 1


def test_refused_requests_show_per_kind_and_ask_for_attention():
    health = summarise("consent", '# TYPE flourish_security_refusals_total counter\n'
                                  'flourish_security_refusals_total{kind="client_not_allowed"} 2.0\n'
                                  'flourish_security_refusals_total{kind="internal_path_via_ingress"} 1.0\n')
    assert health.refused == {"client_not_allowed": 2.0, "internal_path_via_ingress": 1.0}
    assert health.attention == ["refused: client not allowed", "refused: internal path via ingress"]
    page = render([health])
    assert '<span class="warn">refused client_not_allowed: 2</span>' in page
    assert '<span class="warn">refused internal_path_via_ingress: 1</span>' in page
    assert summarise("planning", "").refused == {} and summarise("planning", "").attention == []
