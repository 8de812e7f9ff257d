"""Consent-gated sharing with agencies over signed webhooks (docs/sharing.md).

    settings.py   FLOURISH_SHARING_* (retry schedule, allow-listed private networks, worker)
    tables.py     agencies, shares, the durable deliveries table and the delivery log
    endpoints.py  which webhook URLs may be registered (https; no private addresses)
    signing.py    Standard Webhooks signatures
    consent.py    asking the consent service's decision API as the service (fail closed)
    core.py       registering, sharing, the delivery worker, replay, deletion notices
    api.py        the HTTP API;  metrics.py flourish_webhook_deliveries_total{outcome}
"""

from __future__ import annotations

from services.reporting.sharing.api import sharing_router
from services.reporting.sharing.core import Sharing
from services.reporting.sharing.settings import SharingSettings
from shared.events.consent import ConsentWithdrawn
from shared.service import ConsumerSpec

__all__ = ["Sharing", "SharingSettings", "delivery_worker", "sharing_router", "withdrawal_consumer"]


def withdrawal_consumer(sharing: Sharing) -> ConsumerSpec:
    """Reads the consent context: a withdrawn sharing consent stops pending shares and sends
    deletion notices to the agencies that received the pupil's data."""
    return ConsumerSpec(name="sharing", contexts=["consent"], handlers={ConsentWithdrawn: sharing.on_consent_withdrawn})


def delivery_worker(sharing: Sharing):  # type: ignore[no-untyped-def]
    """The background task that delivers due webhooks (processes of role all or consumers)."""

    async def sharing_delivery_worker(runtime, stop):  # type: ignore[no-untyped-def]
        await sharing.worker(runtime, stop)

    return sharing_delivery_worker
