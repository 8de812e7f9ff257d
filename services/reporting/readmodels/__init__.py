"""Read models of the reporting service: pupils' profiles and progress, plans and sessions, the
academy and trust dashboards and the anonymised intervention report (issue 6, part 1).

The consumer and the queries write and read `tables.LIVE`, the declaration of the live tables
(a rebuild fills the same tables under another name); the routes are handed the calls to the
assessment service (api.Peers) from the reporting service's dependencies, as `.peers`."""

from services.reporting.readmodels.api import Peers, readmodels_router
from services.reporting.readmodels.projections import batch_handlers
from services.reporting.readmodels.rebuild import rebuild
from services.reporting.readmodels.tables import LIVE
from shared.service import ConsumerSpec


def readmodels_consumer() -> ConsumerSpec:
    """One consumer group over the assessment and planning topics; idempotent through the inbox."""
    return ConsumerSpec(name="readmodels", contexts=("assessment", "planning"), handlers={},
                        batch_handlers=batch_handlers(LIVE), roster=LIVE.pupils)


__all__ = ["LIVE", "Peers", "readmodels_consumer", "readmodels_router", "rebuild"]
