"""The family's notice of each share (services/reporting/sharing/notices.py), queued in the share's
own transaction and sent by email (or printed as a letter).

Frozen DDL, under the tenant policy like every sharing table.

Revision ID: reporting_notice_0006
Revises: reporting_0005_idempotency_rls
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "reporting_notice_0006"
down_revision = "reporting_0005_idempotency_rls"
branch_labels = None
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    created = op.create_table(
        "sharing_family_notices",
        sa.Column("notice_id", sa.UUID, nullable=False),
        sa.Column("trust_id", sa.UUID, nullable=False),
        sa.Column("academy_id", sa.UUID, nullable=False),
        sa.Column("pupil_id", sa.UUID, nullable=False),
        sa.Column("share_id", sa.UUID, nullable=False),
        sa.Column("agency_id", sa.UUID, nullable=False),
        sa.Column("agency_organisation", sa.String(length=200), nullable=False),
        sa.Column("agency_category", sa.String(length=40), nullable=False),
        sa.Column("document_kind", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=60), nullable=False),
        sa.Column("lawful_basis", sa.String(length=40), nullable=True),
        sa.Column("consent_obtained", sa.Boolean, nullable=False),
        sa.Column("policy_reference", sa.String(length=200), nullable=True),
        sa.Column("shared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withheld_reason", sa.String(length=64), nullable=True),
        sa.Column("withheld_reason_sealed", sa.Text, nullable=True),
        sa.Column("withheld_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("notice_id"),
        sa.UniqueConstraint("share_id"),
        sa.Index("sharing_family_notices_due", "next_attempt_at", postgresql_where=sa.text("status = 'queued'")),
        schema=SCHEMA,
        info=per_trust(),
    )
    apply_tenancy([created])


def downgrade() -> None:
    op.drop_table("sharing_family_notices", schema=SCHEMA)
