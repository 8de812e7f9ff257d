"""A proof for a person: one entry, the chain from it to a signed checkpoint, the checkpoint and
the public key — everything needed to check by hand (docs/audit.md) that the entry is as written.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporting.audit.checkpoints import checkpoint_chain
from services.reporting.audit.domain.chain import ChainHead, ChainVerifier, Checkpoint, key_id_of
from services.reporting.audit.ledger import Ledger, StoredEntry
from services.reporting.audit.signing import CheckpointSigner, public_key_document
from services.reporting.audit.witness import Witness

HOW_TO_CHECK = [
    "1. SHA-256 of entry.body (its UTF-8 bytes, exactly as given) equals entry.entry_hash.",
    "2. entry.body begins {\"chain\":{\"prev_hash\":P,\"seq\":N,\"trust_id\":T}: N and T say where it sits.",
    "3. For each item of chain, in order: its body's prev_hash is the entry_hash before it, and the "
    "SHA-256 of its body is its entry_hash.",
    "4. The last entry_hash (the entry's own when chain is empty) equals checkpoint.entry_hash, and "
    "its seq equals checkpoint.seq.",
    "5. checkpoint.statement is the canonical JSON of checkpoint's trust_id, seq, entry_hash, signed_at and key_id; "
    "its Ed25519 signature (checkpoint.signature, base64) verifies with public_key.",
    "6. public_key is the key the reporting service publishes at GET /audit/public-key (compare its key_id).",
]


class ProofUnavailable(Exception):
    """No proof can be given: the entry is not in this trust's ledger, or its chain is broken."""


async def proof_for(
    engine: AsyncEngine, ledger: Ledger, signer: CheckpointSigner, trust_id: UUID, seq: int,
    witness: Witness | None = None,
) -> dict[str, Any]:
    """The proof for entry `seq`, signing a checkpoint first if none covers it yet (against the
    witness, which then holds it too: a chain that does not extend the witness gets no proof)."""
    async with engine.connect() as conn:
        entry = await ledger.entry(conn, trust_id, seq)
        if entry is None:
            raise ProofUnavailable(f"entry {seq} is not in this trust's audit ledger")
        checkpoint = await ledger.checkpoint_covering(conn, trust_id, seq)
    if checkpoint is None:
        async with engine.begin() as conn:
            await checkpoint_chain(conn, ledger, signer, trust_id, witness)
        async with engine.connect() as conn:
            checkpoint = await ledger.checkpoint_covering(conn, trust_id, seq)
    if checkpoint is None:  # pragma: no cover - checkpoint_chain always covers the head
        raise ProofUnavailable(f"no checkpoint covers entry {seq}")
    async with engine.connect() as conn:
        chain = await ledger.entries(conn, trust_id, after=seq, upto=checkpoint.seq)
    return bundle(entry, chain, checkpoint, signer.public_key)


def bundle(entry: StoredEntry, chain: list[StoredEntry], checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> dict[str, Any]:
    return {
        "trust_id": str(entry.trust_id),
        "entry": entry.as_json(),
        "chain": [item.as_json() for item in chain],
        "checkpoint": checkpoint.as_json(),
        "public_key": public_key_document(public_key),
        "how_to_check": HOW_TO_CHECK,
    }


def check_proof(proof: dict[str, Any], public_key: Ed25519PublicKey) -> str | None:
    """What a machine does with a proof (what HOW_TO_CHECK says a person does): None if it holds,
    else what does not. The key is the one the verifier trusts, not the one inside the proof."""
    entry, checkpoint = proof["entry"], Checkpoint.from_json(proof["checkpoint"])
    trust_id = UUID(proof["trust_id"])
    start = ChainHead(entry["seq"] - 1, entry["prev_hash"])
    verifier = ChainVerifier(trust_id, {key_id_of(public_key): public_key}, start=start)
    items = [entry, *proof["chain"]]
    verifier.expect_checkpoints([checkpoint])
    verifier.feed([(i["seq"], i["prev_hash"], i["entry_hash"], i["body"]) for i in items])
    report = verifier.finish()
    if report.mismatch is not None:
        return report.mismatch.describe()
    if report.checkpoints != 1:
        return "the checkpoint does not cover the entry"
    return None
