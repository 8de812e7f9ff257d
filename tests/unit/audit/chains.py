"""In-memory audit chains for unit tests: entries built by the same code the ledger uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.reporting.audit.domain.canonical import GENESIS_HASH, entry_body, instant, sha256_hex
from services.reporting.audit.domain.chain import Checkpoint, EntryRow
from services.reporting.audit.signing import CheckpointSigner

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)


@dataclass
class Chain:
    trust_id: uuid.UUID
    rows: list[EntryRow]
    checkpoints: list[Checkpoint]
    signer: CheckpointSigner

    @property
    def keys(self) -> dict[str, object]:
        return {self.signer.key_id: self.signer.public_key}


def fact(n: int) -> dict[str, object]:
    return {
        "kind": "disclosure", "action": "share", "event_type": "flourish.reporting.ReportShared.v1",
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"event-{n}")), "source": "/flourish/reporting",
        "occurred_at": instant(T0 + timedelta(minutes=n)), "recorded_at": instant(T0 + timedelta(minutes=n, seconds=1)),
        "actor": f"staff-{n % 3}", "pupil_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"pupil-{n % 4}")),
        "agency_category": "camhs", "details": {"document_kind": "profile"},
    }


def build_chain(length: int, checkpoint_every: int = 4, signer: CheckpointSigner | None = None) -> Chain:
    signer = signer or CheckpointSigner(Ed25519PrivateKey.generate())
    trust_id = uuid.uuid4()
    rows: list[EntryRow] = []
    checkpoints = []
    prev = GENESIS_HASH
    for seq in range(1, length + 1):
        body = entry_body(trust_id, seq, prev, fact(seq))
        entry_hash = sha256_hex(body)
        rows.append((seq, prev, entry_hash, body))
        prev = entry_hash
        if seq % checkpoint_every == 0:
            checkpoints.append(signer.sign(trust_id, seq, entry_hash, T0 + timedelta(hours=seq)))
    return Chain(trust_id, rows, checkpoints, signer)
