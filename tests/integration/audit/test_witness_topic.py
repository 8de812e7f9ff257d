"""Kafka as a witness, on the real broker: every checkpoint is also published on
<prefix>audit.checkpoints, and the entries no witnessed checkpoint covers yet are cross-checked
against the events on the topics the ledger records from, so the window between checkpoints is no
blind spot for someone rewriting the database."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from flourish.kafka_acls import deprovision, provision
from services.reporting.audit.audit_topic import CHECKPOINTS_CONTEXT, KafkaTopicWitness, ledger_events
from services.reporting.audit.checkpoints import checkpoint_chain, checkpoint_due_chains
from services.reporting.audit.cli import app as audit_cli
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.witness import DirectoryWitness, ledger_name
from shared.events.envelope import encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from tests.integration.audit.conftest import share


@pytest.fixture
async def configured(witness_dir, ledger, signer, stack_settings, superuser, monkeypatch):  # type: ignore[no-untyped-def]
    """The CLI configured through the environment only, with topics of this test's own."""
    prefix = os.environ["FLOURISH_TOPIC_PREFIX"]
    monkeypatch.setenv("DATABASE_URL", stack_settings.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack_settings.kafka_bootstrap_servers)
    monkeypatch.setenv("FLOURISH_AUDIT_TOPIC_LAG_GRACE_S", "0")  # no consumer lag to allow for here
    pem = signer.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    monkeypatch.setenv("FLOURISH_AUDIT_SIGNING_KEY", pem.decode())
    bootstrap, name = kafka_options(stack_settings, ADMIN), ledger_name(stack_settings.database_url, ledger.schema)
    await provision(stack_settings, prefix)  # the prefix's topics and ACLs, as Kafka's admin
    yield prefix, bootstrap, DirectoryWitness(witness_dir, name), \
        KafkaTopicWitness(bootstrap, topic_for(CHECKPOINTS_CONTEXT, prefix), name)
    await deprovision(stack_settings, prefix)


async def published_and_recorded(engine, ledger, prefix: str, bootstrap: Mapping[str, Any], trust_id: uuid.UUID, n: int) -> str:  # type: ignore[no-untyped-def]
    """A share published on the reporting topic, and recorded in the ledger as its consumer does."""
    envelope = share(trust_id, n)
    key, headers, value = encode(envelope)
    producer = AIOKafkaProducer(**bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic_for("reporting", prefix), value, key=key, headers=headers)
    finally:
        await producer.stop()
    async with engine.begin() as conn:
        assert await ledger.append(conn, trust_id, fact_from(envelope)) == n
    return str(envelope.id)


async def cli(*args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, audit_cli, list(args))


async def test_checkpoints_are_published_and_a_tail_truncated_after_the_last_one_is_named(
    engine, ledger, signer, configured, superuser
):  # type: ignore[no-untyped-def]
    prefix, bootstrap, directory, topic = configured
    trust_id, event_ids = uuid.uuid4(), {}
    settings = AuditSettings(checkpoint_every_entries=5)
    unpublished: list[Any] = []
    try:
        for n in range(1, 9):
            event_ids[n] = await published_and_recorded(engine, ledger, prefix, bootstrap, trust_id, n)
            await checkpoint_due_chains(engine, ledger, signer, settings, directory, set(), also=[topic],
                                        unpublished=unpublished)
    finally:
        await topic.close()
    assert unpublished == []
    reader = KafkaTopicWitness(bootstrap, topic.topic, topic.ledger)
    assert [c.seq for c in await reader.checkpoints(trust_id)] == [1, 6]  # a first entry is due at once
    assert await reader.checkpoints(trust_id) == await directory.checkpoints(trust_id)
    assert set((await ledger_events(bootstrap, prefix))[trust_id]) == {uuid.UUID(e) for e in event_ids.values()}

    clean = await cli("verify", "--schema", ledger.schema)
    assert clean.exit_code == 0, clean.output
    assert "last witnessed at entry 6, 2 not yet signed" in clean.output

    # Entries 7 and 8 are not covered by any checkpoint yet: the tail is cut there, the head reset.
    async with superuser.transaction():
        await superuser.execute("SET LOCAL session_replication_role = replica")
        await superuser.execute(f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq > 6", trust_id)
        head = await superuser.fetchval(f"SELECT entry_hash FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 6",
                                        trust_id)
        await superuser.execute(f'UPDATE "{ledger.schema}".audit_chain_heads SET head_seq = 6, head_hash = $2 '
                                "WHERE trust_id = $1", trust_id, head)
    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 1, result.output
    assert f"FAILED  trust {trust_id}: entry 7 (event {event_ids[7]}): missing: event {event_ids[7]}" in result.output
    assert "is not in the chain" in result.output


async def test_a_directory_witness_wiped_on_its_host_still_leaves_the_topic_to_name_the_rewrite(
    engine, ledger, signer, configured, superuser, witness_dir
):  # type: ignore[no-untyped-def]
    prefix, bootstrap, directory, topic = configured
    trust_id = uuid.uuid4()
    settings = AuditSettings(checkpoint_every_entries=4)
    try:
        for n in range(1, 9):
            await published_and_recorded(engine, ledger, prefix, bootstrap, trust_id, n)
            await checkpoint_due_chains(engine, ledger, signer, settings, directory, set(), also=[topic], unpublished=[])
    finally:
        await topic.close()
    assert [c.seq for c in await directory.checkpoints(trust_id)] == [1, 5]
    # Root on the directory witness's host empties it, and the database is truncated back to entry 3.
    shutil.rmtree(directory.root)
    async with superuser.transaction():
        await superuser.execute("SET LOCAL session_replication_role = replica")
        await superuser.execute(f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq > 3", trust_id)
        await superuser.execute(f'DELETE FROM "{ledger.schema}".audit_checkpoints WHERE trust_id = $1 AND seq > 3', trust_id)
        head = await superuser.fetchval(f"SELECT entry_hash FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 3",
                                        trust_id)
        await superuser.execute(f'UPDATE "{ledger.schema}".audit_chain_heads SET head_seq = 3, head_hash = $2, '
                                "checkpoint_seq = 1 WHERE trust_id = $1", trust_id, head)
    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 1, result.output
    assert f"FAILED  trust {trust_id}: entry 4: missing: the witness holds a checkpoint at entry 5" in result.output


async def test_a_database_restored_from_an_older_backup_is_recovered_from_kafka_until_it_matches_the_witness(
    engine, ledger, signer, configured, superuser
):  # type: ignore[no-untyped-def]
    prefix, bootstrap, directory, topic = configured
    trust_id, event_ids = uuid.uuid4(), {}
    settings = AuditSettings(checkpoint_every_entries=5)
    try:
        for n in range(1, 9):
            event_ids[n] = await published_and_recorded(engine, ledger, prefix, bootstrap, trust_id, n)
            await checkpoint_due_chains(engine, ledger, signer, settings, directory, set(), also=[topic], unpublished=[])
    finally:
        await topic.close()
    assert [c.seq for c in await directory.checkpoints(trust_id)] == [1, 6]
    # The restore: the database as an older backup had it, with entries 1..2 and the checkpoint at 1.
    async with superuser.transaction():
        await superuser.execute("SET LOCAL session_replication_role = replica")
        await superuser.execute(f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq > 2", trust_id)
        await superuser.execute(f'DELETE FROM "{ledger.schema}".audit_checkpoints WHERE trust_id = $1 AND seq > 2', trust_id)
        head = await superuser.fetchval(f"SELECT entry_hash FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 2",
                                        trust_id)
        await superuser.execute(f'UPDATE "{ledger.schema}".audit_chain_heads SET head_seq = 2, head_hash = $2, '
                                "checkpoint_seq = 1 WHERE trust_id = $1", trust_id, head)
    restored = await cli("verify", "--schema", ledger.schema)
    assert restored.exit_code == 1 and "missing: the witness holds a checkpoint at entry 6" in restored.output

    recovered = await cli("recover", "--schema", ledger.schema, "--trust", str(trust_id))
    assert recovered.exit_code == 0, recovered.output
    assert "4 entries re-recorded as witnessed, 2 recorded afresh; the chain ends at entry 8" in recovered.output
    result = await cli("verify", "--schema", ledger.schema)
    assert result.exit_code == 0 and "last witnessed at entry 6" in result.output, result.output
    async with engine.connect() as conn:
        entries = await ledger.entries(conn, trust_id, after=0, upto=8)
    recorded = [json.loads(e.body)["fact"]["event_id"] for e in entries]
    assert recorded[:6] == [event_ids[n] for n in range(1, 7)]  # exactly as witnessed
    assert set(recorded[6:]) == {event_ids[7], event_ids[8]}  # recorded afresh: never witnessed
    # And the checkpointer signs on from there.
    async with engine.begin() as conn:
        assert (await checkpoint_chain(conn, ledger, signer, trust_id, directory)).seq == 8
