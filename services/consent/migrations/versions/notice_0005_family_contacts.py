"""The family's contact email (sealed with the pupil's data key), where they are told before a share.

Frozen DDL, under the tenant policy like every table of the service.

Revision ID: consent_notice_0004
Revises: consent_0004_keyring
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "consent_notice_0004"
down_revision = "consent_0004_keyring"
branch_labels = None
depends_on = None

SCHEMA = "consent"


def upgrade() -> None:
    created = op.create_table(
        "family_contacts",
        sa.Column("pupil_id", sa.Uuid, nullable=False),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("email_sealed", sa.Text, nullable=False),
        sa.Column("decision_id", sa.Uuid, nullable=True),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pupil_id"),
        sa.Index("family_contacts_tenant_idx", "trust_id", "academy_id"),
        schema=SCHEMA,
        info=per_trust(),
    )
    apply_tenancy([created])


def downgrade() -> None:
    op.drop_table("family_contacts", schema=SCHEMA)
