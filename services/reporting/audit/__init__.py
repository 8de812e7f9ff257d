"""The audit ledger: an append-only, hash-chained, verifiable record of every disclosure, consent
change, erasure, read of a pupil's personal data and admin action, per trust, with signed
checkpoints; and the queries a data-protection officer asks of it (docs/audit.md).

    domain/         canonical entries, audit facts, chain and checkpoint verification (pure)
    tables.py       the ledger's tables, triggers and privileges (plain SQL)
    ledger.py       the recorder: appends entries and checkpoints
    consumers.py    the consumer that records events from Kafka into the ledger
    deps.py         what routes and tasks are handed (ledger, queries, settings), built at start
    checkpoints.py  signing checkpoints (background task, and on demand for proofs)
    audit_topic.py  Kafka as the ledger's witness and record (the admin keeps the audit topics forever)
    queries.py      the audit queries;  api.py the HTTP API;  proofs.py proofs for a person
    verification.py verifying online and from an export (the CLI's `flourish audit`)
    watch.py        the service re-verifying the whole ledger every few hours
"""

from __future__ import annotations

from services.reporting.audit.api import audit_router
from services.reporting.audit.checkpoints import sign_checkpoints
from services.reporting.audit.consumers import ledger_consumer
from services.reporting.audit.deps import Audit
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.watch import verify_periodically

__all__ = [
    "Audit", "AuditSettings", "Ledger", "audit_router", "ledger_consumer", "sign_checkpoints",
    "verify_periodically",
]
