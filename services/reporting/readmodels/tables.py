"""The read models' tables (schema `reporting`, prefix `rm_`).

Every row is keyed by a natural key of the events (or by the event id where there is none), so
applying an event twice changes nothing and the tables are independent of delivery order except
for `rm_pupils`, whose upserts keep the latest assessment by its completion time. Counts, minutes
and dashboards are computed from these rows when read, never kept as counters. `tables(suffix)`
gives the same tables under another name: a rebuild fills the `_shadow` set and swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Boolean, Column, Date, DateTime, Float, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import JSONB, UUID

from shared.tenancy import per_trust

SCHEMA = "reporting"
NAMES = (
    "rm_pupils", "rm_assessments", "rm_strand_scores", "rm_observations",
    "rm_plans", "rm_plan_pupils", "rm_plan_reviews", "rm_plan_closures", "rm_sessions",
)
SHADOW = "_shadow"


@dataclass(frozen=True)
class ReadModelTables:
    metadata: MetaData
    pupils: Table
    assessments: Table
    strand_scores: Table
    observations: Table
    plans: Table
    plan_pupils: Table
    plan_reviews: Table
    plan_closures: Table
    sessions: Table

    def all(self) -> list[Table]:
        return [self.pupils, self.assessments, self.strand_scores, self.observations, self.plans,
                self.plan_pupils, self.plan_reviews, self.plan_closures, self.sessions]


def _tenant() -> list[Column]:
    return [Column("trust_id", UUID(as_uuid=True), nullable=False), Column("academy_id", UUID(as_uuid=True), nullable=False)]


def tables(suffix: str = "") -> ReadModelTables:
    md = MetaData(schema=SCHEMA)
    u = lambda name, **kw: Column(name, UUID(as_uuid=True), **kw)  # noqa: E731
    read_models = ReadModelTables(
        metadata=md,
        pupils=Table(
            f"rm_pupils{suffix}", md, u("pupil_id", primary_key=True), *_tenant(),
            Column("enrolled_on", Date), Column("left_on", Date),
            Column("framework_version", String), Column("working_at_strand", String),
            Column("expected_strand", String),
            u("baseline_assessment_id"), u("latest_assessment_id"), Column("latest_completed_at", DateTime(timezone=True)),
        ),
        assessments=Table(
            f"rm_assessments{suffix}", md, u("assessment_id", primary_key=True), u("pupil_id", nullable=False), *_tenant(),
            Column("framework_version", String, nullable=False), Column("strands", JSONB, nullable=False),
            Column("completed_at", DateTime(timezone=True), nullable=False), Column("baseline", Boolean, nullable=False),
            Column("working_at_strand", String, nullable=False),
        ),
        strand_scores=Table(
            f"rm_strand_scores{suffix}", md, u("assessment_id", primary_key=True), Column("strand", String, primary_key=True),
            u("pupil_id", nullable=False, index=True), *_tenant(), Column("framework_version", String, nullable=False),
            Column("need_percents", JSONB, nullable=False), Column("strand_percent", Float, nullable=False),
            Column("threshold_percent", Float, nullable=False), Column("threshold_met", Boolean, nullable=False),
            Column("working_at_strand", String, nullable=False), Column("focus_statements", JSONB, nullable=False),
            Column("baseline", Boolean, nullable=False), Column("scored_at", DateTime(timezone=True), nullable=False),
        ),
        observations=Table(
            f"rm_observations{suffix}", md, u("observation_id", primary_key=True), u("pupil_id", nullable=False, index=True),
            *_tenant(), u("assessment_id"), Column("framework_version", String, nullable=False),
            Column("statement_id", String, nullable=False), Column("level", String, nullable=False),
            Column("observed_at", DateTime(timezone=True), nullable=False), u("corrects"),
        ),
        plans=Table(
            f"rm_plans{suffix}", md, u("plan_id", primary_key=True), Column("plan_version", Integer, primary_key=True),
            *_tenant(), Column("kind", String, nullable=False), Column("strand", String, nullable=False),
            Column("targets", JSONB, nullable=False), Column("activities", JSONB, nullable=False),
            Column("frequency", String, nullable=False), Column("sessions_per_week", Integer),
            Column("session_minutes", Integer), Column("practitioner_id", String, nullable=False),
            Column("review_on", Date, nullable=False), Column("issued_at", DateTime(timezone=True), nullable=False),
            Column("supersedes_version", Integer),
        ),
        plan_pupils=Table(
            f"rm_plan_pupils{suffix}", md, u("plan_id", primary_key=True), u("pupil_id", primary_key=True, index=True),
            *_tenant(),
        ),
        plan_reviews=Table(
            f"rm_plan_reviews{suffix}", md, u("event_id", primary_key=True), u("plan_id", nullable=False, index=True),
            Column("plan_version", Integer, nullable=False), u("pupil_id"), *_tenant(),
            Column("reviewed_at", DateTime(timezone=True), nullable=False), Column("strand_percent_now", Float),
            Column("change_since_previous_plan", Float), Column("change_since_baseline", Float),
            Column("need_percents_now", JSONB, nullable=False), u("assessment_id"),
        ),
        plan_closures=Table(
            f"rm_plan_closures{suffix}", md, u("plan_id", primary_key=True), *_tenant(),
            Column("plan_version", Integer, nullable=False), Column("closed_at", DateTime(timezone=True), nullable=False),
        ),
        sessions=Table(
            f"rm_sessions{suffix}", md, u("event_id", primary_key=True), u("session_id", nullable=False),
            u("plan_id", nullable=False, index=True), u("pupil_id"), *_tenant(),
            Column("held_on", Date, nullable=False), Column("minutes", Integer, nullable=False),
        ),
    )
    # Every read model is one trust's rows (a rebuild's shadow tables get the policy before the swap).
    for table in read_models.all():
        table.info.update(per_trust())
    return read_models


LIVE = tables()

# The erasure register (tombstones): one row per pupil and data category that was erased or whose
# retention expired (`all` for an erasure). Not a read model: a rebuild never replaces it (it takes
# its own tombstones from the consent topic, where the same PupilErased and RetentionExpired events
# are). It names the pupil by their pseudonymous id only, and holds nothing else about them.
ERASURES = Table(
    "erasure_register", LIVE.metadata,
    Column("pupil_id", UUID(as_uuid=True), primary_key=True),
    Column("data_category", String(40), primary_key=True),
    *_tenant(),
    Column("erasure_id", UUID(as_uuid=True), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    info=per_trust(),
)
