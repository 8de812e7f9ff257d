"""flourish_webhook_deliveries_total{outcome}: every try of a webhook, by what became of it."""

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


def record(outcome: Outcome, count: int = 1) -> None:
    deliveries.add(count, {"outcome": outcome.value})


def initialise() -> None:
    """Export every outcome from the start (at 0), so rates and alerts see the series at once."""
    for outcome in Outcome:
        deliveries.add(0, {"outcome": outcome.value})
