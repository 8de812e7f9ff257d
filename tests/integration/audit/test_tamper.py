"""Tampering with the ledger on the real server, as a real superuser (who can get past every
privilege and trigger): `flourish audit verify` fails and names the entry each time, and chains
nobody touched still pass. And the services' role cannot tamper at all."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from services.reporting.audit.cli import app as audit_cli
from services.reporting.audit.domain.canonical import entry_body, sha256_hex
from services.reporting.audit.domain.chain import ChainReport
from services.reporting.audit.signing import CheckpointSigner
from services.reporting.audit.verification import (
    SecondProcess,
    export_chain,
    verify_chain,
    verify_database,
    verify_export,
)
from tests.integration.audit.conftest import fill


async def cli(args: list[str]):  # type: ignore[no-untyped-def]
    """The `flourish audit` command line, run as an operator runs it (its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, audit_cli, args)


async def verify(dsn, ledger, signer, trust_id) -> ChainReport:  # type: ignore[no-untyped-def]
    result = await verify_database(dsn, ledger.schema, {signer.key_id: signer.public_key}, [trust_id])
    assert result.defences == []
    return result.reports[0]


async def as_tamperer(superuser: asyncpg.Connection, *statements: tuple[str, tuple]) -> None:  # type: ignore[type-arg]
    """Run statements as a superuser with the append-only triggers out of the way."""
    async with superuser.transaction():
        await superuser.execute("SET LOCAL session_replication_role = replica")
        for sql, args in statements:
            await superuser.execute(sql, *args)


@pytest.fixture
async def chains(engine, ledger, signer):  # type: ignore[no-untyped-def]
    """Two trusts' chains of 12 entries, signed at entries 5 and 10: one to tamper, one not."""
    tampered = await fill(engine, ledger, signer, 12, checkpoint_at=(5, 10))
    untouched = await fill(engine, ledger, signer, 12, checkpoint_at=(5, 10))
    return tampered, untouched


async def _both(dsn, ledger, signer, chains):  # type: ignore[no-untyped-def]
    tampered, untouched = chains
    result = await verify_database(dsn, ledger.schema, {signer.key_id: signer.public_key}, [tampered, untouched])
    bad, good = result.reports
    assert good.ok and good.entries == 12 and good.checkpoints == 2, "a chain nobody touched still verifies"
    assert not result.ok
    return bad


async def test_untouched_chains_verify_with_their_checkpoints(dsn, ledger, signer, chains):
    for trust_id in chains:
        report = await verify(dsn, ledger, signer, trust_id)
        assert report.ok and report.entries == 12 and report.checkpoints == 2 and report.unsigned_entries == 2


async def test_changing_one_field_of_one_entry_is_named(dsn, ledger, signer, chains, superuser):
    trust_id = chains[0]
    event_id = await superuser.fetchval(f"SELECT event_id FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 7", trust_id)
    await as_tamperer(superuser, (
        f"UPDATE {ledger.entries_table} SET body = replace(body, '\"camhs\"', '\"social_care\"') WHERE trust_id = $1 AND seq = 7",
        (trust_id,),
    ))
    # The query columns follow the body (they are generated from it), so nobody can make the
    # search disagree with the record either: the change shows up everywhere, and verify names it.
    assert await superuser.fetchval(
        f"SELECT agency_category FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 7", trust_id
    ) == "social_care"
    bad = await _both(dsn, ledger, signer, chains)
    assert bad.mismatch.seq == 7 and bad.mismatch.event_id == str(event_id)
    assert "does not match its hash" in bad.mismatch.reason


async def test_deleting_one_row_is_named(dsn, ledger, signer, chains, superuser):
    await as_tamperer(superuser, (f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 7", (chains[0],)))
    bad = await _both(dsn, ledger, signer, chains)
    assert bad.mismatch.seq == 8 and "entries 7..7 are missing" in bad.mismatch.reason


async def test_inserting_one_row_with_a_recomputed_hash_is_named(dsn, ledger, signer, chains, superuser):
    trust_id, table = chains[0], ledger.entries_table
    prev = await superuser.fetchval(f"SELECT entry_hash FROM {table} WHERE trust_id = $1 AND seq = 6", trust_id)
    forged = entry_body(trust_id, 7, prev, {
        "kind": "disclosure", "action": "share", "event_id": str(uuid.uuid4()),
        "event_type": "flourish.reporting.ReportShared.v1", "source": "/flourish/reporting",
        "occurred_at": "2026-09-07T09:06:30.000000Z", "recorded_at": "2026-09-07T09:06:30.000000Z",
        "agency_category": "camhs", "actor": "staff-9",
    })
    await as_tamperer(
        superuser,
        # Make room at 7 by renumbering everything after it, then slip a well-formed entry in.
        (f"UPDATE {table} SET seq = seq + 1000000 WHERE trust_id = $1 AND seq >= 7", (trust_id,)),
        (f"UPDATE {table} SET seq = seq - 999999 WHERE trust_id = $1 AND seq >= 1000000", (trust_id,)),
        (f"INSERT INTO {table} (trust_id, seq, prev_hash, entry_hash, body) VALUES ($1, 7, $2, $3, $4)",
         (trust_id, prev, sha256_hex(forged), forged)),
    )
    bad = await _both(dsn, ledger, signer, chains)
    assert bad.mismatch.seq == 8 and "prev_hash" in bad.mismatch.reason


async def test_appending_one_row_after_the_head_is_named(dsn, ledger, signer, chains, superuser):
    trust_id, table = chains[0], ledger.entries_table
    prev = await superuser.fetchval(f"SELECT entry_hash FROM {table} WHERE trust_id = $1 AND seq = 12", trust_id)
    forged = entry_body(trust_id, 13, prev, {"kind": "audit", "action": "audit_queried", "event_id": str(uuid.uuid4())})
    await as_tamperer(superuser, (
        f"INSERT INTO {table} (trust_id, seq, prev_hash, entry_hash, body) VALUES ($1, 13, $2, $3, $4)",
        (trust_id, prev, sha256_hex(forged), forged),
    ))
    bad = await _both(dsn, ledger, signer, chains)
    assert bad.mismatch.seq == 13 and "added afterwards" in bad.mismatch.reason


async def test_reordering_two_rows_is_named(dsn, ledger, signer, chains, superuser):
    trust_id, table = chains[0], ledger.entries_table
    await as_tamperer(
        superuser,
        (f"UPDATE {table} SET seq = 1000004 WHERE trust_id = $1 AND seq = 4", (trust_id,)),
        (f"UPDATE {table} SET seq = 4 WHERE trust_id = $1 AND seq = 9", (trust_id,)),
        (f"UPDATE {table} SET seq = 9 WHERE trust_id = $1 AND seq = 1000004", (trust_id,)),
    )
    bad = await _both(dsn, ledger, signer, chains)
    assert bad.mismatch.seq == 4


async def test_rewriting_an_entry_and_rehashing_the_rest_is_caught_by_the_signed_checkpoint(
    dsn, ledger, signer, chains, superuser
):
    trust_id, table = chains[0], ledger.entries_table
    rows = await superuser.fetch(f"SELECT seq, prev_hash, body FROM {table} WHERE trust_id = $1 ORDER BY seq", trust_id)
    prev, statements = rows[5]["prev_hash"], []
    for row in rows[5:]:  # entries 6..12, recomputed from a changed entry 6 onwards
        fact = json.loads(row["body"])["fact"]
        if row["seq"] == 6:
            fact["agency_category"] = "other"
        body = entry_body(trust_id, row["seq"], prev, fact)
        statements.append((f"UPDATE {table} SET prev_hash = $2, entry_hash = $3, body = $4 WHERE trust_id = $1 AND seq = $5",
                           (trust_id, prev, sha256_hex(body), body, row["seq"])))
        prev = sha256_hex(body)
    statements.append((f'UPDATE "{ledger.schema}".audit_chain_heads SET head_hash = $2 WHERE trust_id = $1', (trust_id, prev)))
    await as_tamperer(superuser, *statements)
    bad = await _both(dsn, ledger, signer, chains)
    # Every hash links, but the checkpoint signed over entry 10 no longer matches it.
    assert bad.mismatch.seq == 10 and "rewritten" in bad.mismatch.reason


async def test_the_services_role_is_refused_update_delete_and_truncate(engine, ledger, signer):
    trust_id = await fill(engine, ledger, signer, 3, checkpoint_at=(3,))
    checkpoints = f'"{ledger.schema}".audit_checkpoints'
    for statement in (
        f"UPDATE {ledger.entries_table} SET body = body WHERE trust_id = '{trust_id}'",
        f"DELETE FROM {ledger.entries_table} WHERE trust_id = '{trust_id}'",
        f"TRUNCATE {ledger.entries_table}",
        f"UPDATE {checkpoints} SET signature = '' WHERE trust_id = '{trust_id}'",
        f"DELETE FROM {checkpoints}",
        f"TRUNCATE {checkpoints}",
    ):
        with pytest.raises(DBAPIError) as refused:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        # Refused by the privileges themselves (42501 "permission denied"), before any trigger.
        assert refused.value.orig.sqlstate == "42501"
        assert "permission denied for table" in str(refused.value.orig)
    async with engine.connect() as conn:
        assert await conn.scalar(text(f"SELECT count(*) FROM {ledger.entries_table} WHERE trust_id = '{trust_id}'")) == 3
        assert await conn.scalar(text(f"SELECT count(*) FROM {checkpoints} WHERE trust_id = '{trust_id}'")) == 1


async def test_even_a_superuser_is_refused_by_the_triggers_unless_they_take_them_away(ledger, engine, signer, superuser):
    trust_id = await fill(engine, ledger, signer, 3)
    digest = (f"SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) "
              f"FROM {ledger.entries_table} t WHERE trust_id = '{trust_id}'")
    before = await superuser.fetchval(digest)
    for statement in (
        f"UPDATE {ledger.entries_table} SET body = body WHERE trust_id = '{trust_id}'",
        f"DELETE FROM {ledger.entries_table} WHERE trust_id = '{trust_id}'",
        f"TRUNCATE {ledger.entries_table}",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await superuser.execute(statement)
    with pytest.raises(asyncpg.GeneratedAlwaysError):
        await superuser.execute(f"UPDATE {ledger.entries_table} SET agency_id = gen_random_uuid() WHERE trust_id = '{trust_id}'")
    assert before.startswith("3:") and await superuser.fetchval(digest) == before


async def test_a_disabled_trigger_is_reported_by_verify(dsn, ledger, signer, engine, superuser):
    trust_id = await fill(engine, ledger, signer, 2)
    await superuser.execute(f"ALTER TABLE {ledger.entries_table} DISABLE TRIGGER audit_entries_append_only")
    try:
        result = await verify_database(dsn, ledger.schema, {signer.key_id: signer.public_key}, [trust_id])
    finally:
        await superuser.execute(f"ALTER TABLE {ledger.entries_table} ENABLE TRIGGER audit_entries_append_only")
    assert result.reports[0].ok and not result.ok
    assert result.defences == [f"{ledger.schema}.audit_entries: its append-only trigger is disabled"]


async def test_the_cli_names_the_tampered_entry_online_and_offline(
    dsn, ledger, signer, chains, superuser, tmp_path, stack_settings, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", stack_settings.database_url)  # as an operator points the CLI
    trust_id = chains[0]
    key_file = tmp_path / "public-key.json"
    key_file.write_text(json.dumps(signer.published()))
    args = ["verify", "--schema", ledger.schema, "--trust", str(trust_id), "--public-key", str(key_file)]
    clean = await cli(args)
    assert clean.exit_code == 0, clean.output
    assert "OK: 1 chain(s), 12 entries verified" in clean.output

    export_file = tmp_path / "trust.jsonl"
    exported = await cli(["export", "--schema", ledger.schema, "--trust", str(trust_id), "-o", str(export_file)])
    assert exported.exit_code == 0, exported.output
    offline = await cli(["verify", "--export", str(export_file), "--public-key", str(key_file)])
    assert offline.exit_code == 0 and "12 entries verified" in offline.output, offline.output

    await as_tamperer(superuser, (f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 3", (trust_id,)))
    online = await cli(args)
    assert online.exit_code == 1 and f"FAILED  trust {trust_id}: entry 4" in online.output, online.output

    # The export taken before the deletion still verifies; one edited by hand does not.
    before = await cli(["verify", "--export", str(export_file), "--public-key", str(key_file)])
    assert before.exit_code == 0, before.output
    lines = export_file.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[5])
    assert entry[0] == 5
    lines[5] = json.dumps([entry[0], entry[1], entry[2], entry[3].replace("staff-", "staff-x")]).encode() + b"\n"
    export_file.write_bytes(b"".join(lines))
    edited = await cli(["verify", "--export", str(export_file), "--public-key", str(key_file)])
    assert edited.exit_code == 1 and "entry 5" in edited.output, edited.output


async def test_an_export_cut_short_or_checked_with_the_wrong_key_fails(dsn, ledger, signer, engine, tmp_path):
    trust_id = await fill(engine, ledger, signer, 6, checkpoint_at=(3, 6))
    path = tmp_path / "export.jsonl"
    with path.open("wb") as out:
        assert await export_chain(dsn, ledger.schema, trust_id, out) == 6
    lines = path.read_bytes().splitlines()
    keys = {signer.key_id: signer.public_key}
    assert verify_export(lines, keys).ok
    cut = verify_export(lines[:4], keys)
    assert cut.mismatch.seq == 4 and "cut short" in cut.mismatch.reason
    stranger = CheckpointSigner(Ed25519PrivateKey.generate())
    wrong = verify_export(lines, {stranger.key_id: stranger.public_key})
    assert wrong.mismatch.seq == 3 and "not among the public keys" in wrong.mismatch.reason


async def in_halves(dsn, schema, trust_id, keys, how, witnessed=()) -> ChainReport:  # type: ignore[no-untyped-def]
    """verify_chain with the split at entry 6 of 12: the second half on a helper connection of
    this process, or in a forked second process (SecondProcess), as `flourish audit verify` does."""
    conn, helper = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    second = SecondProcess(dsn) if how == "process" else None
    try:
        return await verify_chain(conn, schema, trust_id, keys, helper=helper if how == "helper" else None,
                                  batch=2, split_from=4, witnessed=witnessed, second=second)
    finally:
        await conn.close()
        await helper.close()
        if second is not None:
            second.close()


@pytest.mark.parametrize("how", ["helper", "process"])
@pytest.mark.parametrize(("tampered_seq", "named"), [(3, 3), (6, 6), (7, 7), (11, 11)])
async def test_a_long_chain_read_in_two_halves_still_names_the_entry(
    dsn, ledger, signer, chains, superuser, tampered_seq, named, how,  # type: ignore[no-untyped-def]
):
    """verify reads long chains as two halves at once; the boundary (entry 6 of 12) is no blind spot,
    whether the second half is read by this process or by a second one."""
    trust_id = chains[0]
    keys = {signer.key_id: signer.public_key}
    clean = await in_halves(dsn, ledger.schema, trust_id, keys, how)
    assert clean.ok and clean.entries == 12 and clean.checkpoints == 2 and clean.last_seq == 12
    await as_tamperer(superuser, (
        f"UPDATE {ledger.entries_table} SET body = replace(body, '\"camhs\"', '\"other\"') WHERE trust_id = $1 AND seq = $2",
        (trust_id, tampered_seq),
    ))
    report = await in_halves(dsn, ledger.schema, trust_id, keys, how)
    assert report.mismatch.seq == named


@pytest.mark.parametrize("how", ["helper", "process"])
async def test_a_row_deleted_at_the_halves_boundary_is_named(dsn, ledger, signer, chains, superuser, how):  # type: ignore[no-untyped-def]
    trust_id = chains[0]
    await as_tamperer(superuser, (f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 6", (trust_id,)))
    report = await in_halves(dsn, ledger.schema, trust_id, {signer.key_id: signer.public_key}, how)
    assert report.mismatch.seq == 7 and "missing" in report.mismatch.reason


@pytest.mark.parametrize("how", ["helper", "process"])
async def test_a_chain_read_in_halves_is_reported_exactly_as_a_straight_read(dsn, ledger, signer, chains, superuser, how):  # type: ignore[no-untyped-def]
    """A failure in either half — a witnessed checkpoint the chain does not hold, an unknown key,
    a truncated tail — is named the same whether the second half is read on a helper connection
    or by the forked process as by a single straight read (same entry, same reason, same counts)."""
    trust_id = chains[0]
    keys = {signer.key_id: signer.public_key}
    stranger = CheckpointSigner(Ed25519PrivateKey.generate())
    witnessed = [stranger.sign(trust_id, 10, "0" * 64, datetime.now(UTC))]

    async def straight(**kwargs) -> ChainReport:  # type: ignore[no-untyped-def]
        conn = await asyncpg.connect(dsn)
        try:
            return await verify_chain(conn, ledger.schema, trust_id, kwargs.get("keys", keys),
                                      witnessed=kwargs.get("witnessed", ()))
        finally:
            await conn.close()

    def same(a: ChainReport, b: ChainReport) -> None:
        assert (a.mismatch, a.entries, a.checkpoints, a.last_seq, a.last_hash, a.witnessed) == \
               (b.mismatch, b.entries, b.checkpoints, b.last_seq, b.last_hash, b.witnessed)

    same(await in_halves(dsn, ledger.schema, trust_id, keys, how, witnessed), await straight(witnessed=witnessed))
    other_keys = {stranger.key_id: stranger.public_key}
    same(await in_halves(dsn, ledger.schema, trust_id, other_keys, how), await straight(keys=other_keys))
    await as_tamperer(superuser, (f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq > 9", (trust_id,)))
    truncated = await in_halves(dsn, ledger.schema, trust_id, keys, how)
    same(truncated, await straight())
    assert truncated.mismatch.seq == 10 and "missing" in truncated.mismatch.reason


async def test_the_services_own_periodic_check_counts_a_tampered_chain(dsn, ledger, signer, chains, superuser):
    from services.reporting.audit.watch import verify_ledger
    from tests.conftest import counter

    failures = counter("flourish_audit_verification_failures", check="periodic")
    keys = {signer.key_id: signer.public_key}
    assert (await verify_ledger(dsn, ledger, keys)).ok and failures.delta() == 0
    await as_tamperer(superuser, (f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 2", (chains[0],)))
    result = await verify_ledger(dsn, ledger, keys)
    assert not result.ok and failures.delta() == 1
