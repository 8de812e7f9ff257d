"""The kernel's event store, outbox, inbox and idempotency keys; the framework, roster, personal
data and read-model tables of the assessment service.

Built from tables.py as it stands at revision 1 (nothing had shipped before it); every later
change to a table comes as a new revision with explicit operations, never as an edit here.

Revision ID: assessment_0001
Revises:
Create Date: 2026-11-26
"""

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
        tables.pupil_personal_data, tables.observation_notes,
    ]


def upgrade() -> None:
    create_kernel_tables("assessment")
    from services.assessment.tables import metadata

    metadata.create_all(op.get_bind(), tables=_service_tables())


def downgrade() -> None:
    from services.assessment.tables import metadata

    metadata.drop_all(op.get_bind(), tables=_service_tables())
    drop_kernel_tables("assessment")
