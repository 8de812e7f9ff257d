"""Personal data sealed with each pupil's data key (issue 5): pupil_personal_data's fields become
ciphertext ("fl1.…" text), UPNs are matched through a keyed blind index (upn_index) instead of by
value; erasure tombstones (erased_pupils) and the retention-clock outbox.

A database holding plaintext rows from revision 1 is refused rather than converted: sealing needs
the consent service's keys (not reachable from a migration), and nothing had shipped before this
revision, so the only such databases are developers' local ones. Drop the local database (or the
`assessment` schema) and start again; the demo trust reloads itself.

Revision ID: assessment_0002
Revises: assessment_0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "assessment_0002"
down_revision = "assessment_0001"
branch_labels = None
depends_on = None

SCHEMA = "assessment"
SEALED = ("upn", "legal_surname", "legal_forename", "preferred_surname", "preferred_forename",
          "date_of_birth", "gender", "year_group")


def upgrade() -> None:
    bind = op.get_bind()
    plaintext = bind.execute(sa.text("SELECT count(*) FROM assessment.pupil_personal_data")).scalar()
    notes = bind.execute(sa.text("SELECT count(*) FROM assessment.observation_notes")).scalar()
    if plaintext or notes:
        raise RuntimeError(
            "assessment.pupil_personal_data / observation_notes hold plaintext rows from before per-pupil "
            "encryption (issue 5); this development database cannot be sealed by a migration: drop it "
            "(or the assessment schema) and start again"
        )
    op.drop_constraint("pupil_personal_data_upn_key", "pupil_personal_data", schema=SCHEMA)
    op.alter_column("pupil_personal_data", "date_of_birth", type_=sa.Text, schema=SCHEMA,
                    postgresql_using="date_of_birth::text")
    for name in ("preferred_surname", "preferred_forename"):
        op.alter_column("pupil_personal_data", name, nullable=False, schema=SCHEMA)
    op.add_column("pupil_personal_data", sa.Column("upn_index", sa.Text, nullable=False), schema=SCHEMA)
    op.create_unique_constraint("pupil_personal_data_upn_index_key", "pupil_personal_data",
                                ["academy_id", "upn_index"], schema=SCHEMA)
    erased_pupils = op.create_table(
        "erased_pupils",
        sa.Column("pupil_id", sa.Uuid, primary_key=True),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("erasure_event_id", sa.Uuid, nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
        info=per_trust(),
    )
    retention_clock_outbox = op.create_table(
        "retention_clock_outbox",
        sa.Column("pupil_id", sa.Uuid, primary_key=True),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_error", sa.Text),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
        info=per_trust(),
    )
    op.create_index("retention_clock_outbox_due_idx", "retention_clock_outbox", ["next_attempt_at"], schema=SCHEMA)
    apply_tenancy([erased_pupils, retention_clock_outbox])


def downgrade() -> None:
    # Sealed values cannot become plaintext again without every pupil's key: the rows go.
    op.drop_table("retention_clock_outbox", schema=SCHEMA)
    op.drop_table("erased_pupils", schema=SCHEMA)
    op.execute("DELETE FROM assessment.observation_notes")
    op.execute("DELETE FROM assessment.pupil_personal_data")
    op.drop_constraint("pupil_personal_data_upn_index_key", "pupil_personal_data", schema=SCHEMA)
    op.drop_column("pupil_personal_data", "upn_index", schema=SCHEMA)
    for name in ("preferred_surname", "preferred_forename"):
        op.alter_column("pupil_personal_data", name, nullable=True, schema=SCHEMA)
    op.alter_column("pupil_personal_data", "date_of_birth", type_=sa.Date, schema=SCHEMA,
                    postgresql_using="date_of_birth::date")
    op.create_unique_constraint("pupil_personal_data_upn_key", "pupil_personal_data", ["academy_id", "upn"],
                                schema=SCHEMA)
