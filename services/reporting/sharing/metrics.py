"""flourish_webhook_deliveries_total{outcome}: every try of a webhook, by what became of it;
flourish_webhook_endpoints_disabled_total{reason}: agency endpoints disabled (410, or five days failing)."""

from __future__ import annotations

from enum import StrEnum

from shared.telemetry import meter


class Outcome(StrEnum):
    DELIVERED = "delivered"  # the endpoint answered 2xx
    RETRIED = "retried"  # the try failed; another is scheduled
    FAILED = "failed"  # the last try failed: dead-lettered
    BLOCKED = "blocked"  # not sent: consent not in force (or not establishable) at delivery


deliveries = meter.create_counter(
    "flourish_webhook_deliveries", unit="{delivery}",
    description="Webhook delivery tries to agencies, by outcome (delivered, retried, failed, blocked)",
)


endpoints_disabled = meter.create_counter(
    "flourish_webhook_endpoints_disabled", unit="{endpoint}",
    description="Agency webhook endpoints disabled, by reason (gone: answered 410; failing: five days of failures)",
)


def endpoint_disabled(reason: str) -> None:
    endpoints_disabled.add(1, {"reason": reason})


def record(outcome: Outcome, count: int = 1) -> None:
    deliveries.add(count, {"outcome": outcome.value})


def initialise() -> None:
    """Export every outcome from the start (at 0), so rates and alerts see the series at once."""
    for outcome in Outcome:
        deliveries.add(0, {"outcome": outcome.value})
    for reason in ("gone", "failing"):
        endpoints_disabled.add(0, {"reason": reason})
