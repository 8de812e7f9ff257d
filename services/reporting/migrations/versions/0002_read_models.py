"""The read models (services/reporting/readmodels/tables.py): pupils' profiles and progress,
plans and sessions, from which the dashboards and the intervention report are read.

Revision ID: reporting_0002_read_models
Revises: reporting_0001
Create Date: 2026-12-01
"""

from alembic import op

from services.reporting.readmodels.tables import tables

revision = "reporting_0002_read_models"
down_revision = "reporting_0001"
branch_labels = ("read_models",)
depends_on = None


def upgrade() -> None:
    tables().metadata.create_all(op.get_bind())


def downgrade() -> None:
    tables().metadata.drop_all(op.get_bind())
