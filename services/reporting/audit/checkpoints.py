"""Signing checkpoints: every N entries or T seconds per chain, and on demand for a proof.

Before signing, the entries since the previous checkpoint are verified: a checkpoint vouches only
for entries that still hash and link as they were written, so tampering found here is never
signed over (it is logged and counted instead, and `flourish audit verify` names the entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.reporting.audit.domain.chain import ChainHead, ChainVerifier, Checkpoint
from services.reporting.audit.ledger import Ledger, rows_of
from services.reporting.audit.metrics import (
    checkpoints_signed,
    export_verification_failures,
    record_signing_backlog,
    verification_failures,
)
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.signing import CheckpointSigner, load_signer

if TYPE_CHECKING:
    from services.reporting.audit.deps import Audit
    from shared.service import Runtime

log = logging.getLogger(__name__)


class ChainBroken(Exception):
    """The entries since the last checkpoint do not verify: nothing is signed over them."""

    def __init__(self, trust_id: UUID, description: str) -> None:
        super().__init__(f"chain of trust {trust_id}: {description}")
        self.trust_id = trust_id
        self.description = description


async def checkpoint_chain(
    conn: AsyncConnection, ledger: Ledger, signer: CheckpointSigner, trust_id: UUID
) -> Checkpoint | None:
    """Sign the chain's current head, unless a checkpoint already covers it. Runs in the caller's
    transaction and holds the chain's head lock, so no entry is added while it signs."""
    head = await ledger.head(conn, trust_id, for_update=True)
    if head is None or head.seq == head.checkpoint_seq:
        return None
    previous = await ledger.last_checkpoint(conn, trust_id)
    start = ChainHead(previous.seq, previous.entry_hash) if previous else None
    verifier = ChainVerifier(trust_id, {signer.key_id: signer.public_key}, start=start)
    verifier.feed(rows_of(await ledger.entries(conn, trust_id, after=start.seq if start else 0, upto=head.seq)))
    report = verifier.finish(ChainHead(head.seq, head.entry_hash))
    if report.mismatch is not None:
        verification_failures.add(1, {"check": "before_checkpoint"})
        raise ChainBroken(trust_id, report.mismatch.describe())
    checkpoint = signer.sign(trust_id, head.seq, head.entry_hash, datetime.now(UTC))
    await ledger.add_checkpoint(conn, checkpoint)
    checkpoints_signed.add(1)
    return checkpoint


async def checkpoint_due_chains(engine: AsyncEngine, ledger: Ledger, signer: CheckpointSigner, settings: AuditSettings) -> int:
    """Sign every chain that is due; returns how many were signed. One transaction per chain, so a
    broken chain never holds up the others."""
    async with engine.connect() as conn:
        due = await ledger.chains_due_for_checkpoint(conn, settings.checkpoint_every_entries, settings.checkpoint_every_s)
    signed = 0
    for trust_id in due:
        try:
            async with engine.begin() as conn:
                signed += await checkpoint_chain(conn, ledger, signer, trust_id) is not None
        except ChainBroken as broken:
            log.error("audit chain does not verify; no checkpoint signed",
                      extra={"trust_id": str(broken.trust_id), "error_type": "ChainBroken"})
    async with engine.connect() as conn:
        record_signing_backlog(*await ledger.signing_backlog(conn))
    return signed


async def sign_checkpoints(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """The reporting service's background task that keeps every chain signed (its dependencies
    hold the ledger and the audit settings as `.audit`)."""
    audit: Audit = reporting.audit
    signer = load_signer(audit.settings)
    export_verification_failures()
    while not stop.is_set():
        try:
            await checkpoint_due_chains(runtime.engine, audit.ledger, signer, audit.settings)
        except Exception as error:  # noqa: BLE001 - PostgreSQL away: logged, and tried again next round
            log.warning("audit checkpointer paused", extra={"error_type": type(error).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=audit.settings.checkpoint_poll_s)
