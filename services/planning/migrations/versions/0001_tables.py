"""Framework cache, pupils, strand scores, participation consent, erasures, plans, sessions and
session notes.

Frozen DDL: the tables as they stood at revision 1, spelled out, each under the tenant policy
that declares itself per trust; the kernel's tables come from the kernel's first revision
(shared/store/kernel_migrations), which this one builds on. A later change to a table comes as a
new revision, never as an edit here (tests/integration/schema checks tables.py agrees).

Revision ID: planning_0001
Revises: kernel_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "planning_0001"
down_revision = "kernel_0001"
branch_labels = None
depends_on = None

SCHEMA = "planning"


def upgrade() -> None:
    # Each table declares its tenancy as tables.py does; the tenant policy follows from that.
    created = [
        op.create_table(
            "frameworks",
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("version", sa.Text, nullable=False),
            sa.Column("document", JSONB, nullable=False),
            sa.Column("fetched_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("trust_id", "version", name="frameworks_pkey"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "pupils",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("class_id", sa.Uuid, nullable=True),
            sa.PrimaryKeyConstraint("pupil_id"),
            sa.Index("pupils_class", "trust_id", "class_id"),
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
            sa.Column("threshold_percent", sa.Float, nullable=False),
            sa.Column("threshold_met", sa.Boolean, nullable=False),
            sa.Column("working_at_strand", sa.Text, nullable=False),
            sa.Column("focus_statements", JSONB, nullable=False),
            sa.Column("baseline", sa.Boolean, nullable=False),
            sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                      nullable=False),
            sa.PrimaryKeyConstraint("assessment_id", "strand", name="strand_scores_pkey"),
            sa.Index("strand_scores_pupil", "pupil_id", "scored_at"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "participation",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("withdrawn", sa.Boolean, nullable=False),
            sa.Column("record_version", sa.Integer, nullable=False),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "erased_pupils",
            sa.Column("pupil_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("erased_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "plans",
            sa.Column("plan_id", sa.Uuid, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("pupil_ids", sa.ARRAY(sa.Uuid), nullable=False),
            sa.Column("class_id", sa.Uuid, nullable=True),
            sa.Column("strand", sa.Text, nullable=False),
            sa.Column("framework_version", sa.Text, nullable=False),
            sa.Column("targets", JSONB, nullable=False),
            sa.Column("activities", JSONB, nullable=False),
            sa.Column("sessions_per_week", sa.Integer, nullable=False),
            sa.Column("session_minutes", sa.Integer, nullable=False),
            sa.Column("setting", sa.Text, nullable=False),
            sa.Column("review_on", sa.Date, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("practitioner_id", sa.Text, nullable=True),
            sa.Column("created_by", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("percents_at_issue", JSONB, nullable=True),
            sa.Column("review", JSONB, nullable=True),
            sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("plan_id", "version", name="plans_pkey"),
            sa.Index("plans_pupils", "pupil_ids", postgresql_using="gin"),
            sa.Index("plans_tenant", "trust_id", "academy_id", "created_at"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "sessions",
            sa.Column("session_id", sa.Uuid, nullable=False),
            sa.Column("plan_id", sa.Uuid, nullable=False),
            sa.Column("plan_version", sa.Integer, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("held_on", sa.Date, nullable=False),
            sa.Column("minutes", sa.Integer, nullable=False),
            sa.Column("pupil_ids", sa.ARRAY(sa.Uuid), nullable=False),
            sa.Column("staff_ids", JSONB, nullable=False),
            sa.Column("activities_done", JSONB, nullable=False),
            sa.Column("logged_by", sa.Text, nullable=False),
            sa.Column("logged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
            sa.PrimaryKeyConstraint("session_id"),
            sa.Index("sessions_plan", "plan_id", "held_on"),
            sa.Index("sessions_pupils", "pupil_ids", postgresql_using="gin"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "session_notes",
            sa.Column("session_id", sa.Uuid, nullable=False),
            sa.Column("trust_id", sa.Uuid, nullable=False),
            sa.Column("academy_id", sa.Uuid, nullable=False),
            sa.Column("note", sa.Text, nullable=False),
            sa.PrimaryKeyConstraint("session_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
    ]
    apply_tenancy(created)


def downgrade() -> None:
    for name in ("session_notes", "sessions", "plans", "erased_pupils", "participation", "strand_scores",
                 "pupils", "frameworks"):
        op.drop_table(name, schema=SCHEMA)
