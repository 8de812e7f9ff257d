"""The ledger checks itself: every few hours the reporting service re-verifies every chain from its
first entry, as `flourish audit verify` does, and counts a failure on
flourish_audit_verification_failures_total (alert FlourishAuditVerificationFailing). Checkpoints
vouch for entries once, when signed; this notices an entry changed afterwards."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.reporting.audit.domain.chain import key_id_of
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.metrics import verification_failures
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.signing import load_public_key, load_signer
from services.reporting.audit.verification import Verification, verify_database

if TYPE_CHECKING:
    from services.reporting.audit.deps import Audit
    from shared.service import Runtime

log = logging.getLogger(__name__)


def trusted_keys(settings: AuditSettings) -> dict[str, Ed25519PublicKey]:
    """The current signing key's public half, and those of keys it replaced."""
    keys = [load_signer(settings).public_key]
    keys += [load_public_key(path.read_text()) for path in settings.previous_public_keys]
    return {key_id_of(key): key for key in keys}


async def verify_ledger(dsn: str, ledger: Ledger, keys: dict[str, Ed25519PublicKey]) -> Verification:
    """Verify every chain; log and count what fails (ids and reasons only, never an entry's content)."""
    # Never forked from the service (its sockets, threads and event loop): the two halves of a
    # long chain are read at once by this process, in the background.
    result = await verify_database(dsn, ledger.schema, keys, processes=False)
    for problem in result.defences:
        verification_failures.add(1, {"check": "periodic"})
        log.error("audit ledger defence missing: %s", problem, extra={"error_type": "LedgerDefence"})
    for report in result.reports:
        if report.mismatch is not None:
            verification_failures.add(1, {"check": "periodic"})
            log.error("audit chain does not verify at entry %s: %s", report.mismatch.seq, report.mismatch.reason, extra={
                "trust_id": str(report.trust_id), "event_id": report.mismatch.event_id, "error_type": "ChainMismatch",
            })
    return result


def verification_outcome(result: Verification, trust_id: Any, how: str) -> dict[str, Any]:
    """One trust's verification as GET /audit/status reports it: when, how asked, intact or not,
    the entries checked, the problems (ids and reasons, never an entry's content)."""
    reports = [r for r in result.reports if r.trust_id == trust_id]
    problems = list(result.defences)
    problems += [f"entry {r.mismatch.seq}: {r.mismatch.reason}" for r in reports if r.mismatch is not None]
    return {"verified_at": datetime.now(UTC).isoformat(), "how": how, "ok": not problems,
            "entries": sum(r.entries for r in reports), "problems": problems}


async def verify_periodically(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """The reporting service's background task that re-verifies the whole ledger (its dependencies
    hold the ledger and the audit settings as `.audit`)."""
    audit: Audit = reporting.audit
    wait = audit.settings.verify_first_after_s
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
            return
        except TimeoutError:
            pass
        try:
            result = await verify_ledger(runtime.settings.sync_database_url, audit.ledger, trusted_keys(audit.settings))
            for report in result.reports:
                audit.verifications[report.trust_id] = verification_outcome(result, report.trust_id, "periodic")
        except Exception as error:  # noqa: BLE001 - PostgreSQL away: logged, and tried again next round
            log.warning("audit verification paused", extra={"error_type": type(error).__name__})
        wait = audit.settings.verify_every_s
