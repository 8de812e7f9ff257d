"""Agencies have a lifecycle (issue 16 item 2): the endpoint's verification, the secret being
rotated (the previous one still signs until `previous_secret_until`), and the deactivation.

Agencies registered before this revision keep delivering: they are taken as verified when they
were registered.

Revision ID: reporting_agency_0010
Revises: reporting_documents_0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "reporting_agency_0010"
down_revision = "reporting_documents_0009"
branch_labels = None
depends_on = None

SCHEMA = "reporting"
TABLE = "sharing_agencies"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("previous_secret_wrapped", sa.LargeBinary, nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("previous_kek_id", sa.String(length=100), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.execute(f"UPDATE {SCHEMA}.{TABLE} SET verified_at = registered_at WHERE verified_at IS NULL")


def downgrade() -> None:
    for column in ("deactivated_at", "previous_secret_until", "previous_kek_id", "previous_secret_wrapped", "verified_at"):
        op.drop_column(TABLE, column, schema=SCHEMA)
