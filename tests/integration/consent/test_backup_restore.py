"""A restore of the consent database from a backup taken before an erasure does not bring the
pupil back (issue 15, item 3), on the real PostgreSQL and Kafka.

As an operator would: `pg_dump` of the consent schema, an erasure through the API, the schema
restored from the dump with `pg_restore` — the pupil's wrapped key is back in the table. The
service refuses to start; `flourish admin reapply-erasures` replays the erasure register (the
consent topic and the audit ledger, which holds an erasure the topic no longer does) and destroys
the keys again; the service starts, the key is
gone (410, DataKeyDestroyed), the other pupil's data still reads, and a second run changes nothing.
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.consent.restore import ConsentRestored, entry_of_envelope, entry_of_ledger
from services.consent.tables import data_keys, erasures, kernel, pupils
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.ledger import Ledger
from shared.datakeys import DataKeyDestroyed, KekKeyring, LocalKek
from shared.events.consent import DataCategory, ErasureReason, PupilErased, RetentionClock, RetentionExpired
from shared.events.envelope import Envelope
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher
from shared.settings import Settings
from tests.conftest import database_of_its_own
from tests.integration.consent.conftest import of_pupils, read_until, types_of
from tests.integration.consent.keyring_helpers import (
    cli_env,
    consent_with,
    dump_schema,
    flourish,
    hold_keys,
    restore_schema,
)

KEK = LocalKek(os.urandom(32))


async def wrapped_key(settings_engine: Any, pupil: uuid.UUID) -> Any:
    async with settings_engine.connect() as conn:
        return (await conn.execute(select(data_keys.c.wrapped_key, data_keys.c.kek_id, data_keys.c.destroyed_at)
                                   .where(data_keys.c.pupil_id == pupil))).first()


async def test_a_restore_from_before_an_erasure_does_not_start_until_reapply_erasures_destroyed_the_key_again(
    stack_settings: Settings, topic_prefix: str, tmp_path: Path, publisher: KafkaPublisher,
) -> None:
    from flourish.local.migrate import migrate

    with database_of_its_own(stack_settings, "restore") as settings:
        await migrate(settings)
        keyring = KekKeyring(KEK)
        async with consent_with(settings, topic_prefix, tmp_path, publisher, keyring) as consent:
            erased, kept, in_ledger_only = await consent.enrol(3)
            held = await hold_keys(consent, erased, kept, in_ledger_only)
            before = {pupil: key for pupil, (key, _) in held.items()}
            trust_id, academy_id, engine = consent.trust_id, consent.academy_id, consent.app.state.runtime.engine

            # The nightly backup, taken before the erasure.
            await dump_schema(settings, "consent", tmp_path / "consent.dump")

            erasure = await consent.client.post(f"/pupils/{erased}/erasure", headers=consent.dpo,
                                                json={"reason": "right_to_erasure"})
            assert erasure.status_code == 201, erasure.text
            await consent.drain()
            await read_until(consent.bootstrap, consent.topic,
                             lambda rs: "flourish.consent.PupilErased.v1" in types_of(of_pupils(rs, erased)))
            assert (await wrapped_key(engine, erased)).wrapped_key is None

        # The database is lost and restored from that backup: the erased pupil's key is back.
        await restore_schema(settings, "consent", tmp_path / "consent.dump")
        from shared.store.db import create_engine

        owner = create_engine(settings, pool_size=1)
        try:
            # An erasure the audit ledger (reporting's database, not restored) recorded whose record
            # Kafka no longer holds (its retention): the ledger is the register's other half.
            old_erasure = Envelope(data=PupilErased(
                pupil_id=in_ledger_only, erasure_id=uuid.uuid4(), data_category=DataCategory.ALL,
                reason=ErasureReason.RIGHT_TO_ERASURE, requested_by="dpo-2", key_destroyed=True,
                erased_at=datetime.now(UTC)), trust_id=trust_id, academy_id=academy_id, source="/flourish/consent")
            async with owner.begin() as conn:
                assert await Ledger("reporting").append(conn, trust_id, fact_from(old_erasure)) is not None

            restored = await wrapped_key(owner, erased)
            assert restored.wrapped_key is not None and restored.destroyed_at is None
            assert await KekKeyring(KEK).unwrap(restored.kek_id, restored.wrapped_key,
                                                _aad(trust_id, erased)) == base64.b64decode(before[erased])

            # The service refuses to start, and says what to run.
            with pytest.raises(ConsentRestored, match="reapply-erasures"):
                async with consent_with(settings, topic_prefix, tmp_path, publisher, keyring):
                    pass  # pragma: no cover - it must not get here

            # The operator runs the required step.
            env = cli_env(settings, topic_prefix, tmp_path)
            code, report = await flourish("admin", "reapply-erasures", "--actor", "dpo-1", env=env)
            assert code == 0, report
            assert report["keys_destroyed_again"] == 2 and report["keys_still_back"] == 0, report
            assert report["erasures_recorded_again"] == 2 and report["trusts"] == [str(trust_id)], report
            assert report["ledger_replayed"] and report["register_entries_in_ledger"] == 1, report
            assert (await wrapped_key(owner, in_ledger_only)).wrapped_key is None

            gone = await wrapped_key(owner, erased)
            assert gone.wrapped_key is None and gone.kek_id is None and gone.destroyed_at is not None
            async with owner.connect() as conn:
                erased_at, date_of_birth = (await conn.execute(select(pupils.c.erased_at, pupils.c.date_of_birth_sealed)
                                                               .where(pupils.c.pupil_id == erased))).one()
                assert erased_at is not None and date_of_birth is None
                assert await conn.scalar(select(erasures.c.erasure_id).where(erasures.c.pupil_id == erased)) \
                    == uuid.UUID(erasure.json()["erasure_id"])
                recorded = (await conn.execute(select(kernel.events.c.data).where(
                    kernel.events.c.trust_id == trust_id,
                    kernel.events.c.event_type == "flourish.audit.AdminActionTaken.v1"))).scalars().all()
            assert any(e["action"] == "erasures.reapplied" and e["actor"] == "dpo-1" for e in recorded), recorded

            # Idempotent: a second run finds nothing to do.
            code, again = await flourish("admin", "reapply-erasures", env=env)
            assert code == 0 and again["keys_destroyed_again"] == 0 and again["erasures_recorded_again"] == 0, again
            assert again["trusts"] == [], again
        finally:
            await owner.dispose()

        # The service starts; the erased pupil's key is gone for good, the other pupil's still opens.
        async with consent_with(settings, topic_prefix, tmp_path, publisher, keyring) as consent:
            consent.trust_id = trust_id
            assert (await consent.client.get(f"/pupils/{erased}/data-key", headers=consent.service)).status_code == 410
            vault = consent.app.state.runtime.deps.handlers.vault
            async with consent.app.state.runtime.engine.begin() as conn:
                with pytest.raises(DataKeyDestroyed):
                    await vault.key_for(conn, trust_id, erased)
            still = await consent.client.get(f"/pupils/{kept}/data-key", headers=consent.service)
            assert still.status_code == 200 and still.json()["key"] == before[kept]
            gone = await consent.client.get(f"/pupils/{in_ledger_only}/data-key", headers=consent.service)
            assert gone.status_code == 410


def _aad(trust_id: uuid.UUID, pupil_id: uuid.UUID) -> bytes:
    from shared.datakeys import key_aad

    return key_aad(trust_id, pupil_id)


def test_the_audit_ledger_and_kafka_give_the_same_register_entry() -> None:
    """reapply-erasures reads the ledger's entries (reporting's schema) as it reads the topic:
    the fact the ledger records for an erasure or an expiry carries all it needs."""
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    moment = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
    events = [
        PupilErased(pupil_id=pupil, erasure_id=uuid.uuid4(), data_category=DataCategory.ALL,
                    reason=ErasureReason.RIGHT_TO_ERASURE, requested_by="dpo-1", key_destroyed=True, erased_at=moment),
        RetentionExpired(pupil_id=pupil, data_category=DataCategory.ASSESSMENTS, policy_id=uuid.uuid4(),
                         counted_from=RetentionClock.LEAVING_DATE, due_on=moment.date(), expired_at=moment),
    ]
    for event in events:
        envelope: Envelope[Any] = Envelope(data=event, trust_id=trust, academy_id=academy, source="/flourish/consent")
        from_kafka = entry_of_envelope(envelope)
        from_ledger = entry_of_ledger(trust, fact_from(envelope).as_json(moment))
        assert from_kafka is not None and from_ledger == from_kafka


async def test_a_mark_older_than_the_topics_retention_is_refused(
    stack_settings: Settings, topic_prefix: str, publisher: KafkaPublisher,
) -> None:
    """A database whose last check is older than what the consent topic still holds (a restore from
    an old backup, after Kafka's retention dropped records) cannot be checked against the topic
    alone: the service refuses to start (reapply-erasures then replays the audit ledger too)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.records_to_delete import RecordsToDelete
    from aiokafka.structs import TopicPartition
    from sqlalchemy.dialects.postgresql import insert as upsert

    from services.consent.restore import check_not_restored
    from services.consent.tables import erasure_register_checks
    from shared.messaging.producer import OutgoingRecord
    from shared.messaging.topics import ensure_topics
    from shared.store.db import create_engine

    topic = f"{topic_prefix}consent"
    await ensure_topics(kafka_options(stack_settings, ADMIN), [topic], partitions=1)
    await publisher.send_all([OutgoingRecord(topic, b"k", b"{}", []) for _ in range(3)])
    engine = create_engine(stack_settings, pool_size=1)
    try:
        assert await check_not_restored(engine, kafka_options(stack_settings, ADMIN), topic) == 0  # all there
        admin = AIOKafkaAdminClient(**kafka_options(stack_settings, ADMIN))
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=2)})
        finally:
            await admin.close()
        async with engine.begin() as conn:  # the mark as an old backup had it
            await conn.execute(upsert(erasure_register_checks).values(topic=topic, partition=0, next_offset=1)
                               .on_conflict_do_update(index_elements=["topic", "partition"], set_={"next_offset": 1}))
        with pytest.raises(ConsentRestored, match="no longer holds"):
            await check_not_restored(engine, kafka_options(stack_settings, ADMIN), topic)
    finally:
        await engine.dispose()
