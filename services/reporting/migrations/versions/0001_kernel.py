"""The kernel's event store, outbox and inbox; the audit ledger.

Revision ID: reporting_0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from services.reporting.audit.tables import create_statements, drop_statements
from shared.store.migrations import create_kernel_tables, drop_kernel_tables

revision = "reporting_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables("reporting")
    # The audit ledger (services/reporting/audit/tables.py): append-only for every role.
    for statement in create_statements("reporting"):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_statements("reporting"):
        op.execute(statement)
    drop_kernel_tables("reporting")
