"""Consent-gated sharing with agencies over signed webhooks (docs/sharing.md).

    settings.py   FLOURISH_SHARING_* (retry schedule, allow-listed private networks, worker)
    tables.py     agencies, shares, the durable deliveries table and the delivery log
    endpoints.py  which webhook URLs may be registered (https; no private addresses)
    signing.py    Standard Webhooks signatures
    consent.py    asking the consent service's decision API as the service (fail closed)
    core.py       registering, sharing, the delivery worker, replay, deletion notices
    notices.py    telling the family before a share: the notice queued with the share, the SMTP
                  sender, the printable letter, the DPO's withholding
    api.py        the HTTP API;  metrics.py flourish_webhook_deliveries_total{outcome}
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.reporting.sharing.api import sharing_router
from services.reporting.sharing.consent import ConsentClient
from services.reporting.sharing.core import Sharing, webhook_client
from services.reporting.sharing.notices import Notices, NoticeSettings
from services.reporting.sharing.settings import SharingSettings
from shared.events.consent import ConsentWithdrawn
from shared.service import ConsumerSpec, Runtime

__all__ = ["ConsentClient", "NoticeSettings", "Notices", "Sharing", "SharingSettings", "deliver_webhooks",
           "send_notices", "sharing_router", "webhook_client", "withdrawal_consumer"]

# The reporting service's dependencies (services.reporting.app.Reporting) hold this package's
# Sharing as `.sharing`: the consumer, the task and the routes (api.sharing_of) find it there.


def withdrawal_consumer() -> ConsumerSpec:
    """Reads the consent context: a withdrawn sharing consent stops pending shares and sends
    deletion notices to the agencies that received the pupil's data."""
    return ConsumerSpec(name="sharing", contexts=["consent"],
                        handlers_from=lambda reporting: {ConsentWithdrawn: reporting.sharing.on_consent_withdrawn})


async def deliver_webhooks(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """Background task (processes of role all or consumers): deliver due webhooks until stopped."""
    await reporting.sharing.worker(runtime, stop)


async def send_notices(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """Background task (processes of role all or consumers): send the families' notices until stopped."""
    if reporting.sharing.notices is not None:
        await reporting.sharing.notices.worker(runtime, stop)
    else:
        await stop.wait()  # a background task runs until the service stops (one that ends fails liveness)
