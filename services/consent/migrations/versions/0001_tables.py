"""The consent ledger, data keys, roster, retention policies and expiries, and erasures.

Frozen DDL: the tables as they stood at revision 1, spelled out, each under the tenant policy
that declares itself per trust; the kernel's tables come from the kernel's first revision
(shared/store/kernel_migrations), which this one builds on. A later change to a table comes as a
new revision, never as an edit here (tests/integration/schema checks tables.py agrees).

Revision ID: consent_0001
Revises: kernel_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "consent_0001"
down_revision = "kernel_0001"
branch_labels = None
depends_on = None

SCHEMA = "consent"


def upgrade() -> None:
    # Each table declares its tenancy as tables.py does; the tenant policy follows from that.
    created = [
        op.create_table(
            "data_keys",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("kek_id", sa.Text, nullable=True),
            sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("pupil_id", name="data_keys_pkey"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "pupils",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("enrolled_on", sa.Date, nullable=True),
            sa.Column("left_on", sa.Date, nullable=True),
            sa.Column("last_activity_on", sa.Date, nullable=True),
            sa.Column("case_closed_on", sa.Date, nullable=True),
            sa.Column("date_of_birth_sealed", sa.Text, nullable=True),
            sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("pupil_id"),
            sa.Index("pupils_tenant_idx", "trust_id", "academy_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "consent_records",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("purpose", sa.Text, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("consent_id", sa.Uuid, nullable=True),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("covers", sa.ARRAY(sa.Text), nullable=False),
            sa.Column("latest_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("basis_id", sa.Uuid, nullable=True),
            sa.Column("basis", sa.Text, nullable=True),
            sa.Column("basis_decided_by", sa.Text, nullable=True),
            sa.Column("basis_policy_reference", sa.Text, nullable=True),
            sa.Column("basis_decided_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("basis_valid_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("basis_covers", sa.ARRAY(sa.Text), nullable=True),
            sa.PrimaryKeyConstraint("pupil_id", "purpose", name="consent_records_pkey"),
            sa.Index("consent_records_tenant_idx", "trust_id", "academy_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "consent_decisions",
            sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),
            sa.Column("decision_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("purpose", sa.Text, nullable=False),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("consent_id", sa.Uuid, nullable=True),
            sa.Column("record_version", sa.Integer, nullable=False),
            sa.Column("method", sa.Text, nullable=True),
            sa.Column("given_by_sealed", sa.Text, nullable=True),
            sa.Column("evidence_sealed", sa.Text, nullable=True),
            sa.Column("reason_sealed", sa.Text, nullable=True),
            sa.Column("lawful_basis", sa.Text, nullable=False),
            sa.Column("policy_reference", sa.Text, nullable=True),
            sa.Column("covers", sa.ARRAY(sa.Text), nullable=False),
            sa.Column("recorded_by", sa.Text, nullable=False),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("decision_id"),
            sa.UniqueConstraint("seq", name="consent_decisions_seq_key"),
            sa.Index("consent_decisions_pupil_idx", "pupil_id", "seq"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "retention_policies",
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("data_category", sa.Text, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("policy_id", sa.Uuid, nullable=False),
            sa.Column("counted_from", sa.Text, nullable=False),
            sa.Column("period_years", sa.Integer, nullable=False),
            sa.Column("period_months", sa.Integer, nullable=False),
            sa.Column("period_days", sa.Integer, nullable=False),
            sa.Column("set_by", sa.Text, nullable=False),
            sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("academy_id", "data_category", name="retention_policies_pkey"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "retention_expiries",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("data_category", sa.Text, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("policy_id", sa.Uuid, nullable=False),
            sa.Column("due_on", sa.Date, nullable=False),
            sa.Column("event_id", sa.Uuid, nullable=False),
            sa.Column("expired_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("pupil_id", "data_category", name="retention_expiries_pkey"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "erasures",
            sa.Column("erasure_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("requested_by", sa.Text, nullable=False),
            sa.Column("key_destroyed", sa.Boolean, nullable=False),
            sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("erasure_id"),
            sa.UniqueConstraint("pupil_id", name="erasures_pupil_key"),
            schema=SCHEMA,
            info=per_trust(),
        ),
    ]
    apply_tenancy(created)


def downgrade() -> None:
    for name in ("erasures", "retention_expiries", "retention_policies", "consent_decisions",
                 "consent_records", "pupils", "data_keys"):
        op.drop_table(name, schema=SCHEMA)
