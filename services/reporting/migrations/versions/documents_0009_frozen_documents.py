"""Documents the platform makes (issue 16): a share's frozen document, sealed with the pupil's
key until delivered or erased, its SHA-256, and the SHA-256 of the body each delivery attempt sent.

Frozen DDL: new columns on tables already under the tenant policy.

Revision ID: reporting_documents_0009
Revises: reporting_0006_optout
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "reporting_documents_0009"
down_revision = "reporting_0006_optout"
branch_labels = None
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    op.add_column("sharing_shares", sa.Column("document_sealed", sa.Text), schema=SCHEMA)
    op.add_column("sharing_shares", sa.Column("document_sha256", sa.String(64)), schema=SCHEMA)
    op.add_column("sharing_attempts", sa.Column("body_sha256", sa.String(64)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("sharing_attempts", "body_sha256", schema=SCHEMA)
    op.drop_column("sharing_shares", "document_sha256", schema=SCHEMA)
    op.drop_column("sharing_shares", "document_sealed", schema=SCHEMA)
