"""Session notes are sealed: `sealed_note` (the note under every present child's data key, in
layers, in `sealed_for`'s order) replaces the clear `note`, which stays only for notes written
before this revision until the service seals them at start (services/planning/notes.py,
seal_clear_notes). A row holds one or the other, never both.

Revision ID: seal_0004_sealed_session_notes
Revises: planning_0003_idempotency_rls
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "seal_0004_sealed_session_notes"
down_revision = "planning_0003_idempotency_rls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("session_notes", sa.Column("sealed_note", sa.Text(), nullable=True), schema="planning")
    op.add_column("session_notes", sa.Column("sealed_for", postgresql.ARRAY(sa.Uuid()), nullable=True), schema="planning")
    op.alter_column("session_notes", "note", nullable=True, schema="planning")
    op.create_check_constraint(
        "session_notes_sealed_or_legacy", "session_notes",
        "(note IS NULL) <> (sealed_note IS NULL) AND (sealed_note IS NULL) = (sealed_for IS NULL)",
        schema="planning",
    )


def downgrade() -> None:
    # Sealed notes cannot go back to clear text without the keys: refuse rather than lose them.
    op.execute("DO $$ BEGIN IF EXISTS (SELECT FROM planning.session_notes WHERE note IS NULL) THEN "
               "RAISE EXCEPTION 'sealed session notes cannot be downgraded to clear text'; END IF; END $$")
    op.drop_constraint("session_notes_sealed_or_legacy", "session_notes", schema="planning")
    op.alter_column("session_notes", "note", nullable=False, schema="planning")
    op.drop_column("session_notes", "sealed_for", schema="planning")
    op.drop_column("session_notes", "sealed_note", schema="planning")
