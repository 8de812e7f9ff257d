"""Read models of the reporting service: pupils' profiles and progress, plans and sessions, the
academy and trust dashboards and the anonymised intervention report (issue 6, part 1).

The consumer and the queries write and read `tables.LIVE`, the declaration of the live tables
(a rebuild fills the same tables under another name); the routes are handed the calls to the
assessment service (api.Peers) from the reporting service's dependencies, as `.peers`."""

from typing import Any

from services.reporting.readmodels import erasure
from services.reporting.readmodels.api import Peers, readmodels_router
from services.reporting.readmodels.erasure import Register
from services.reporting.readmodels.projections import batch_handlers
from services.reporting.readmodels.rebuild import rebuild
from services.reporting.readmodels.tables import LIVE
from shared.events.consent import PupilErased, RetentionExpired
from shared.events.envelope import Envelope
from shared.messaging.consumer import Handler
from shared.service import ConsumerSpec


def readmodels_consumer() -> ConsumerSpec:
    """One consumer group over the assessment and planning topics; idempotent through the inbox."""
    return ConsumerSpec(name="readmodels", contexts=("assessment", "planning"), handlers={},
                        batch_handlers=batch_handlers(LIVE, Register()), roster=LIVE.pupils)


def erasure_consumer() -> ConsumerSpec:
    """Reads the consent context: `PupilErased` and `RetentionExpired` reach every copy reporting
    holds (docs/reporting.md "Erasure and retention"): a tombstone in the erasure register, the read
    models' rows (erasure.purge), and sharing's shares, deliveries and deletion notices
    (sharing.core.Sharing.on_erased). One transaction per event, idempotent through the inbox."""
    return ConsumerSpec(name="erasure", contexts=("consent",), roster=LIVE.pupils,
                        handlers_from=lambda reporting: dict.fromkeys((PupilErased, RetentionExpired),
                                                                      _erase(reporting)))


def _erase(reporting: Any) -> Handler:
    async def handle(conn: Any, envelope: Envelope[Any]) -> None:
        grave = erasure.tombstone_of(envelope)
        if grave is None:
            return
        pupil_id, category, at = grave
        # The live rows first (their locks held to the commit), then the tombstone.
        await erasure.purge(conn, LIVE, envelope.trust_id, pupil_id, category)
        await erasure.record(conn, envelope)
        if category in (erasure.ALL, erasure.SHARED_REPORTS):
            reason = "pupil_erased" if isinstance(envelope.data, PupilErased) else "retention_expired"
            await reporting.sharing.on_erased(conn, envelope, pupil_id, reason, at)
    return handle


__all__ = ["LIVE", "Peers", "erasure_consumer", "readmodels_consumer", "readmodels_router", "rebuild"]
