"""What planning consumes: scores and the roster from assessment, participation consent and
erasure from consent. Each event is applied once (the kernel's inbox)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning import opt_out, projections
from services.planning.tables import pupils
from shared.events.assessment import PupilClassChanged, PupilEnrolled, StrandScored
from shared.events.consent import ConsentGranted, ConsentRefused, ConsentWithdrawn, PupilErased, RetentionExpired
from shared.events.envelope import Envelope
from shared.messaging.consumer import Handler
from shared.service import ConsumerSpec


def _forgetting(planning: Any) -> dict[type[Any], Handler]:
    """PupilErased also drops the pupil's cached data key at once (planning's `.keyring`)."""

    async def on_pupil_erased(conn: AsyncConnection, envelope: Envelope[Any]) -> None:
        planning.keyring.forget(envelope.data.pupil_id)
        await projections.on_pupil_erased(conn, envelope)

    return {PupilErased: on_pupil_erased}


SCORES = ConsumerSpec(
    name="scores",
    contexts=["assessment"],
    handlers={PupilEnrolled: projections.on_pupil_placed, PupilClassChanged: projections.on_pupil_placed},
    batch_handlers={StrandScored: projections.on_strand_scored},
    roster=pupils,
)

async def on_decision(conn: AsyncConnection, envelope: Envelope) -> None:
    """Taking part in interventions, and processing by the online tool (opt_out.py)."""
    await projections.on_participation(conn, envelope)
    await opt_out.on_decision(conn, envelope)


CONSENT = ConsumerSpec(
    name="consent",
    contexts=["consent"],
    handlers={
        ConsentGranted: on_decision,
        ConsentRefused: on_decision,
        ConsentWithdrawn: on_decision,
        PupilErased: projections.on_pupil_erased,
        RetentionExpired: projections.on_retention_expired,
    },
    roster=pupils,
    handlers_from=_forgetting,
)
