"""Witnesses: places outside the database that keep every signed checkpoint, so that the
database's own credentials — its owner's, a superuser's — cannot rewrite history unnoticed.

A witness does two things: append a signed checkpoint (never overwriting one: the same checkpoint
again is a no-op, a different one at the same place is refused), and give back a trust's witnessed
checkpoints. The checkpointer takes the witness's last checkpoint, not the database's, as the
reference a chain must extend before it signs; `flourish audit verify` fails when the database's
chain does not contain every witnessed (seq, entry_hash).

DirectoryWitness   one file per checkpoint under a directory, created exclusively and read-only
                   (the default in development; a DPO can copy the directory).
S3Witness          (services/reporting/audit/witness_s3.py) an S3 bucket with Object Lock.

Every witness keeps one ledger's checkpoints under its name (the reporting schema), so the
throw-away ledgers of tests never mix with the real one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from uuid import UUID

from sqlalchemy.engine import make_url

from services.reporting.audit.domain.chain import Checkpoint
from services.reporting.audit.settings import AuditSettings


class WitnessUnavailable(Exception):
    """The witness cannot be read or written now (unreachable, refusing): retried, never skipped."""


class WitnessConflict(Exception):
    """The witness already holds a different checkpoint at this place: nothing signed twice differently."""


class Witness(Protocol):
    @property
    def name(self) -> str:
        """Where it is, for messages (never a secret)."""
        ...

    async def append(self, checkpoint: Checkpoint) -> None:
        """Keep this checkpoint (idempotent for the same checkpoint; WitnessConflict for another)."""
        ...

    async def checkpoints(self, trust_id: UUID) -> list[Checkpoint]:
        """The trust's witnessed checkpoints, in order of seq."""
        ...

    async def trusts(self) -> list[UUID]:
        """Every trust the witness holds checkpoints for."""
        ...


def checkpoint_document(checkpoint: Checkpoint) -> bytes:
    """What a witness stores: the checkpoint's JSON (its statement and signature), one line."""
    return (json.dumps(checkpoint.as_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """Where the checkpoint sits in its trust's folder: its seq, zero-padded so names sort."""
    return f"{checkpoint.seq:020d}.json"


def parse_checkpoint(data: bytes, where: str) -> Checkpoint:
    try:
        return Checkpoint.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError) as error:
        raise WitnessUnavailable(f"{where} is not a checkpoint: {type(error).__name__}") from None


def last_of(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    return checkpoints[-1] if checkpoints else None


class DirectoryWitness:
    """<root>/<ledger>/<trust_id>/<seq>.json, each file created once (link(2) of a complete
    temporary file: a reader never sees half a checkpoint, and an existing file is never replaced)
    and left read-only."""

    def __init__(self, root: Path, ledger: str) -> None:
        self.base = root
        self.root = root / ledger
        self.name = f"dir:{self.root}"

    async def append(self, checkpoint: Checkpoint) -> None:
        folder = self.root / str(checkpoint.trust_id)
        target = folder / checkpoint_name(checkpoint)
        data = checkpoint_document(checkpoint)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if target.exists():
                self._same_or_conflict(target, checkpoint)
                return
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(temporary, 0o444)
                try:
                    os.link(temporary, target)
                except FileExistsError:
                    self._same_or_conflict(target, checkpoint)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
        except OSError as error:
            raise WitnessUnavailable(f"{self.name}: cannot write {target.name}: {error.strerror}") from None

    def _same_or_conflict(self, target: Path, checkpoint: Checkpoint) -> None:
        existing = parse_checkpoint(target.read_bytes(), str(target))
        if existing != checkpoint:
            raise WitnessConflict(f"{self.name} already holds a different checkpoint at entry {checkpoint.seq} "
                                  f"of trust {checkpoint.trust_id}")

    async def checkpoints(self, trust_id: UUID) -> list[Checkpoint]:
        self._reachable()
        folder = self.root / str(trust_id)
        try:
            names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json")) if folder.is_dir() else []
            found = [parse_checkpoint((folder / name).read_bytes(), str(folder / name)) for name in names]
        except OSError as error:
            raise WitnessUnavailable(f"{self.name}: cannot read trust {trust_id}: {error.strerror}") from None
        for name, checkpoint in zip(names, found, strict=True):
            if checkpoint.trust_id != trust_id or name != checkpoint_name(checkpoint):
                raise WitnessUnavailable(f"{self.name}: {folder / name} does not hold the checkpoint its name says")
        return found

    async def trusts(self) -> list[UUID]:
        self._reachable()
        found = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            with contextlib.suppress(ValueError):
                found.append(UUID(path.name))
        return found

    def _reachable(self) -> None:
        # The directory is made by the checkpointer's first write; `verify` never makes it, so a
        # witness directory that is not there (unmounted, moved, a typo) fails verification.
        if not self.base.is_dir():
            raise WitnessUnavailable(f"{self.name}: the witness directory {self.base} does not exist")


def ledger_name(database_url: str, schema: str) -> str:
    """What a witness files a ledger's checkpoints under: its database and schema, so that ledgers of
    other databases (a test run's) never mix with this one's in a shared witness."""
    database = make_url(database_url).database or "postgres"
    return f"{database}.{schema}"


def configured_witness(settings: AuditSettings, ledger: str, *, create: bool = False) -> Witness:
    """The witness FLOURISH_AUDIT_WITNESS names, holding the checkpoints of ledger `ledger`.
    `create`: make the witness directory if it is not there (the service, which writes it; never
    `verify`, for which a missing witness is a failure)."""
    if settings.witness == "s3":
        from services.reporting.audit.witness_s3 import S3Witness

        return S3Witness.from_settings(settings, ledger)
    if create:
        settings.witness_dir.mkdir(parents=True, exist_ok=True)
    return DirectoryWitness(settings.witness_dir, ledger)
