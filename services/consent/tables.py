"""The consent service's tables, all in its own PostgreSQL schema `consent`.

Every row carries its tenancy (trust, and academy where the row belongs to one). Personal data
appears only sealed with the pupil's data key (columns ending in `_sealed`): a parent's name and
relationship, evidence references, safeguarding reasons, a date of birth.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY

from shared.datakeys import data_keys_table
from shared.store.tables import kernel_tables
from shared.tenancy import per_trust

SCHEMA = "consent"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)

# The wrapped per-pupil data keys (tombstones after erasure).
data_keys = data_keys_table(metadata)
data_keys.info.update(per_trust())

# The roster as the consent service knows it (from the assessment context's events), with the
# dates retention periods are counted from.
pupils = Table(
    "pupils",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("enrolled_on", Date, nullable=True),
    Column("left_on", Date, nullable=True),
    Column("last_activity_on", Date, nullable=True),
    Column("case_closed_on", Date, nullable=True),
    Column("date_of_birth_sealed", Text, nullable=True),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("pupils_tenant_idx", "trust_id", "academy_id"),
    info=per_trust(),
)

# The current state of each pupil's record per purpose: what a sharing decision reads (one row,
# one index lookup). Kept in the same transaction as the events that change it.
consent_records = Table(
    "consent_records",
    metadata,
    Column("pupil_id", Uuid, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("consent_id", Uuid, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("valid_until", DateTime(timezone=True), nullable=True),
    Column("covers", ARRAY(Text), nullable=False),
    Column("latest_at", DateTime(timezone=True), nullable=True),
    Column("basis_id", Uuid, nullable=True),
    Column("basis", Text, nullable=True),
    Column("basis_decided_by", Text, nullable=True),
    Column("basis_policy_reference", Text, nullable=True),
    Column("basis_decided_at", DateTime(timezone=True), nullable=True),
    Column("basis_valid_until", DateTime(timezone=True), nullable=True),
    Column("basis_covers", ARRAY(Text), nullable=True),
    PrimaryKeyConstraint("pupil_id", "purpose", name="consent_records_pkey"),
    Index("consent_records_tenant_idx", "trust_id", "academy_id"),
    info=per_trust(),
)

# Every decision ever recorded (the ledger as people read it), for receipts and history.
consent_decisions = Table(
    "consent_decisions",
    metadata,
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("decision_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("pupil_id", Uuid, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("kind", Text, nullable=False),  # granted | refused | withdrawn | lawful_basis
    Column("consent_id", Uuid, nullable=True),  # for a withdrawal: the grant it withdrew
    Column("record_version", Integer, nullable=False),
    Column("method", Text, nullable=True),
    Column("given_by_sealed", Text, nullable=True),
    Column("evidence_sealed", Text, nullable=True),
    Column("reason_sealed", Text, nullable=True),
    Column("lawful_basis", Text, nullable=False),
    Column("policy_reference", Text, nullable=True),
    Column("covers", ARRAY(Text), nullable=False),
    Column("recorded_by", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("valid_until", DateTime(timezone=True), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("seq", name="consent_decisions_seq_key"),
    Index("consent_decisions_pupil_idx", "pupil_id", "seq"),
    info=per_trust(),
)

# Each academy's retention policy per data category (the defaults apply where none is set).
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("academy_id", Uuid, nullable=False),
    Column("data_category", Text, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("policy_id", Uuid, nullable=False),
    Column("counted_from", Text, nullable=False),
    Column("period_years", Integer, nullable=False),
    Column("period_months", Integer, nullable=False),
    Column("period_days", Integer, nullable=False),
    Column("set_by", Text, nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("academy_id", "data_category", name="retention_policies_pkey"),
    info=per_trust(),
)

# One row per pupil and category whose retention period ended: written in the same transaction
# as the RetentionExpired event, so the event exists exactly once whatever crashes or restarts.
retention_expiries = Table(
    "retention_expiries",
    metadata,
    Column("pupil_id", Uuid, nullable=False),
    Column("data_category", Text, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("policy_id", Uuid, nullable=False),
    Column("due_on", Date, nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("expired_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("pupil_id", "data_category", name="retention_expiries_pkey"),
    info=per_trust(),
)

# The non-personal record that a pupil was erased: what, when, why, by whom, key destroyed.
erasures = Table(
    "erasures",
    metadata,
    Column("erasure_id", Uuid, primary_key=True),
    Column("pupil_id", Uuid, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("key_destroyed", Boolean, nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("pupil_id", name="erasures_pupil_key"),
    info=per_trust(),
)

# The restore check (services/consent/restore.py): per partition of the consent topic, the offset up
# to which every erasure published there was found tombstoned here. No trust: one row per partition.
erasure_register_checks = Table(
    "erasure_register_checks",
    metadata,
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("topic", "partition", name="erasure_register_checks_pkey"),
)

# The parent's or carer's contact email, one per pupil, sealed with the pupil's data key: where the
# family is told before a share (the reporting service's notices ask for it, sealed, when they send).
# Recorded with a consent decision or set on its own; deleted on erasure. Never logged.
family_contacts = Table(
    "family_contacts",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("email_sealed", Text, nullable=False),
    Column("decision_id", Uuid, nullable=True),  # the consent decision that recorded it, if one did
    Column("recorded_by", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("family_contacts_tenant_idx", "trust_id", "academy_id"),
    info=per_trust(),
)

# A DPO's lawful reason to keep what was held on a child whose family opted out of processing by
# the online tool (issue 15): one per opt-out decision; the scheduler leaves that data alone. The
# explanation is sealed with the pupil's key (it may name people).
opt_out_retention = Table(
    "opt_out_retention",
    metadata,
    Column("consent_id", Uuid, primary_key=True),  # the opt-out decision (refusal or withdrawal)
    Column("pupil_id", Uuid, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("retention_basis", Text, nullable=False),
    Column("explanation_sealed", Text, nullable=True),
    Column("decided_by", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Index("opt_out_retention_pupil_idx", "pupil_id"),
    info=per_trust(),
)
