"""The audit ledger: an append-only, hash-chained, verifiable record of every disclosure, consent
change, erasure, read of a pupil's personal data and admin action, per trust, with signed
checkpoints; and the queries a data-protection officer asks of it (docs/audit.md).

    domain/         canonical entries, audit facts, chain and checkpoint verification (pure)
    tables.py       the ledger's tables, triggers and privileges (plain SQL)
    ledger.py       the recorder: appends entries and checkpoints
    consumers.py    the consumer that records events from Kafka into the ledger
    checkpoints.py  signing checkpoints (background task, and on demand for proofs)
    audit_topic.py  keeping the audit topic forever
    queries.py      the audit queries;  api.py the HTTP API;  proofs.py proofs for a person
    verification.py verifying online and from an export (the CLI's `flourish audit`)
    watch.py        the service re-verifying the whole ledger every few hours
"""

from __future__ import annotations

from services.reporting.audit.api import audit_router
from services.reporting.audit.audit_topic import keep_audit_topic
from services.reporting.audit.checkpoints import ChainBroken, checkpointer
from services.reporting.audit.consumers import ledger_consumer
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.proofs import ProofUnavailable
from services.reporting.audit.signing import SigningKeyUnavailable
from services.reporting.audit.watch import periodic_verification
from shared.problems import Conflict, NotFound, Problem, ServiceUnavailable

__all__ = [
    "DOMAIN_ERRORS", "Ledger", "audit_router", "checkpointer", "keep_audit_topic", "ledger_consumer",
    "periodic_verification",
]


def _chain_broken(error: Exception) -> Problem:
    return Conflict(f"the audit chain does not verify, so no proof can be signed: {error}")


def _no_proof(error: Exception) -> Problem:
    return NotFound(str(error))


def _no_key(error: Exception) -> Problem:
    return ServiceUnavailable("the checkpoint signing key is unavailable")


DOMAIN_ERRORS = {ChainBroken: _chain_broken, ProofUnavailable: _no_proof, SigningKeyUnavailable: _no_key}
