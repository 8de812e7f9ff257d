"""Erasure reaches reporting (issue 15, item 2): the erasure register (tombstones: which pupil, which
data category, which erasure, when), and deletion notices that no longer name the pupil in a column
(`sharing_deliveries.pupil_id` may be NULL: a notice about an erased pupil names them only in its
payload, which is dropped once the agency has it).

Frozen DDL, under the tenant policy (tests/integration/schema checks the declarations agree).

Revision ID: reporting_0006_erasure_register
Revises: reporting_notice_0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "reporting_0006_erasure_register"
down_revision = "reporting_notice_0006"
branch_labels = None
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    created = [
        op.create_table(
            "erasure_register",
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("data_category", sa.String(length=40), nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("erasure_id", sa.UUID, nullable=False),
            sa.Column("reason", sa.String(length=40), nullable=False),
            sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("pupil_id", "data_category"),
            schema=SCHEMA,
            info=per_trust(),
        ),
    ]
    apply_tenancy(created)
    op.alter_column("sharing_deliveries", "pupil_id", existing_type=sa.UUID, nullable=True, schema=SCHEMA)


def downgrade() -> None:
    op.execute(f'DELETE FROM "{SCHEMA}".sharing_attempts WHERE delivery_id IN '
               f'(SELECT delivery_id FROM "{SCHEMA}".sharing_deliveries WHERE pupil_id IS NULL)')
    op.execute(f'DELETE FROM "{SCHEMA}".sharing_deliveries WHERE pupil_id IS NULL')
    op.alter_column("sharing_deliveries", "pupil_id", existing_type=sa.UUID, nullable=False, schema=SCHEMA)
    op.drop_table("erasure_register", schema=SCHEMA)
