"""The kernel's event store, outbox, inbox and idempotency keys; framework cache, pupils, strand
scores, participation consent, erasures, plans, sessions and session notes.

Revision ID: planning_0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from shared.store.migrations import create_kernel_tables, drop_kernel_tables

revision = "planning_0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = ("frameworks", "pupils", "strand_scores", "participation", "erased_pupils", "plans", "sessions",
           "session_notes")


def upgrade() -> None:
    create_kernel_tables("planning")
    # The planning tables as they stand at this revision; a later change comes as a new revision.
    from services.planning.tables import metadata

    bind = op.get_bind()
    for name in _TABLES:
        metadata.tables[f"planning.{name}"].create(bind)


def downgrade() -> None:
    for name in reversed(_TABLES):
        op.drop_table(name, schema="planning")
    drop_kernel_tables("planning")
