"""The kernel's event store, outbox and inbox.

Revision ID: reporting_0001
Revises:
Create Date: 2026-11-26
"""

from shared.store.migrations import create_kernel_tables, drop_kernel_tables

revision = "reporting_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables("reporting")


def downgrade() -> None:
    drop_kernel_tables("reporting")
