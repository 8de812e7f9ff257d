"""Signing checkpoints: every N entries or T seconds per chain, and on demand for a proof.

Before signing, the entries since the previous checkpoint are verified: a checkpoint vouches only
for entries that still hash and link as they were written, so tampering found here is never
signed over (it is logged and counted instead, and `flourish audit verify` names the entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.reporting.audit.audit_topic import CHECKPOINTS_CONTEXT, KafkaTopicWitness
from services.reporting.audit.domain.canonical import sha256_hex
from services.reporting.audit.domain.chain import ChainHead, ChainVerifier, Checkpoint, key_id_of
from services.reporting.audit.ledger import HeadState, Ledger, rows_of
from services.reporting.audit.metrics import (
    checkpoints_refused,
    checkpoints_signed,
    export_verification_failures,
    record_signing_backlog,
    record_unwitnessed,
    verification_failures,
    witness_failures,
)
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.signing import CheckpointSigner, load_public_key, load_signer
from services.reporting.audit.witness import (
    Witness,
    WitnessConflict,
    WitnessUnavailable,
    configured_witness,
    last_of,
    ledger_name,
)
from shared.events.envelope import topic_for

if TYPE_CHECKING:
    from services.reporting.audit.deps import Audit
    from shared.service import Runtime

log = logging.getLogger(__name__)


class ChainBroken(Exception):
    """The entries since the last checkpoint do not verify: nothing is signed over them."""

    def __init__(self, trust_id: UUID, description: str, reason: str = "broken") -> None:
        super().__init__(f"chain of trust {trust_id}: {description}")
        self.trust_id = trust_id
        self.description = description
        self.reason = reason


class ChainDoesNotExtendWitness(ChainBroken):
    """The chain in the database does not contain the witness's last checkpoint: it was truncated
    or rewritten after that checkpoint was signed. Nothing is signed over it, ever."""


async def checkpoint_chain(
    conn: AsyncConnection, ledger: Ledger, signer: CheckpointSigner, trust_id: UUID,
    witness: Witness | None = None, keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> Checkpoint | None:
    """Sign the chain's current head, unless a checkpoint already covers it. Runs in the caller's
    transaction and holds the chain's head lock, so no entry is added while it signs.

    With a witness, the witness's last checkpoint is the reference: the chain must contain it and
    extend it, or ChainDoesNotExtendWitness is raised and nothing is signed. Checkpoints signed
    before but not yet witnessed (the witness was away) are handed to it first, in order; a
    witness that cannot be reached raises WitnessUnavailable before anything is signed, and one
    that fails after signing leaves the checkpoint queued in the database for the next round.
    """
    head = await ledger.head(conn, trust_id, for_update=True)
    trusted = dict(keys or {}) | {signer.key_id: signer.public_key}
    if witness is None:
        if head is None or head.seq == head.checkpoint_seq:
            return None
        previous = await ledger.last_checkpoint(conn, trust_id)
        start = ChainHead(previous.seq, previous.entry_hash) if previous else None
        queued: list[Checkpoint] = []
    else:
        witnessed = last_of(await _read_witness(witness, trust_id))
        start = ChainHead(witnessed.seq, witnessed.entry_hash) if witnessed else None
        await _contains_witnessed(conn, ledger, trust_id, head, start)
        if head is None:
            return None
        queued = await ledger.checkpoints_after(conn, trust_id, start.seq if start else 0)
    verifier = ChainVerifier(trust_id, trusted, start=start)
    verifier.expect_checkpoints(queued)
    verifier.feed(rows_of(await ledger.entries(conn, trust_id, after=start.seq if start else 0, upto=head.seq)))
    report = verifier.finish(ChainHead(head.seq, head.entry_hash))
    if report.mismatch is not None:
        verification_failures.add(1, {"check": "before_checkpoint"})
        if witness is not None:
            _refused("broken", trust_id, report.mismatch.seq)
        raise ChainBroken(trust_id, report.mismatch.describe())
    handed_over = await _hand_over(witness, queued)
    # With a witness, what it holds (and the queue) says what is signed, not the head row, which
    # the database's credentials can reset.
    witnessed_upto = queued[-1].seq if queued else (start.seq if start else 0)
    last_signed = head.checkpoint_seq if witness is None else witnessed_upto
    if head.seq <= last_signed:
        return None
    checkpoint = signer.sign(trust_id, head.seq, head.entry_hash, datetime.now(UTC))
    await ledger.add_checkpoint(conn, checkpoint)
    checkpoints_signed.add(1)
    if witness is not None and handed_over:
        await _hand_over(witness, [checkpoint])
    return checkpoint


async def _hand_over(witness: Witness | None, checkpoints: list[Checkpoint]) -> bool:
    """Give the witness these checkpoints in order; False once one fails (it and those after it
    stay queued in the database and are handed over, exactly as signed, next round)."""
    for checkpoint in checkpoints:
        try:
            await _witness(witness, checkpoint)
        except WitnessUnavailable:
            return False
    return True


async def _read_witness(witness: Witness, trust_id: UUID) -> list[Checkpoint]:
    try:
        return await witness.checkpoints(trust_id)
    except WitnessUnavailable:
        witness_failures.add(1, {"operation": "read"})
        raise


async def _witness(witness: Witness | None, checkpoint: Checkpoint) -> None:
    if witness is None:
        return
    try:
        await witness.append(checkpoint)
    except WitnessUnavailable as error:
        witness_failures.add(1, {"operation": "write"})
        log.warning("audit witness unreachable; the checkpoint stays queued",
                    extra={"trust_id": str(checkpoint.trust_id), "seq": checkpoint.seq, "error_type": type(error).__name__})
        raise


async def _contains_witnessed(
    conn: AsyncConnection, ledger: Ledger, trust_id: UUID, head: HeadState | None, witnessed: ChainHead | None
) -> None:
    """The chain must still hold the witnessed entry, with the body that hashes to it."""
    if witnessed is None:
        return
    if head is None or head.seq < witnessed.seq:
        ends = head.seq if head else 0
        _refused("truncated", trust_id, witnessed.seq)
        raise ChainDoesNotExtendWitness(trust_id, f"the chain ends at entry {ends}, before the witnessed checkpoint "
                                                  f"at entry {witnessed.seq}: it was truncated", "truncated")
    entry = await ledger.entry(conn, trust_id, witnessed.seq)
    if entry is None or entry.entry_hash != witnessed.entry_hash or sha256_hex(entry.body) != witnessed.entry_hash:
        _refused("rewritten", trust_id, witnessed.seq)
        raise ChainDoesNotExtendWitness(trust_id, f"entry {witnessed.seq} is not the one the witnessed checkpoint "
                                                  f"signed ({witnessed.entry_hash[:12]}…): the chain was rewritten",
                                        "rewritten")


def _refused(reason: str, trust_id: UUID, seq: int) -> None:
    checkpoints_refused.add(1, {"reason": reason})
    log.critical("audit checkpoint refused: the chain does not extend its last witnessed checkpoint",
                 extra={"trust_id": str(trust_id), "seq": seq, "reason": reason, "error_type": "ChainDoesNotExtendWitness"})


async def checkpoint_due_chains(
    engine: AsyncEngine, ledger: Ledger, signer: CheckpointSigner, settings: AuditSettings,
    witness: Witness | None = None, queued: set[UUID] | None = None, keys: Mapping[str, Ed25519PublicKey] | None = None,
    also: Sequence[Witness] = (), unpublished: list[Checkpoint] | None = None,
) -> int:
    """Sign every chain that is due; returns how many were signed. One transaction per chain, so a
    broken chain never holds up the others. `queued`: chains whose checkpoints the witness has not
    taken yet (kept between rounds: they are retried even when no new entry makes them due).
    `also`: witnesses that are published to after signing (the Kafka topic), in order, with
    `unpublished` the checkpoints they have not taken yet (kept between rounds)."""
    queued = queued if queued is not None else set()
    unpublished = unpublished if unpublished is not None else []
    async with engine.connect() as conn:
        due = await ledger.chains_due_for_checkpoint(conn, settings.checkpoint_every_entries, settings.checkpoint_every_s)
    signed = 0
    for trust_id in sorted(set(due) | queued):
        try:
            async with engine.begin() as conn:
                checkpoint = await checkpoint_chain(conn, ledger, signer, trust_id, witness, keys)
                if checkpoint is not None:
                    signed += 1
                    unpublished.extend([checkpoint] if also else [])
                if witness is not None and await _unwitnessed(conn, ledger, witness, trust_id):
                    queued.add(trust_id)
                else:
                    queued.discard(trust_id)
        except WitnessUnavailable:
            queued.add(trust_id)
        except WitnessConflict:  # the witness holds another checkpoint where ours would go: never overwritten
            queued.discard(trust_id)
            _refused("broken", trust_id, 0)
        except ChainBroken as broken:
            queued.discard(trust_id)
            log.error("audit chain does not verify; no checkpoint signed",
                      extra={"trust_id": str(broken.trust_id), "error_type": type(broken).__name__})
    for publication in also:
        while unpublished and await _publish(engine, ledger, publication, unpublished[0]):
            unpublished.pop(0)
    record_unwitnessed(len(queued) + len(unpublished))
    async with engine.connect() as conn:
        record_signing_backlog(*await ledger.signing_backlog(conn))
    return signed


async def _publish(engine: AsyncEngine, ledger: Ledger, publication: Witness, checkpoint: Checkpoint) -> bool:
    """Hand a checkpoint to a publication witness; the Kafka topic also gets, for each entry it
    covers since the trust's previous checkpoint, the event it recorded and when (recover.py)."""
    if not isinstance(publication, KafkaTopicWitness):
        return await _hand_over(publication, [checkpoint])
    async with engine.connect() as conn:
        before = [c.seq for c in await ledger.checkpoints_page(conn, checkpoint.trust_id, checkpoint.seq, 1)]
        rows = await ledger.entries(conn, checkpoint.trust_id, after=before[0] if before else 0, upto=checkpoint.seq)
    covered = [[entry.seq, *recorded_in(entry.body)] for entry in rows]
    try:
        await publication.append(checkpoint, covered)
    except WitnessUnavailable:
        witness_failures.add(1, {"operation": "write"})
        return False
    return True


def recorded_in(body: str) -> tuple[str, str]:
    fact = json.loads(body)["fact"]
    return fact["event_id"], fact["recorded_at"]


async def _unwitnessed(conn: AsyncConnection, ledger: Ledger, witness: Witness, trust_id: UUID) -> bool:
    last = await ledger.last_checkpoint(conn, trust_id)
    if last is None:
        return False
    witnessed = last_of(await witness.checkpoints(trust_id))
    return witnessed is None or witnessed.seq < last.seq


async def sign_checkpoints(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """The reporting service's background task that keeps every chain signed (its dependencies
    hold the ledger and the audit settings as `.audit`)."""
    audit: Audit = reporting.audit
    signer = load_signer(audit.settings)
    name = ledger_name(runtime.settings.database_url, audit.ledger.schema)
    witness = configured_witness(audit.settings, name, create=True)
    keys = {key_id_of(key): key for key in map(_public_key, audit.settings.previous_public_keys)}
    export_verification_failures()
    also: list[Witness] = []
    if audit.settings.witness_topic:
        also.append(KafkaTopicWitness(runtime.kafka,
                                      topic_for(CHECKPOINTS_CONTEXT, runtime.settings.topic_prefix), name))
    queued: set[UUID] = set()
    unpublished: list[Checkpoint] = []
    reconciled = False
    try:
        while not stop.is_set():
            try:
                if not reconciled:  # what a previous run could not hand over
                    queued.update(await _signed_chains(runtime.engine, audit.ledger))
                    unpublished.extend(await _unpublished(runtime.engine, audit.ledger, also))
                    reconciled = True
                await checkpoint_due_chains(runtime.engine, audit.ledger, signer, audit.settings, witness, queued, keys,
                                            also, unpublished)
            except Exception as error:  # noqa: BLE001 - PostgreSQL or Kafka away: logged, and tried again next round
                log.warning("audit checkpointer paused", extra={"error_type": type(error).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=audit.settings.checkpoint_poll_s)
    finally:
        for publication in also:
            if isinstance(publication, KafkaTopicWitness):
                await publication.close()


async def _signed_chains(engine: AsyncEngine, ledger: Ledger) -> list[UUID]:
    async with engine.connect() as conn:
        return await ledger.signed_chains(conn)


async def _unpublished(engine: AsyncEngine, ledger: Ledger, also: Sequence[Witness]) -> list[Checkpoint]:
    """The database's checkpoints a publication witness does not hold (one read of it)."""
    missing: list[Checkpoint] = []
    for publication in also:
        async with engine.connect() as conn:
            for trust_id in await ledger.signed_chains(conn):
                held = {c.seq for c in await publication.checkpoints(trust_id)}
                missing += [c for c in await ledger.checkpoints_after(conn, trust_id, 0) if c.seq not in held]
    return missing


def _public_key(path: Path) -> Ed25519PublicKey:
    return load_public_key(path.read_text())
