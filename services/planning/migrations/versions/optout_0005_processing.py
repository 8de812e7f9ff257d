"""Opt-out of the online tool (issue 15): where each child stands on processing by the online tool.

Frozen DDL, under the tenant policy (tables.py declares it per trust).

Revision ID: planning_0004_optout
Revises: seal_0004_sealed_session_notes
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "planning_0004_optout"
down_revision = "seal_0004_sealed_session_notes"
branch_labels = None
depends_on = None

SCHEMA = "planning"


def upgrade() -> None:
    created = op.create_table(
        "processing_opt_outs",
        sa.Column("pupil_id", sa.Uuid, nullable=False),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("opted_out", sa.Boolean, nullable=False),
        sa.Column("record_version", sa.Integer, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purged_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pupil_id", name="processing_opt_outs_pkey"),
        schema=SCHEMA,
        info=per_trust(),
    )
    apply_tenancy([created])


def downgrade() -> None:
    op.drop_table("processing_opt_outs", schema=SCHEMA)
