"""Verifying a trust's audit chain and its signed checkpoints.

An entry is (seq, prev_hash, entry_hash, body): body is the entry's canonical JSON, entry_hash its
SHA-256, prev_hash the entry_hash of the entry before (GENESIS_HASH for the first). A checkpoint
is a statement — this trust's chain had entry `seq` with hash `entry_hash` — signed with the
reporting service's Ed25519 key. The verifier recomputes every hash, follows every link, checks
every signature with a public key it was given (never one read from the ledger), and names the
first entry that does not match.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.reporting.audit.domain.canonical import GENESIS_HASH, canonical_json, chain_prefix, instant

CHECKPOINT_TYPE = "flourish.audit.Checkpoint.v1"

# (seq, prev_hash, entry_hash, body): the shape rows arrive in, from the database or an export.
EntryRow = tuple[int, str, str, str]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of a chain's head at one moment."""

    trust_id: UUID
    seq: int
    entry_hash: str
    signed_at: datetime
    key_id: str
    signature: str  # base64 of the Ed25519 signature over statement's UTF-8 bytes

    @property
    def statement(self) -> str:
        return checkpoint_statement(self.trust_id, self.seq, self.entry_hash, self.signed_at, self.key_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "trust_id": str(self.trust_id), "seq": self.seq, "entry_hash": self.entry_hash,
            "signed_at": instant(self.signed_at), "key_id": self.key_id, "statement": self.statement,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            trust_id=UUID(data["trust_id"]), seq=int(data["seq"]), entry_hash=data["entry_hash"],
            signed_at=datetime.fromisoformat(data["signed_at"]), key_id=data["key_id"], signature=data["signature"],
        )


def checkpoint_statement(trust_id: UUID | str, seq: int, entry_hash: str, signed_at: datetime, key_id: str) -> str:
    """The exact text a checkpoint's signature covers (canonical JSON)."""
    return canonical_json({
        "entry_hash": entry_hash, "key_id": key_id, "seq": seq, "signed_at": instant(signed_at),
        "trust_id": str(trust_id), "type": CHECKPOINT_TYPE,
    })


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint: the same id `shared.auth.public_jwk` gives the key."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    thumbprint_input = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(thumbprint_input.encode()).digest())


def signature_is_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.statement.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- Verifying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """The first place the record does not match what was written: which entry, and why."""

    seq: int
    reason: str
    event_id: str | None = None

    def describe(self) -> str:
        event = f" (event {self.event_id})" if self.event_id else ""
        return f"entry {self.seq}{event}: {self.reason}"


@dataclass(frozen=True)
class ChainHead:
    """Where the ledger says a chain ends (its chain-head row, or an export's trailer)."""

    seq: int
    entry_hash: str


@dataclass
class ChainReport:
    trust_id: UUID
    entries: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    last_checkpoint: Checkpoint | None = None
    witnessed: int = 0  # checkpoints held by a witness, outside the database, that the chain contains
    last_witnessed: Checkpoint | None = None
    mismatch: Mismatch | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    @property
    def unsigned_entries(self) -> int:
        """Entries after the last checkpoint: protected by the chain, not yet by a signature."""
        return self.last_seq - (self.last_checkpoint.seq if self.last_checkpoint else 0)


class ChainVerifier:
    """Checks one trust's chain, fed in order of seq, in batches (fast enough for millions).

    Checkpoints may be given up front (online: a few thousand rows) or as they come (an export
    puts each right after the entry it covers).
    """

    def __init__(
        self, trust_id: UUID, public_keys: Mapping[str, Ed25519PublicKey], start: ChainHead | None = None
    ) -> None:
        """`start`: verify from just after this entry (a signed checkpoint), not from the genesis."""
        self.report = ChainReport(trust_id=trust_id)
        if start is not None:
            self.report.last_seq, self.report.last_hash = start.seq, start.entry_hash
        self._trust = str(trust_id)
        self._keys = dict(public_keys)
        self._pending: dict[int, Checkpoint] = {}
        self._witnessed: set[int] = set()  # seqs of the pending checkpoints a witness holds
        self._last_body = ""

    @property
    def failed(self) -> bool:
        return self.report.mismatch is not None

    def expect_checkpoints(self, checkpoints: Iterable[Checkpoint], *, witnessed: bool = False) -> None:
        for checkpoint in checkpoints:
            self.checkpoint(checkpoint, witnessed=witnessed)

    def checkpoint(self, checkpoint: Checkpoint, *, witnessed: bool = False) -> None:
        """A checkpoint: checked now if its entry was the last one fed, else when it comes.

        `witnessed`: a witness outside the database holds it — the chain must contain its
        (seq, entry_hash). The database's own checkpoint at the same entry never replaces it."""
        if self.failed:
            return
        if checkpoint.seq == self.report.last_seq and checkpoint.seq > 0:
            self._check_checkpoint(checkpoint, self.report.last_hash, self._last_body, witnessed=witnessed)
        elif checkpoint.seq > self.report.last_seq:
            if checkpoint.seq in self._witnessed and not witnessed:
                return
            self._pending[checkpoint.seq] = checkpoint
            if witnessed:
                self._witnessed.add(checkpoint.seq)
        elif witnessed and checkpoint.seq <= self.report.last_seq:
            self._fail(checkpoint.seq, "a witnessed checkpoint comes after later entries (given too late)", "")
        else:
            self._fail(checkpoint.seq, "a checkpoint for this entry comes after later entries (out of order)", "")

    def feed(self, rows: Iterable[EntryRow]) -> bool:
        """Check entries in order; returns False once something does not match (the rest is moot)."""
        if self.failed:
            return False
        report, trust, pending = self.report, self._trust, self._pending
        sha256 = hashlib.sha256
        expected_seq, expected_prev = report.last_seq + 1, report.last_hash
        body = self._last_body
        count = 0
        for seq, prev_hash, entry_hash, body in rows:
            # The hot loop: a few comparisons, one prefix check, one SHA-256 per entry.
            if seq != expected_seq:
                self._settle(expected_seq - 1, expected_prev, body, count)
                if seq > expected_seq:
                    missing = f"entries {expected_seq}..{seq - 1} are missing: it follows entry {expected_seq - 1}"
                    return self._fail(seq, missing, body)
                return self._fail(seq, f"entry {seq} appears again or out of order after entry {expected_seq - 1}", body)
            if prev_hash != expected_prev:
                self._settle(seq - 1, expected_prev, body, count)
                return self._fail(seq, "its prev_hash is not the hash of the entry before it", body)
            if not body.startswith(chain_prefix(trust, seq, expected_prev)):
                self._settle(seq - 1, expected_prev, body, count)
                return self._fail(
                    seq, "its recorded trust, position or predecessor differs from where it sits in the chain", body
                )
            if sha256(body.encode()).hexdigest() != entry_hash:
                self._settle(seq - 1, expected_prev, body, count)
                return self._fail(seq, "its content does not match its hash (changed after it was written)", body)
            count += 1
            expected_seq, expected_prev = seq + 1, entry_hash
            if pending and seq in pending:
                self._settle(seq, entry_hash, body, count)
                count = 0
                if not self._check_checkpoint(pending.pop(seq), entry_hash, body, witnessed=seq in self._witnessed):
                    return False
        self._settle(expected_seq - 1, expected_prev, body, count)
        return True

    def finish(self, head: ChainHead | None = None) -> ChainReport:
        """After the last entry: checkpoints past the end, and where the ledger says it ends."""
        report = self.report
        if self.failed:
            return report
        if self._pending:
            covered = min(self._pending)
            if covered in self._witnessed:
                witnessed = self._pending[covered]
                self._fail(report.last_seq + 1, f"missing: the witness holds a checkpoint at entry {covered} "
                                                f"(hash {witnessed.entry_hash[:16]}…), but the chain ends at entry "
                                                f"{report.last_seq}: entries were truncated", "")
            else:
                self._fail(report.last_seq + 1, f"missing: checkpoint {covered} was signed over entries up to "
                                                f"{covered}, but the chain ends at entry {report.last_seq}", "")
        elif head is not None and (head.seq, head.entry_hash) != (report.last_seq, report.last_hash):
            if head.seq > report.last_seq:
                self._fail(report.last_seq + 1, f"missing: the chain head records {head.seq} entries, "
                                                f"the chain ends at entry {report.last_seq}", "")
            elif head.seq < report.last_seq:
                self._fail(head.seq + 1, f"not in the chain head, which ends at entry {head.seq}: added afterwards", "")
            else:
                self._fail(head.seq, "the chain head records a different hash for this entry", self._last_body)
        return report

    def _settle(self, last_seq: int, last_hash: str, body: str, count: int) -> None:
        self.report.entries += count
        self.report.last_seq, self.report.last_hash = last_seq, last_hash
        self._last_body = body

    def _check_checkpoint(self, checkpoint: Checkpoint, entry_hash: str, body: str, *, witnessed: bool = False) -> bool:
        if checkpoint.trust_id != self.report.trust_id:
            return self._fail(checkpoint.seq, "its checkpoint names another trust", body)
        if checkpoint.entry_hash != entry_hash and witnessed:
            return self._fail(checkpoint.seq, f"the witness holds a checkpoint at this entry with hash "
                                              f"{checkpoint.entry_hash[:16]}…, the chain here has {entry_hash[:16]}…: "
                                              "this entry or one before it was rewritten", body)
        if checkpoint.entry_hash != entry_hash:
            return self._fail(checkpoint.seq, "the signed checkpoint at this entry records a different hash: "
                                              "this entry or one before it was rewritten", body)
        key = self._keys.get(checkpoint.key_id)
        if key is None:
            return self._fail(checkpoint.seq, f"its checkpoint is signed with key {checkpoint.key_id}, "
                                              "which is not among the public keys supplied", body)
        if not signature_is_valid(checkpoint, key):
            return self._fail(checkpoint.seq, "its checkpoint's signature is not valid", body)
        self.report.checkpoints += 1
        self.report.last_checkpoint = checkpoint
        if witnessed:
            self.report.witnessed += 1
            self.report.last_witnessed = checkpoint
        return True

    def _fail(self, seq: int, reason: str, body: str) -> bool:
        self.report.mismatch = Mismatch(seq=seq, reason=reason, event_id=event_id_in(body))
        return False


def event_id_in(body: str) -> str | None:
    """The event id an entry records, for naming it in a report (None if the body is unreadable)."""
    try:
        value = json.loads(body)["fact"]["event_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
