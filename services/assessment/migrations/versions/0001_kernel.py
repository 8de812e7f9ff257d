"""The kernel's event store, outbox, inbox and idempotency keys; the framework, roster, personal
data and read-model tables of the assessment service.

Built from tables.py as it stands at revision 1 (nothing had shipped before it); every later
change to a table comes as a new revision with explicit operations, never as an edit here.

Revision ID: assessment_0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import create_kernel_tables, drop_kernel_tables

revision = "assessment_0001"
down_revision = None
branch_labels = None
depends_on = None


def _service_tables():  # type: ignore[no-untyped-def]
    from services.assessment import tables

    return [
        tables.frameworks, tables.trusts, tables.academies, tables.classes, tables.groups, tables.group_members,
        tables.pupils, tables.observations, tables.screenings, tables.assessments, tables.strand_scores,
        tables.observation_notes,
    ]


def upgrade() -> None:
    create_kernel_tables("assessment")
    from services.assessment.tables import metadata

    metadata.create_all(op.get_bind(), tables=_service_tables())
    # pupil_personal_data as it was at revision 1 (plaintext; revision 2 seals it). Spelled out
    # here because tables.py has moved on.
    op.create_table(
        "pupil_personal_data",
        sa.Column("pupil_id", sa.Uuid, primary_key=True),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("upn", sa.Text, nullable=False),
        sa.Column("legal_surname", sa.Text, nullable=False),
        sa.Column("legal_forename", sa.Text, nullable=False),
        sa.Column("preferred_surname", sa.Text),
        sa.Column("preferred_forename", sa.Text),
        sa.Column("date_of_birth", sa.Date, nullable=False),
        sa.Column("gender", sa.Text, nullable=False),
        sa.Column("year_group", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("academy_id", "upn", name="pupil_personal_data_upn_key"),
        schema="assessment",
    )


def downgrade() -> None:
    from services.assessment.tables import metadata

    op.drop_table("pupil_personal_data", schema="assessment")
    metadata.drop_all(op.get_bind(), tables=_service_tables())
    drop_kernel_tables("assessment")
