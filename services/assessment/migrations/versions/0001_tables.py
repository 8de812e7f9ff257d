"""The framework, roster, personal data and read-model tables of the assessment service, each
table under the tenant policy that declares itself per trust; the kernel's tables come from the
kernel's first revision (shared/store/kernel_migrations), which this one builds on.

Frozen DDL: the tables as they stood at revision 1 (nothing had shipped before it), spelled out;
every later change to a table comes as a new revision with explicit operations, never as an edit
here, and never through tables.py (tests/integration/schema checks the two agree).

Revision ID: assessment_0001
Revises: kernel_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "assessment_0001"
down_revision = "kernel_0001"
branch_labels = None
depends_on = None

SCHEMA = "assessment"


def upgrade() -> None:
    # Each table declares its tenancy as tables.py does; the tenant policy follows from that.
    created = [
        op.create_table(
            "frameworks",
            sa.Column("owner_trust_id", sa.Uuid, nullable=False),
            sa.Column("version", sa.Text, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("content", JSONB, nullable=False),
            sa.Column("content_hash", sa.Text, nullable=False),
            sa.Column("loaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.Column("loaded_by", sa.Text, nullable=False),
            sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("owner_trust_id", "version", name="frameworks_pkey"),
            schema=SCHEMA,
        ),
        op.create_table(
            "trusts",
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("name", sa.Text, nullable=True),
            sa.Column("registered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("trust_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "academies",
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("registered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.ForeignKeyConstraint(["trust_id"], [f"{SCHEMA}.trusts.trust_id"]),
            sa.PrimaryKeyConstraint("academy_id"),
            sa.Index("academies_trust_idx", "trust_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "classes",
            sa.Column("class_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.ForeignKeyConstraint(["academy_id"], [f"{SCHEMA}.academies.academy_id"]),
            sa.PrimaryKeyConstraint("class_id"),
            sa.UniqueConstraint("academy_id", "name", name="classes_academy_name_key"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "groups",
            sa.Column("group_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("created_by", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.ForeignKeyConstraint(["academy_id"], [f"{SCHEMA}.academies.academy_id"]),
            sa.PrimaryKeyConstraint("group_id"),
            sa.Index("groups_academy_idx", "academy_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "group_members",
            sa.Column("group_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.ForeignKeyConstraint(["group_id"], [f"{SCHEMA}.groups.group_id"]),
            sa.PrimaryKeyConstraint("group_id", "pupil_id", name="group_members_pkey"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "pupils",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("class_id", sa.Uuid, nullable=True),
            sa.Column("on_roll", sa.Boolean, nullable=False),
            sa.Column("enrolled_on", sa.Date, nullable=False),
            sa.Column("left_on", sa.Date, nullable=True),
            sa.PrimaryKeyConstraint("pupil_id"),
            sa.Index("pupils_academy_idx", "academy_id"),
            sa.Index("pupils_class_idx", "class_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "observations",
            sa.Column("observation_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("assessment_id", sa.Uuid, nullable=True),
            sa.Column("framework_version", sa.Text, nullable=False),
            sa.Column("statement_id", sa.Text, nullable=False),
            sa.Column("level", sa.Text, nullable=False),
            sa.Column("observer_id", sa.Text, nullable=False),
            sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("corrects", sa.Uuid, nullable=True),
            sa.Column("has_note", sa.Boolean, nullable=False),
            sa.PrimaryKeyConstraint("observation_id"),
            sa.Index("observations_corrects_key", "corrects", unique=True,
                     postgresql_where=sa.text("corrects IS NOT NULL")),
            sa.Index("observations_pupil_idx", "pupil_id", "observed_at"),
            sa.Index("observations_rating_key", "pupil_id", "statement_id", "observer_id", "observed_at", unique=True,
                     postgresql_where=sa.text("corrects IS NULL")),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "screenings",
            sa.Column("screening_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("class_id", sa.Uuid, nullable=True),
            sa.Column("group_id", sa.Uuid, nullable=True),
            sa.Column("framework_version", sa.Text, nullable=False),
            sa.Column("strands", sa.ARRAY(sa.Text), nullable=False),
            sa.Column("started_by", sa.Text, nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("screening_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "assessments",
            sa.Column("assessment_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("screening_id", sa.Uuid, nullable=True),
            sa.Column("framework_version", sa.Text, nullable=False),
            sa.Column("strands", sa.ARRAY(sa.Text), nullable=False),
            sa.Column("started_by", sa.Text, nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("working_at_strand", sa.Text, nullable=True),
            sa.Column("baseline", sa.Boolean, nullable=True),
            sa.PrimaryKeyConstraint("assessment_id"),
            sa.Index("assessments_pupil_idx", "pupil_id", "started_at"),
            sa.Index("assessments_screening_idx", "screening_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "strand_scores",
            sa.Column("assessment_id", sa.Uuid, nullable=False),
            sa.Column("strand", sa.Text, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("framework_version", sa.Text, nullable=False),
            sa.Column("need_percents", JSONB, nullable=False),
            sa.Column("strand_percent", sa.Float, nullable=False),
            sa.Column("threshold_met", sa.Boolean, nullable=False),
            sa.Column("working_at_strand", sa.Text, nullable=False),
            sa.Column("focus_statements", sa.ARRAY(sa.Text), nullable=False),
            sa.Column("baseline", sa.Boolean, nullable=False),
            sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("assessment_id", "strand", name="strand_scores_pkey"),
            sa.Index("strand_scores_pupil_idx", "pupil_id", "scored_at"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "observation_notes",
            sa.Column("observation_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("note", sa.Text, nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("observation_id"),
            sa.Index("observation_notes_pupil_idx", "pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        # pupil_personal_data as it was at revision 1 (plaintext; revision 2 seals it).
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
            schema=SCHEMA,
            info=per_trust(),
        ),
    ]
    apply_tenancy(created)


def downgrade() -> None:
    for name in ("pupil_personal_data", "observation_notes", "strand_scores", "assessments", "screenings",
                 "observations", "pupils", "group_members", "groups", "classes", "academies", "trusts", "frameworks"):
        op.drop_table(name, schema=SCHEMA)
