"""Opt-out of the online tool (issue 15): a DPO's lawful reason to keep what was held on the child.

Frozen DDL, under the tenant policy (tables.py declares it per trust).

Revision ID: consent_0004_optout
Revises: consent_notice_0004
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "consent_0004_optout"
down_revision = "consent_notice_0004"
branch_labels = None
depends_on = None

SCHEMA = "consent"


def upgrade() -> None:
    created = op.create_table(
        "opt_out_retention",
        sa.Column("consent_id", sa.Uuid, nullable=False),
        sa.Column("pupil_id", sa.Uuid, nullable=False),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("retention_basis", sa.Text, nullable=False),
        sa.Column("explanation_sealed", sa.Text, nullable=True),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consent_id", name="opt_out_retention_pkey"),
        sa.Index("opt_out_retention_pupil_idx", "pupil_id"),
        schema=SCHEMA,
        info=per_trust(),
    )
    apply_tenancy([created])


def downgrade() -> None:
    op.drop_table("opt_out_retention", schema=SCHEMA)
