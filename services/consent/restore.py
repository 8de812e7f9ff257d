"""Restores of the consent database, and the erasures a restore would undo (issue 15, item 3).

A backup taken before an erasure still holds the pupil's wrapped data key. Restoring it would
make every sealed copy of the pupil's data (in every table, backup and Kafka topic) readable
again. Two things stop that:

* **The start-up check** (`check_not_restored`, run by the service's bootstrap before it serves
  anything). The erasure register is kept where a restore of this database cannot reach it: the
  consent topic on Kafka (every `PupilErased` and `RetentionExpired` the service ever published)
  and the audit ledger (reporting's schema, which records the same events). The database keeps,
  per partition of the consent topic, the offset up to which it has checked that every erasure
  published there has its key tombstone here (`erasure_register_checks`). A restore rolls that
  mark back with everything else, so the next start reads the erasures published since the
  backup, finds a pupil whose key is back (or whose tombstone is missing), and refuses to start.
  The mark is only ever a place to resume reading: rolling it back makes the check read more,
  never less, and a mark older than the topic's retention is refused too (the ledger must then
  be replayed).
* **`flourish admin reapply-erasures`** (`reapply`): replays the register, from Kafka and the
  ledger, and destroys every data key the restore brought back, redacts what the erasure had
  redacted here, re-records the erasure and the retention expiries (so the scheduler does not
  emit them a second time), records an admin action, then advances the mark. Idempotent: a second
  run finds nothing to do.

Not re-emitted: `PupilErased` and `RetentionExpired` are already on Kafka and every service
applied them; the consent event store keeps the history as the backup had it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid5

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.consent.tables import (
    consent_decisions,
    data_keys,
    erasure_register_checks,
    erasures,
    pupils,
    retention_expiries,
)
from shared.audit import record_admin_action
from shared.datakeys import destroy_key
from shared.events.audit import AdminAction
from shared.events.consent import DataCategory, PupilErased, RetentionExpired
from shared.events.envelope import InvalidMessage, decode
from shared.store.event_store import EventStore

PUPIL_ERASED, RETENTION_EXPIRED = "pupil_erased", "retention_expired"
ERASURES_REAPPLIED = AdminAction.ERASURES_REAPPLIED  # recorded per trust
_TYPES = {PupilErased.event_type.encode(): PUPIL_ERASED, RetentionExpired.event_type.encode(): RETENTION_EXPIRED}


class ConsentRestored(Exception):
    """The database is older than the erasure register: it was restored from a backup (or lost
    its erasures some other way). The service does not start until reapply-erasures has run."""


@dataclass(frozen=True)
class RegisterEntry:
    """One erasure or retention expiry, as Kafka or the audit ledger holds it (ids and codes)."""

    event_id: UUID
    action: str  # PUPIL_ERASED or RETENTION_EXPIRED
    trust_id: UUID
    academy_id: UUID
    pupil_id: UUID
    at: datetime
    erasure_id: UUID | None = None
    reason: str | None = None
    requested_by: str | None = None
    data_category: str | None = None
    policy_id: UUID | None = None
    due_on: date | None = None

    @property
    def destroys_key(self) -> bool:
        return self.action == PUPIL_ERASED or self.data_category == DataCategory.ALL.value


def entry_of_envelope(envelope: Any) -> RegisterEntry | None:
    data = envelope.data
    common = {"event_id": envelope.id, "trust_id": envelope.trust_id, "academy_id": envelope.academy_id,
              "pupil_id": data.pupil_id}
    if isinstance(data, PupilErased):
        return RegisterEntry(action=PUPIL_ERASED, at=data.erased_at, erasure_id=data.erasure_id,
                             reason=str(data.reason), requested_by=data.requested_by,
                             data_category=str(data.data_category), **common)
    if isinstance(data, RetentionExpired):
        return RegisterEntry(action=RETENTION_EXPIRED, at=data.expired_at, data_category=str(data.data_category),
                             policy_id=data.policy_id, due_on=data.due_on, **common)
    return None


def entry_of_ledger(trust_id: UUID, fact: Mapping[str, Any]) -> RegisterEntry | None:
    """An audit-ledger entry's fact (kind `erasure`) as a register entry."""
    details = fact.get("details") or {}
    action = fact.get("action")
    if action not in (PUPIL_ERASED, RETENTION_EXPIRED) or not fact.get("pupil_id") or not fact.get("academy_id"):
        return None

    def maybe(name: str, kind: Any) -> Any:
        value = details.get(name)
        return None if value is None else kind(value)

    return RegisterEntry(
        event_id=UUID(fact["event_id"]), action=action, trust_id=trust_id, academy_id=UUID(fact["academy_id"]),
        pupil_id=UUID(fact["pupil_id"]), at=datetime.fromisoformat(fact["occurred_at"]),
        erasure_id=maybe("erasure_id", UUID), reason=maybe("reason", str), requested_by=fact.get("actor"),
        data_category=maybe("data_category", str), policy_id=maybe("policy_id", UUID),
        due_on=maybe("due_on", date.fromisoformat),
    )


# --- The register on Kafka ------------------------------------------------------------------------


@dataclass
class KafkaRegister:
    """What the consent topic holds from the given offsets on: its erasures, where it ends, and
    the partitions whose records from the given offset are no longer all there (retention)."""

    entries: list[RegisterEntry] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)
    truncated: list[int] = field(default_factory=list)
    undecodable: int = 0


async def read_kafka_register(kafka: Mapping[str, Any], topic: str, start: Mapping[int, int] | None = None,
                              *, timeout_s: float = 120.0) -> KafkaRegister:
    """Every PupilErased and RetentionExpired on the consent topic from `start` (per partition;
    absent: from the beginning) to the end it had when asked. Records of other types are skipped
    by their ce_type header, without decoding."""
    start = start or {}
    register = KafkaRegister()
    reader = AIOKafkaConsumer(**kafka, enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        await reader._client.force_metadata_update()  # noqa: SLF001  (no public refresh in aiokafka)
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        if not partitions:
            return register
        reader.assign(partitions)
        beginnings = await reader.beginning_offsets(partitions)
        ends = await reader.end_offsets(partitions)
        register.ends = {tp.partition: ends[tp] for tp in partitions}
        pending = set()
        for tp in partitions:
            first = start.get(tp.partition, 0)
            if first < beginnings[tp]:
                register.truncated.append(tp.partition)
                first = beginnings[tp]
            if first < ends[tp]:
                reader.seek(tp, first)
                pending.add(tp)
            else:
                reader.pause(tp)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{topic}: the erasure register could not be read within {timeout_s}s")
            for tp, records in (await reader.getmany(*pending, timeout_ms=500)).items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    register.undecodable += _collect(register.entries, record)
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    reader.pause(tp)
    finally:
        await reader.stop()
    return register


def _collect(entries: list[RegisterEntry], record: Any) -> int:
    kind = next((value for name, value in record.headers or () if name == "ce_type"), None)
    if kind not in _TYPES:
        return 0
    try:
        entry = entry_of_envelope(decode(record.headers, record.value))
    except InvalidMessage:
        return 1  # a hostile or broken record of an erasure type: the consumers dead-lettered it too
    if entry is not None:
        entries.append(entry)
    return 0


# --- The start-up check -----------------------------------------------------------------------------


async def checked_offsets(conn: AsyncConnection, topic: str) -> dict[int, int]:
    t = erasure_register_checks
    rows = await conn.execute(select(t.c.partition, t.c.next_offset).where(t.c.topic == topic))
    return {row.partition: row.next_offset for row in rows.all()}


async def mark_checked(conn: AsyncConnection, topic: str, ends: Mapping[int, int]) -> None:
    t = erasure_register_checks
    for partition, offset in ends.items():
        statement = insert(t).values(topic=topic, partition=partition, next_offset=offset)
        await conn.execute(statement.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={"next_offset": func.greatest(t.c.next_offset, statement.excluded.next_offset),
                  "checked_at": func.now()}))


async def keys_back(conn: AsyncConnection, entries: Iterable[RegisterEntry]) -> set[UUID]:
    """The pupils the register says were erased whose key is here again, or whose tombstone is
    missing (a later event could mint them a fresh key)."""
    erased = sorted({entry.pupil_id for entry in entries if entry.destroys_key})
    tombstoned: set[UUID] = set()
    for start in range(0, len(erased), 10_000):  # a bounded number of parameters per statement
        chunk = erased[start:start + 10_000]
        tombstoned.update((await conn.execute(select(data_keys.c.pupil_id).where(
            data_keys.c.pupil_id.in_(chunk), data_keys.c.wrapped_key.is_(None)))).scalars())
    return set(erased) - tombstoned


async def check_not_restored(engine: AsyncEngine, kafka: Mapping[str, Any], topic: str, *, timeout_s: float = 120.0) -> int:
    """Raise ConsentRestored if an erasure published on the consent topic since the last check
    is not in force here; otherwise advance the mark. Returns how many erasures were checked."""
    async with engine.connect() as conn:
        start = await checked_offsets(conn, topic)
    register = await read_kafka_register(kafka, topic, start, timeout_s=timeout_s)
    if register.truncated:
        raise ConsentRestored(
            f"the consent database last checked the erasure register at offsets the topic {topic} no longer holds "
            f"(partitions {register.truncated}): it was restored from an old backup, or is new beside an old topic. "
            "Run `flourish admin reapply-erasures` (it replays the audit ledger too) before starting the service.")
    async with engine.begin() as conn:
        back = await keys_back(conn, register.entries)
        if back:
            raise ConsentRestored(
                f"{len(back)} pupil(s) erased according to the erasure register (topic {topic}) have a data key "
                "again, or no tombstone: this database was restored from a backup taken before their erasure. "
                "Run `flourish admin reapply-erasures` before starting the service.")
        await mark_checked(conn, topic, register.ends)
    return len(register.entries)


# --- reapply-erasures -------------------------------------------------------------------------------


@dataclass
class Reapplied:
    """What a replay found and did (counts and pseudonymous ids only)."""

    entries: int = 0
    keys_destroyed: int = 0  # wrapped keys the restore had brought back, destroyed again
    tombstones_made: int = 0  # tombstones missing, made again (no key existed)
    erasures_recorded: int = 0
    expiries_recorded: int = 0
    pupils: set[UUID] = field(default_factory=set)  # whose key was destroyed again
    by_trust: dict[UUID, int] = field(default_factory=dict)


async def reapply(engine: AsyncEngine, store: EventStore, entries: Iterable[RegisterEntry],
                  *, actor: str) -> Reapplied:
    """Put every erasure and expiry of the register back in force, each pupil in a transaction of
    its own; then one admin action per trust that had anything to redo. Safe to run again. Needs no
    KEK: destroying a key is forgetting it."""
    done = Reapplied()
    unique = {entry.event_id: entry for entry in entries}
    for entry in sorted(unique.values(), key=lambda e: (e.at, e.action != RETENTION_EXPIRED)):
        done.entries += 1
        async with engine.begin() as conn:
            changed = await _reapply_one(conn, entry, done)
        if changed:
            done.by_trust[entry.trust_id] = done.by_trust.get(entry.trust_id, 0) + 1
    for trust_id, count in done.by_trust.items():
        async with engine.begin() as conn:
            await record_admin_action(conn, store, actor, ERASURES_REAPPLIED, trust_id=trust_id,
                                      target_kind="consent_database", target_id=str(trust_id),
                                      details={"register_entries_reapplied": str(count)})
    return done


async def _reapply_one(conn: AsyncConnection, entry: RegisterEntry, done: Reapplied) -> bool:
    changed = False
    if entry.action == RETENTION_EXPIRED and entry.data_category and entry.policy_id and entry.due_on:
        claimed = await conn.execute(insert(retention_expiries).values(
            pupil_id=entry.pupil_id, data_category=entry.data_category, trust_id=entry.trust_id,
            academy_id=entry.academy_id, policy_id=entry.policy_id, due_on=entry.due_on, event_id=entry.event_id,
            expired_at=entry.at).on_conflict_do_nothing().returning(retention_expiries.c.pupil_id))
        if claimed.first() is not None:
            done.expiries_recorded += 1
            changed = True
    if not entry.destroys_key:
        return changed
    row = (await conn.execute(select(data_keys.c.trust_id, data_keys.c.wrapped_key).where(
        data_keys.c.pupil_id == entry.pupil_id).with_for_update())).first()
    if row is not None and row.trust_id != entry.trust_id:
        return changed  # another trust's pupil id: never touched on a register entry's word
    if row is None or row.wrapped_key is not None:
        await destroy_key(conn, data_keys, entry.trust_id, entry.pupil_id, at=entry.at)
        if row is None:
            done.tombstones_made += 1
        else:
            done.keys_destroyed += 1
        done.pupils.add(entry.pupil_id)
        changed = True
    # What the erasure redacted here (as handlers.erase does); the key is gone, so this is tidiness.
    redacted = await conn.execute(update(pupils).where(
        pupils.c.pupil_id == entry.pupil_id, pupils.c.trust_id == entry.trust_id, pupils.c.erased_at.is_(None),
    ).values(date_of_birth_sealed=None, enrolled_on=None, left_on=None, last_activity_on=None, case_closed_on=None,
             erased_at=entry.at))
    changed |= redacted.rowcount > 0
    await conn.execute(update(consent_decisions).where(
        consent_decisions.c.pupil_id == entry.pupil_id, consent_decisions.c.trust_id == entry.trust_id,
    ).values(given_by_sealed=None, evidence_sealed=None, reason_sealed=None))
    if entry.action == PUPIL_ERASED:
        recorded = await conn.execute(insert(erasures).values(
            erasure_id=entry.erasure_id or uuid5(entry.event_id, "erasure"), pupil_id=entry.pupil_id,
            trust_id=entry.trust_id, academy_id=entry.academy_id, reason=entry.reason or "right_to_erasure",
            requested_by=entry.requested_by or "unknown", key_destroyed=True, erased_at=entry.at,
        ).on_conflict_do_nothing().returning(erasures.c.erasure_id))
        if recorded.first() is not None:
            done.erasures_recorded += 1
            changed = True
    return changed
