"""The attack the witness exists for, on the real server: someone with the database's credentials —
the ledger tables' owner, or a superuser — rewrites a trust's history and covers it up completely
(re-chaining every later entry so the chain is internally consistent, deleting the checkpoints that
no longer match, resetting the chain head). A database-only check then passes; a plain
`flourish audit verify`, with the witness configured through the environment, fails and names what
is wrong, and the checkpointer refuses to sign over it."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.reporting.audit.checkpoints import ChainDoesNotExtendWitness, checkpoint_chain, checkpoint_due_chains
from services.reporting.audit.cli import app as audit_cli
from services.reporting.audit.domain.canonical import entry_body, sha256_hex
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.signing import CheckpointSigner
from services.reporting.audit.verification import verify_database
from services.reporting.audit.witness import DirectoryWitness, WitnessConflict, ledger_name
from tests.conftest import counter
from tests.integration.audit.conftest import share

LENGTH, WITNESSED_AT = 12, (5, 10)


@pytest.fixture
def witness(witness_dir: Path, ledger: Ledger, signer: CheckpointSigner, stack_settings: Any,
            monkeypatch: pytest.MonkeyPatch) -> DirectoryWitness:
    """The directory witness, configured as an operator configures it: through the environment
    (FLOURISH_AUDIT_WITNESS_DIR: see conftest; the signing key and the database too), so that
    `flourish audit verify` needs no flags."""
    monkeypatch.setenv("DATABASE_URL", stack_settings.database_url)
    pem = signer.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    monkeypatch.setenv("FLOURISH_AUDIT_SIGNING_KEY", pem.decode())
    return DirectoryWitness(witness_dir, ledger_name(stack_settings.database_url, ledger.schema))


async def witnessed_chain(engine: AsyncEngine, ledger: Ledger, signer: CheckpointSigner, witness: DirectoryWitness,
                          length: int = LENGTH, at: tuple[int, ...] = WITNESSED_AT) -> uuid.UUID:
    trust_id = uuid.uuid4()
    for n in range(1, length + 1):
        async with engine.begin() as conn:
            await ledger.append(conn, trust_id, fact_from(share(trust_id, n)))
            if n in at:
                assert await checkpoint_chain(conn, ledger, signer, trust_id, witness) is not None
    return trust_id


async def cli(*args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, audit_cli, list(args))


class Tamperer:
    """Database-level actions only, as the tables' owner (who may disable the append-only triggers
    and grant itself what was revoked) or as a superuser (who may switch triggers off for a session),
    covering their tracks: the triggers and privileges are as they were afterwards."""

    def __init__(self, conn: asyncpg.Connection, ledger: Ledger, superuser: bool) -> None:
        self.conn, self.superuser = conn, superuser
        self.schema = ledger.schema
        self.entries, self.checkpoints = ledger.entries_table, f'"{ledger.schema}".audit_checkpoints'
        self.heads = f'"{ledger.schema}".audit_chain_heads'

    async def run(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        async with self.conn.transaction():
            if self.superuser:
                await self.conn.execute("SET LOCAL session_replication_role = replica")
            else:
                for table in ("audit_entries", "audit_checkpoints"):
                    await self.conn.execute(f'ALTER TABLE "{self.schema}".{table} DISABLE TRIGGER {table}_append_only')
                    await self.conn.execute(f'GRANT UPDATE, DELETE ON "{self.schema}".{table} TO CURRENT_USER')
            for sql, args in statements:
                await self.conn.execute(sql, *args)
            if not self.superuser:
                for table in ("audit_entries", "audit_checkpoints"):
                    await self.conn.execute(f'ALTER TABLE "{self.schema}".{table} ENABLE TRIGGER {table}_append_only')
                    await self.conn.execute(f'REVOKE UPDATE, DELETE ON "{self.schema}".{table} FROM CURRENT_USER')

    async def facts(self, trust_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(f"SELECT body FROM {self.entries} WHERE trust_id = $1 ORDER BY seq", trust_id)
        return [json.loads(row["body"])["fact"] for row in rows]

    async def rewrite(self, trust_id: uuid.UUID, facts: list[dict[str, Any]], keep: int) -> None:
        """Replace the chain after entry `keep` by `facts[keep:]`, re-chained (every hash recomputed,
        so the chain is internally consistent), drop the checkpoints that no longer match and reset
        the head: a database-only check finds nothing wrong."""
        prev = await self.conn.fetchval(f"SELECT entry_hash FROM {self.entries} WHERE trust_id = $1 AND seq = $2",
                                        trust_id, keep) if keep else "0" * 64
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (f"DELETE FROM {self.entries} WHERE trust_id = $1 AND seq > $2", (trust_id, keep)),
            (f"DELETE FROM {self.checkpoints} WHERE trust_id = $1 AND seq > $2", (trust_id, keep)),
        ]
        for seq, fact in enumerate(facts[keep:], start=keep + 1):
            body = entry_body(trust_id, seq, prev, fact)
            statements.append((f"INSERT INTO {self.entries} (trust_id, seq, prev_hash, entry_hash, body) "
                               "VALUES ($1, $2, $3, $4, $5)", (trust_id, seq, prev, sha256_hex(body), body)))
            prev = sha256_hex(body)
        statements.append((
            f"""UPDATE {self.heads} SET head_seq = $2, head_hash = $3,
                  checkpoint_seq = coalesce((SELECT max(seq) FROM {self.checkpoints} WHERE trust_id = $1 AND seq <= $4), 0)
                WHERE trust_id = $1""",
            (trust_id, len(facts), prev, keep),
        ))
        await self.run(*statements)


async def delete_one_share(t: Tamperer, trust_id: uuid.UUID) -> tuple[str, str]:
    facts = await t.facts(trust_id)
    del facts[2]  # entry 3
    await t.rewrite(trust_id, facts, keep=2)
    return "entry 5", "the witness holds a checkpoint at this entry with hash"


async def rewrite_an_agency(t: Tamperer, trust_id: uuid.UUID) -> tuple[str, str]:
    facts = await t.facts(trust_id)
    facts[6]["agency_id"] = str(uuid.uuid4())  # entry 7, after the first witnessed checkpoint
    await t.rewrite(trust_id, facts, keep=6)
    return "entry 10", "the witness holds a checkpoint at this entry with hash"


async def truncate_the_tail(t: Tamperer, trust_id: uuid.UUID) -> tuple[str, str]:
    facts = await t.facts(trust_id)
    await t.rewrite(trust_id, facts[:8], keep=8)
    return "entry 9", "missing: the witness holds a checkpoint at entry 10"


async def delete_every_checkpoint_and_reset_the_head(t: Tamperer, trust_id: uuid.UUID) -> tuple[str, str]:
    """The whole history replaced by a shorter, different one from the genesis, with no checkpoint."""
    facts = await t.facts(trust_id)
    await t.rewrite(trust_id, facts[3:], keep=0)
    return "entry 5", "the witness holds a checkpoint at this entry with hash"


ATTACKS = [delete_one_share, rewrite_an_agency, truncate_the_tail, delete_every_checkpoint_and_reset_the_head]


@pytest.mark.parametrize("as_superuser", [False, True], ids=["owner", "superuser"])
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__)
async def test_a_rewritten_history_is_named_by_verify_and_never_signed(
    engine, ledger, signer, superuser, witness, dsn, attack, as_superuser
):  # type: ignore[no-untyped-def]
    tampered = await witnessed_chain(engine, ledger, signer, witness)
    untouched = await witnessed_chain(engine, ledger, signer, witness)
    clean = await cli("verify", "--schema", ledger.schema)
    assert clean.exit_code == 0, clean.output
    assert "OK: 2 chain(s), 24 entries verified" in clean.output and "last witnessed at entry 10" in clean.output

    owner = await asyncpg.connect(dsn)
    try:
        entry, reason = await attack(Tamperer(superuser if as_superuser else owner, ledger, as_superuser), tampered)
    finally:
        await owner.close()

    # The cover-up is complete: the database alone, triggers and privileges included, finds nothing.
    keys = {signer.key_id: signer.public_key}
    alone = await verify_database(dsn, ledger.schema, keys, [tampered, untouched])
    assert alone.ok, [report.mismatch for report in alone.reports]

    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 1, result.output
    assert f"FAILED  trust {tampered}: {entry}" in result.output and reason in result.output, result.output
    assert f"ok      trust {untouched}" in result.output

    refused = counter("flourish_audit_checkpoints_refused")
    before = sorted(p.name for p in (witness.root / str(tampered)).iterdir())
    with pytest.raises(ChainDoesNotExtendWitness):
        async with engine.begin() as conn:
            await checkpoint_chain(conn, ledger, signer, tampered, witness)
    # The checkpointer's own round refuses it too, and still signs the untouched chain.
    async with engine.begin() as conn:
        await ledger.append(conn, untouched, fact_from(share(untouched, 13)))
    settings = AuditSettings(checkpoint_every_entries=1)
    assert await checkpoint_due_chains(engine, ledger, signer, settings, witness) == 1
    assert sorted(p.name for p in (witness.root / str(tampered)).iterdir()) == before
    assert refused.delta() == 2
    assert [c.seq for c in await witness.checkpoints(untouched)] == [5, 10, 13]


async def test_a_chain_whose_entries_are_older_than_the_checkpoint_interval_and_unwitnessed_fails(
    engine, ledger, signer, witness
):  # type: ignore[no-untyped-def]
    trust_id, long_ago = uuid.uuid4(), datetime.now(UTC) - timedelta(hours=2)
    for n in range(1, 4):
        async with engine.begin() as conn:
            await ledger.append(conn, trust_id, fact_from(share(trust_id, n)), recorded_at=long_ago)
    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 1, result.output
    assert f"FAILED  trust {trust_id}: entry 1" in result.output and "not witnessed" in result.output
    async with engine.begin() as conn:
        await checkpoint_chain(conn, ledger, signer, trust_id, witness)
    assert (await cli("verify", "--schema", ledger.schema)).exit_code == 0


async def test_an_unreachable_witness_fails_verify_rather_than_being_skipped(
    engine, ledger, signer, witness, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    await witnessed_chain(engine, ledger, signer, witness, length=3, at=(3,))
    monkeypatch.setenv("FLOURISH_AUDIT_WITNESS_DIR", str(tmp_path / "unmounted"))
    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 1 and "witness unreachable" in result.output, result.output


async def test_an_unreachable_witness_queues_checkpoints_and_the_ledger_keeps_appending(
    engine, ledger, signer, witness
):  # type: ignore[no-untyped-def]
    trust_id = await witnessed_chain(engine, ledger, signer, witness, length=3, at=(3,))
    settings = AuditSettings(checkpoint_every_entries=1)
    queued: set[uuid.UUID] = set()
    failures = counter("flourish_audit_witness_failures", operation="write")
    # The trust's folder cannot be written (a file stands where it should be).
    folder = witness.root / str(trust_id)
    moved = folder.with_name("moved-away")
    folder.rename(moved)
    folder.write_text("not a directory")
    for n in (4, 5):
        async with engine.begin() as conn:
            assert await ledger.append(conn, trust_id, fact_from(share(trust_id, n))) == n
        await checkpoint_due_chains(engine, ledger, signer, settings, witness, queued)
    assert queued == {trust_id} and failures.delta() >= 1
    # Back: the queued checkpoints are handed over in order, exactly as signed (no second signature).
    folder.unlink()
    moved.rename(folder)
    await checkpoint_due_chains(engine, ledger, signer, settings, witness, queued)
    assert queued == set()
    witnessed = await witness.checkpoints(trust_id)
    async with engine.connect() as conn:
        in_database = await ledger.checkpoints_after(conn, trust_id, 0)
    assert witnessed == in_database and [c.seq for c in witnessed] == [3, 4, 5]


async def test_a_witness_never_takes_a_different_checkpoint_at_the_same_place(engine, ledger, signer, witness):  # type: ignore[no-untyped-def]
    trust_id = await witnessed_chain(engine, ledger, signer, witness, length=3, at=(3,))
    [checkpoint] = await witness.checkpoints(trust_id)
    await witness.append(checkpoint)  # the same again: nothing happens
    other = signer.sign(trust_id, 3, "f" * 64, checkpoint.signed_at)
    with pytest.raises(WitnessConflict):
        await witness.append(other)
    assert await witness.checkpoints(trust_id) == [checkpoint]
    path = witness.root / str(trust_id) / "00000000000000000003.json"
    assert path.stat().st_mode & 0o222 == 0, "a witnessed checkpoint's file is read-only"


async def test_a_signing_key_rotation_keeps_the_witnessed_chain_continuous(
    engine, ledger, signer, witness, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    trust_id = await witnessed_chain(engine, ledger, signer, witness, length=6, at=(3,))
    rotated = CheckpointSigner(Ed25519PrivateKey.generate())
    old_key = tmp_path / "previous-key.json"
    old_key.write_text(json.dumps(signer.published()))
    monkeypatch.setenv("FLOURISH_AUDIT_SIGNING_KEY", rotated.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    monkeypatch.setenv("FLOURISH_AUDIT_PREVIOUS_PUBLIC_KEYS", json.dumps([str(old_key)]))
    # The new key signs on from the checkpoint the old one left in the witness: one chain of checkpoints.
    async with engine.begin() as conn:
        signed = await checkpoint_chain(conn, ledger, rotated, trust_id, witness, {signer.key_id: signer.public_key})
    assert signed is not None and signed.seq == 6
    witnessed = await witness.checkpoints(trust_id)
    assert [(c.seq, c.key_id) for c in witnessed] == [(3, signer.key_id), (6, rotated.key_id)]
    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 0 and "last witnessed at entry 6" in result.output, result.output
    # Without the old public key, the checkpoint it signed cannot be trusted: verify says so.
    monkeypatch.setenv("FLOURISH_AUDIT_PREVIOUS_PUBLIC_KEYS", "[]")
    refused = await cli("verify", "--schema", ledger.schema)
    assert refused.exit_code == 1 and "not among the public keys" in refused.output, refused.output


async def test_an_export_of_a_rewritten_chain_fails_offline_against_a_copy_of_the_witness(
    engine, ledger, signer, superuser, witness, dsn, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    trust_id = await witnessed_chain(engine, ledger, signer, witness)
    await delete_one_share(Tamperer(superuser, ledger, superuser=True), trust_id)
    export = tmp_path / "trust.jsonl"
    exported = await cli("export", "--schema", ledger.schema, "--trust", str(trust_id), "-o", str(export))
    assert exported.exit_code == 0, exported.output
    # A DPO's machine: a copy of the witness directory, no Kafka, the published public key.
    copy = tmp_path / "witness-copy"
    shutil.copytree(witness.base, copy)
    key = tmp_path / "key.json"
    key.write_text(json.dumps(signer.published()))
    monkeypatch.setenv("FLOURISH_AUDIT_WITNESS_DIR", str(copy))
    monkeypatch.setenv("FLOURISH_AUDIT_WITNESS_TOPIC", "false")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    offline = await cli("verify", "--schema", ledger.schema, "--export", str(export), "--public-key", str(key))
    assert offline.exit_code == 1, offline.output
    assert f"witness dir:{copy}" in offline.output
    assert f"FAILED  trust {trust_id}: entry 5" in offline.output and "the witness holds a checkpoint" in offline.output
