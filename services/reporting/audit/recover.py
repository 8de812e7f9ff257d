"""After a legitimate restore of the reporting database from an older backup: re-record, from
Kafka, the entries the backup lacks, exactly as they were, until the chain matches the witness.

The backup's chain ends before the last witnessed checkpoint, so `verify` fails and the
checkpointer refuses to sign, as they must. Each checkpoint on <prefix>audit.checkpoints carries,
for every entry it covers, the event that entry recorded and when; the events themselves are on
the topics the ledger records from (kept forever). So entry N is rebuilt byte for byte — the
same fact, the same recorded_at, the same place — and its hash must equal what the witnessed
checkpoints signed, or nothing is written. Events published after the last checkpoint (never
witnessed) are then recorded afresh, in the order Kafka has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporting.audit.audit_topic import KafkaTopicWitness, ledger_topics, read_topics, recorded_source
from services.reporting.audit.domain.canonical import GENESIS_HASH, entry_body, sha256_hex
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.ledger import Ledger
from shared.events.envelope import Envelope, InvalidMessage, decode


class RecoveryRefused(Exception):
    """The chain cannot be made to match the witness from what Kafka holds: nothing was written."""


@dataclass(frozen=True)
class Recovery:
    rebuilt: int  # entries re-recorded exactly, up to the last witnessed checkpoint
    recorded: int  # events after it, recorded afresh
    head_seq: int


async def recover_chain(
    engine: AsyncEngine, ledger: Ledger, trust_id: UUID, checkpoints_topic: KafkaTopicWitness,
    kafka: Mapping[str, Any], topic_prefix: str,
) -> Recovery:
    witnessed = await checkpoints_topic.checkpoints(trust_id)
    recorded = checkpoints_topic.recorded.get(trust_id, {})
    envelopes: dict[UUID, Envelope] = {}
    order: list[tuple[int, UUID]] = []
    async for record in read_topics(kafka, ledger_topics(topic_prefix)):
        headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
        if headers.get("ce_trustid") != str(trust_id):
            continue
        try:
            envelope = decode(record.headers, record.value)
        except InvalidMessage:
            continue
        # As the live consumer: its producer is the topic's, and what that producer cannot have
        # written (dead-lettered live) is never recorded.
        source = recorded_source(record.topic, envelope.type, envelope.data.context, envelope.source, topic_prefix)
        if source is None:
            continue
        envelope = replace(envelope, source=source)
        if envelope.id not in envelopes:
            envelopes[envelope.id] = envelope
            order.append((record.timestamp, envelope.id))
    last = witnessed[-1] if witnessed else None
    signed = {c.seq: c for c in witnessed}
    async with engine.begin() as conn:
        head = await ledger.head(conn, trust_id, for_update=True)
        seq, prev = (head.seq, head.entry_hash) if head else (0, GENESIS_HASH)
        if head is not None and head.seq in signed and signed[head.seq].entry_hash != head.entry_hash:
            raise RecoveryRefused(f"the chain's entry {head.seq} is not the one the witness holds: not a restore")
        rebuilt = 0
        while last is not None and seq < last.seq:
            seq += 1
            if seq not in recorded or recorded[seq][0] not in envelopes:
                raise RecoveryRefused(f"entry {seq}: Kafka does not hold the event it recorded")
            event_id, recorded_at = recorded[seq]
            fact = fact_from(envelopes[event_id]).as_json(datetime.fromisoformat(recorded_at))
            body = entry_body(trust_id, seq, prev, fact)
            entry_hash = sha256_hex(body)
            if seq in signed and signed[seq].entry_hash != entry_hash:
                raise RecoveryRefused(f"entry {seq} rebuilt from Kafka does not match the witnessed checkpoint")
            await conn.execute(text(
                f"INSERT INTO {ledger.entries_table} (trust_id, seq, prev_hash, entry_hash, body) "
                "VALUES (:trust_id, :seq, :prev, :hash, :body)"),
                {"trust_id": trust_id, "seq": seq, "prev": prev, "hash": entry_hash, "body": body})
            prev, rebuilt = entry_hash, rebuilt + 1
        if rebuilt:
            await conn.execute(text(
                f"""INSERT INTO "{ledger.schema}".audit_chain_heads (trust_id, head_seq, head_hash)
                    VALUES (:trust_id, :seq, :hash)
                    ON CONFLICT (trust_id) DO UPDATE SET head_seq = EXCLUDED.head_seq,
                      head_hash = EXCLUDED.head_hash, updated_at = now()"""),
                {"trust_id": trust_id, "seq": seq, "hash": prev})
        present = {c.seq for c in await ledger.checkpoints_after(conn, trust_id, 0)}
        for checkpoint in witnessed:
            if checkpoint.seq not in present:
                await ledger.add_checkpoint(conn, checkpoint)
        fresh = 0
        # The rest, in the order they were published (across topics and partitions, by Kafka's
        # timestamps: never witnessed, so any consistent order is the truth); a replay adds nothing.
        for _, event_id in sorted(order, key=lambda item: item[0]):
            fresh += await ledger.append(conn, trust_id, fact_from(envelopes[event_id])) is not None
        final = await ledger.head(conn, trust_id)
    return Recovery(rebuilt, fresh, final.seq if final else 0)
