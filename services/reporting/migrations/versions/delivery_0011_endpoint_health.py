"""Delivery like a webhook provider (issue 16, item 3): an agency's endpoint is disabled on
`410 Gone` or after failing every try for five days; the row says when it started failing, when
it was disabled and why.

Frozen DDL: new columns on a table already under the tenant policy (0004).

Revision ID: reporting_delivery_0011
Revises: reporting_agency_0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "reporting_delivery_0011"
down_revision = "reporting_agency_0010"
branch_labels = None
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    op.add_column("sharing_agencies", sa.Column("failing_since", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("sharing_agencies", sa.Column("disabled_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("sharing_agencies", sa.Column("disabled_reason", sa.String(40)), schema=SCHEMA)
    # When the agency was told to delete a share's data because the consent it rested on expired.
    op.add_column("sharing_shares", sa.Column("expiry_notified_at", sa.DateTime(timezone=True)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("sharing_shares", "expiry_notified_at", schema=SCHEMA)
    for column in ("disabled_reason", "disabled_at", "failing_since"):
        op.drop_column("sharing_agencies", column, schema=SCHEMA)
