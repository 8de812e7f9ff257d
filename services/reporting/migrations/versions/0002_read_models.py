"""The read models (services/reporting/readmodels/tables.py): pupils' profiles and progress,
plans and sessions, from which the dashboards and the intervention report are read.

Frozen DDL: the tables as they stood at this revision, spelled out, each under the tenant policy
(every one is a trust's rows); a later change comes as a new revision, never as an edit here
(tests/integration/schema checks the tables' declarations agree).

Revision ID: reporting_0002_read_models
Revises: reporting_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "reporting_0002_read_models"
down_revision = "reporting_0001"
branch_labels = ("read_models",)
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    # Each table declares its tenancy as tables.py does; the tenant policy follows from that.
    created = [
        op.create_table(
            "rm_pupils",
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("enrolled_on", sa.Date, nullable=True),
            sa.Column("left_on", sa.Date, nullable=True),
            sa.Column("framework_version", sa.String, nullable=True),
            sa.Column("working_at_strand", sa.String, nullable=True),
            sa.Column("expected_strand", sa.String, nullable=True),
            sa.Column("baseline_assessment_id", sa.UUID, nullable=True),
            sa.Column("latest_assessment_id", sa.UUID, nullable=True),
            sa.Column("latest_completed_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_assessments",
            sa.Column("assessment_id", sa.UUID, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("framework_version", sa.String, nullable=False),
            sa.Column("strands", JSONB, nullable=False),
            sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("baseline", sa.Boolean, nullable=False),
            sa.Column("working_at_strand", sa.String, nullable=False),
            sa.PrimaryKeyConstraint("assessment_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_strand_scores",
            sa.Column("assessment_id", sa.UUID, nullable=False),
            sa.Column("strand", sa.String, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("framework_version", sa.String, nullable=False),
            sa.Column("need_percents", JSONB, nullable=False),
            sa.Column("strand_percent", sa.Float, nullable=False),
            sa.Column("threshold_percent", sa.Float, nullable=False),
            sa.Column("threshold_met", sa.Boolean, nullable=False),
            sa.Column("working_at_strand", sa.String, nullable=False),
            sa.Column("focus_statements", JSONB, nullable=False),
            sa.Column("baseline", sa.Boolean, nullable=False),
            sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("assessment_id", "strand"),
            sa.Index("ix_reporting_rm_strand_scores_pupil_id", "pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_observations",
            sa.Column("observation_id", sa.UUID, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("assessment_id", sa.UUID, nullable=True),
            sa.Column("framework_version", sa.String, nullable=False),
            sa.Column("statement_id", sa.String, nullable=False),
            sa.Column("level", sa.String, nullable=False),
            sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("corrects", sa.UUID, nullable=True),
            sa.PrimaryKeyConstraint("observation_id"),
            sa.Index("ix_reporting_rm_observations_pupil_id", "pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_plans",
            sa.Column("plan_id", sa.UUID, nullable=False),
            sa.Column("plan_version", sa.Integer, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("kind", sa.String, nullable=False),
            sa.Column("strand", sa.String, nullable=False),
            sa.Column("targets", JSONB, nullable=False),
            sa.Column("activities", JSONB, nullable=False),
            sa.Column("frequency", sa.String, nullable=False),
            sa.Column("sessions_per_week", sa.Integer, nullable=True),
            sa.Column("session_minutes", sa.Integer, nullable=True),
            sa.Column("practitioner_id", sa.String, nullable=False),
            sa.Column("review_on", sa.Date, nullable=False),
            sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("supersedes_version", sa.Integer, nullable=True),
            sa.PrimaryKeyConstraint("plan_id", "plan_version"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_plan_pupils",
            sa.Column("plan_id", sa.UUID, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.PrimaryKeyConstraint("plan_id", "pupil_id"),
            sa.Index("ix_reporting_rm_plan_pupils_pupil_id", "pupil_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_plan_reviews",
            sa.Column("event_id", sa.UUID, nullable=False),
            sa.Column("plan_id", sa.UUID, nullable=False),
            sa.Column("plan_version", sa.Integer, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=True),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("strand_percent_now", sa.Float, nullable=True),
            sa.Column("change_since_previous_plan", sa.Float, nullable=True),
            sa.Column("change_since_baseline", sa.Float, nullable=True),
            sa.Column("need_percents_now", JSONB, nullable=False),
            sa.Column("assessment_id", sa.UUID, nullable=True),
            sa.PrimaryKeyConstraint("event_id"),
            sa.Index("ix_reporting_rm_plan_reviews_plan_id", "plan_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_plan_closures",
            sa.Column("plan_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("plan_version", sa.Integer, nullable=False),
            sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("plan_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "rm_sessions",
            sa.Column("event_id", sa.UUID, nullable=False),
            sa.Column("session_id", sa.UUID, nullable=False),
            sa.Column("plan_id", sa.UUID, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=True),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("held_on", sa.Date, nullable=False),
            sa.Column("minutes", sa.Integer, nullable=False),
            sa.PrimaryKeyConstraint("event_id"),
            sa.Index("ix_reporting_rm_sessions_plan_id", "plan_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
    ]
    apply_tenancy(created)


def downgrade() -> None:
    for name in ("rm_sessions", "rm_plan_closures", "rm_plan_reviews", "rm_plan_pupils", "rm_plans",
                 "rm_observations", "rm_strand_scores", "rm_assessments", "rm_pupils"):
        op.drop_table(name, schema=SCHEMA)
