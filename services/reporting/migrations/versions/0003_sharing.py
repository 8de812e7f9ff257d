"""Sharing with agencies: recipients, shares, the webhook deliveries outbox and its log.

Revision ID: reporting_0003_sharing
Revises: reporting_0001
Create Date: 2026-12-01
"""

from alembic import op

from services.reporting.sharing.tables import metadata

revision = "reporting_0003_sharing"
down_revision = "reporting_0001"
branch_labels = ("sharing",)
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
