"""The kernel's event store, outbox, inbox and idempotency keys; the consent ledger, data keys,
roster, retention policies and expiries, and erasures.

Revision ID: consent_0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from shared.store.migrations import create_kernel_tables, drop_kernel_tables

revision = "consent_0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = ("data_keys", "pupils", "consent_records", "consent_decisions", "retention_policies",
           "retention_expiries", "erasures")


def upgrade() -> None:
    create_kernel_tables("consent")
    # The consent tables as they stand at this revision; a later change comes as a new revision.
    from services.consent.tables import metadata

    bind = op.get_bind()
    for name in _TABLES:
        metadata.tables[f"consent.{name}"].create(bind)


def downgrade() -> None:
    for name in reversed(_TABLES):
        op.drop_table(name, schema="consent")
    drop_kernel_tables("consent")
