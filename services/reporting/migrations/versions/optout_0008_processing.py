"""Opt-out of the online tool (issue 15): which children reporting leaves out.

Frozen DDL, under the tenant policy (tables.py declares it per trust).

Revision ID: reporting_0006_optout
Revises: reporting_0006_erasure_register
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "reporting_0006_optout"
down_revision = "reporting_0006_erasure_register"
branch_labels = None
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    created = op.create_table(
        "processing_opt_outs",
        sa.Column("pupil_id", sa.Uuid, nullable=False),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("opted_out", sa.Boolean, nullable=False),
        sa.Column("record_version", sa.Integer, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pupil_id", name="processing_opt_outs_pkey"),
        schema=SCHEMA,
        info=per_trust(),
    )
    apply_tenancy([created])


def downgrade() -> None:
    op.drop_table("processing_opt_outs", schema=SCHEMA)
