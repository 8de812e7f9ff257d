"""The planning service's tables, all in its own PostgreSQL schema `planning`.

Every row carries trust_id and academy_id. Scores and consent are read models of other contexts'
events (rebuildable by replaying them); plans and sessions are this service's own records, beside
the events it appends. Session notes are personal data and live in a table of their own, reached
only through `notes.SessionNotes`.
"""

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.tables import kernel_tables
from shared.tenancy import per_trust

SCHEMA = "planning"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)

# Framework versions fetched from the assessment service (immutable, so cached for good).
frameworks = Table(
    "frameworks",
    metadata,
    Column("trust_id", Uuid, nullable=False),
    Column("version", Text, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("trust_id", "version", name="frameworks_pkey"),
    info=per_trust(),
)

# Which academy (and class) a pupil belongs to, from the roster and scores events.
pupils = Table(
    "pupils",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("class_id", Uuid, nullable=True),
    Index("pupils_class", "trust_id", "class_id"),
    info=per_trust(),
)

# One row per StrandScored: keyed by (assessment, strand), so applying an event again changes nothing.
strand_scores = Table(
    "strand_scores",
    metadata,
    Column("assessment_id", Uuid, nullable=False),
    Column("strand", Text, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("pupil_id", Uuid, nullable=False),
    Column("framework_version", Text, nullable=False),
    Column("need_percents", JSONB, nullable=False),
    Column("strand_percent", Float, nullable=False),
    Column("threshold_percent", Float, nullable=False),
    Column("threshold_met", Boolean, nullable=False),
    Column("working_at_strand", Text, nullable=False),
    Column("focus_statements", JSONB, nullable=False),
    Column("baseline", Boolean, nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    # When this service had it (clock_timestamp: per row, not per transaction): the bench reads it.
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    PrimaryKeyConstraint("assessment_id", "strand", name="strand_scores_pkey"),
    Index("strand_scores_pupil", "pupil_id", "scored_at"),
    info=per_trust(),
)

# Taking part in interventions (opt-out): no row means the pupil may take part.
participation = Table(
    "participation",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("withdrawn", Boolean, nullable=False),
    Column("record_version", Integer, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    info=per_trust(),
)

# Processing by the online tool (consent's `online_processing`, opt-out): no row, or not
# `opted_out`, means in force. While opted out, no plan, revision or session is recorded for the
# child and no suggestion is made (services/planning/opt_out.py).
processing_opt_outs = Table(
    "processing_opt_outs",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("opted_out", Boolean, nullable=False),
    Column("record_version", Integer, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    # From when scores of the child are dropped (consent's acknowledgement less the race margin).
    Column("purged_since", DateTime(timezone=True)),
    info=per_trust(),
)

# Pupils erased from this service: only the pseudonymous id, so replayed events never bring them back.
erased_pupils = Table(
    "erased_pupils",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    info=per_trust(),
)

# Every version of every plan; a change to an issued plan is a new version, the old one stays.
plans = Table(
    "plans",
    metadata,
    Column("plan_id", Uuid, nullable=False),
    Column("version", Integer, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("pupil_ids", ARRAY(Uuid), nullable=False),
    Column("class_id", Uuid, nullable=True),
    Column("strand", Text, nullable=False),
    Column("framework_version", Text, nullable=False),
    Column("targets", JSONB, nullable=False),
    Column("activities", JSONB, nullable=False),
    Column("sessions_per_week", Integer, nullable=False),
    Column("session_minutes", Integer, nullable=False),
    Column("setting", Text, nullable=False),
    Column("review_on", Date, nullable=False),
    Column("status", Text, nullable=False),
    Column("practitioner_id", Text, nullable=True),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("issued_at", DateTime(timezone=True), nullable=True),
    # Each pupil's strand % when this version was issued: what a review measures progress from.
    Column("percents_at_issue", JSONB, nullable=True),
    Column("review", JSONB, nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("plan_id", "version", name="plans_pkey"),
    Index("plans_tenant", "trust_id", "academy_id", "created_at"),
    Index("plans_pupils", "pupil_ids", postgresql_using="gin"),
    info=per_trust(),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", Uuid, primary_key=True),
    Column("plan_id", Uuid, nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("held_on", Date, nullable=False),
    Column("minutes", Integer, nullable=False),
    Column("pupil_ids", ARRAY(Uuid), nullable=False),
    Column("staff_ids", JSONB, nullable=False),
    Column("activities_done", JSONB, nullable=False),
    Column("logged_by", Text, nullable=False),
    Column("logged_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("sessions_plan", "plan_id", "held_on"),
    Index("sessions_pupils", "pupil_ids", postgresql_using="gin"),
    info=per_trust(),
)

# Free text about children: personal data, reached only through notes.SessionNotes, and stored
# sealed under every present child's data key (`sealed_note`, layered in `sealed_for`'s order).
# `note` holds a note written before sealing until notes.seal_clear_notes seals it.
session_notes = Table(
    "session_notes",
    metadata,
    Column("session_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("note", Text, nullable=True),
    Column("sealed_note", Text, nullable=True),
    Column("sealed_for", ARRAY(Uuid), nullable=True),
    CheckConstraint("(note IS NULL) <> (sealed_note IS NULL) AND (sealed_note IS NULL) = (sealed_for IS NULL)",
                    name="session_notes_sealed_or_legacy"),
    info=per_trust(),
)

TABLES = ("frameworks", "pupils", "strand_scores", "participation", "erased_pupils", "plans", "sessions",
          "session_notes")
