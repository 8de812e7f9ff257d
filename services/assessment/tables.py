"""The assessment service's tables, all in its own PostgreSQL schema `assessment`.

Three kinds, and the difference matters:

* the kernel's event store (events, outbox, inbox, idempotency keys): the truth for pupils'
  enrolments, observations and assessments;
* read models derived from those events (pupils, observations, assessments, screenings,
  strand_scores), written in the same transaction as the append by projections.py and
  rebuildable from the events at any time;
* records that are their own truth: frameworks, trusts, academies, classes and groups, and the
  personal data (pupil_personal_data, observation_notes), which events never carry, which only
  personal_data.PersonalDataRepository reads or writes, and which is sealed with each pupil's
  data key; the erasure tombstones (erased_pupils) and the retention-clock outbox.

Every row carries trust_id (and academy_id where it belongs to one): a query always says whose.
"""

from sqlalchemy import (
    ARRAY,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.tables import kernel_tables
from shared.tenancy import per_trust

SCHEMA = "assessment"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)

# --- Frameworks (their own truth; immutable once used) ---------------------------------------

frameworks = Table(
    "frameworks",
    metadata,
    # The platform's frameworks (the sample) have the nil UUID as owner; a trust's licensed item
    # bank is owned by, and visible to, that trust alone.
    Column("owner_trust_id", Uuid, nullable=False),
    Column("version", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("content", JSONB, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("loaded_by", Text, nullable=False),
    # Set when an assessment or observation first uses the version: from then on it never changes.
    Column("first_used_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("owner_trust_id", "version", name="frameworks_pkey"),
)

# --- Roster: tenancy, classes and groups (their own truth) -------------------------------------

trusts = Table(
    "trusts",
    metadata,
    Column("trust_id", Uuid, primary_key=True),
    Column("name", Text),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    info=per_trust(),
)

academies = Table(
    "academies",
    metadata,
    Column("academy_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, ForeignKey(f"{SCHEMA}.trusts.trust_id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("academies_trust_idx", "trust_id"),
    info=per_trust(),
)

classes = Table(
    "classes",
    metadata,
    # A registration group as the MIS names it ("4B"): the name is not personal data.
    Column("class_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, ForeignKey(f"{SCHEMA}.academies.academy_id"), nullable=False),
    Column("name", Text, nullable=False),
    UniqueConstraint("academy_id", "name", name="classes_academy_name_key"),
    info=per_trust(),
)

groups = Table(
    "groups",
    metadata,
    # A group staff put together (a nurture group, a screening group); pupils may be in several.
    Column("group_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, ForeignKey(f"{SCHEMA}.academies.academy_id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("groups_academy_idx", "academy_id"),
    info=per_trust(),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", Uuid, ForeignKey(f"{SCHEMA}.groups.group_id"), nullable=False),
    Column("pupil_id", Uuid, nullable=False),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    PrimaryKeyConstraint("group_id", "pupil_id", name="group_members_pkey"),
    info=per_trust(),
)

# --- Read models derived from events -------------------------------------------------------

pupils = Table(
    "pupils",
    metadata,
    # Pseudonymous: who the pupil is lives in pupil_personal_data.
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("class_id", Uuid),
    Column("on_roll", Boolean, nullable=False),
    Column("enrolled_on", Date, nullable=False),
    Column("left_on", Date),
    Index("pupils_class_idx", "class_id"),
    Index("pupils_academy_idx", "academy_id"),
    info=per_trust(),
)

observations = Table(
    "observations",
    metadata,
    Column("observation_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("pupil_id", Uuid, nullable=False),
    Column("assessment_id", Uuid),
    Column("framework_version", Text, nullable=False),
    Column("statement_id", Text, nullable=False),
    Column("level", Text, nullable=False),
    Column("observer_id", Text, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("corrects", Uuid),
    Column("has_note", Boolean, nullable=False),
    Index("observations_pupil_idx", "pupil_id", "observed_at"),
    # A duplicate submission: the same observer rating the same statement of the same pupil at
    # the same moment. A correction restates an earlier moment, so corrections are exempt here...
    Index(
        "observations_rating_key", "pupil_id", "statement_id", "observer_id", "observed_at",
        unique=True, postgresql_where=text("corrects IS NULL"),
    ),
    # ...and an observation is corrected at most once: a later correction corrects the correction.
    Index("observations_corrects_key", "corrects", unique=True, postgresql_where=text("corrects IS NOT NULL")),
    info=per_trust(),
)

screenings = Table(
    "screenings",
    metadata,
    # A group or whole-class screening: one assessment per pupil, sharing the screening id.
    Column("screening_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("class_id", Uuid),
    Column("group_id", Uuid),
    Column("framework_version", Text, nullable=False),
    Column("strands", ARRAY(Text), nullable=False),
    Column("started_by", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    info=per_trust(),
)

assessments = Table(
    "assessments",
    metadata,
    Column("assessment_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("pupil_id", Uuid, nullable=False),
    Column("screening_id", Uuid),
    Column("framework_version", Text, nullable=False),
    Column("strands", ARRAY(Text), nullable=False),
    Column("started_by", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Column("working_at_strand", Text),
    Column("baseline", Boolean),
    Index("assessments_pupil_idx", "pupil_id", "started_at"),
    Index("assessments_screening_idx", "screening_id"),
    info=per_trust(),
)

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
    Column("threshold_met", Boolean, nullable=False),
    Column("working_at_strand", Text, nullable=False),
    Column("focus_statements", ARRAY(Text), nullable=False),
    Column("baseline", Boolean, nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("assessment_id", "strand", name="strand_scores_pkey"),
    Index("strand_scores_pupil_idx", "pupil_id", "scored_at"),
    info=per_trust(),
)

# The read models projections.py maintains, in the order a rebuild clears them.
DERIVED = (strand_scores, observations, assessments, screenings, pupils)

# --- Personal data (only personal_data.PersonalDataRepository touches these) --------------------

pupil_personal_data = Table(
    "pupil_personal_data",
    metadata,
    # Every personal field is sealed with the pupil's data key (shared.datakeys, AES-256-GCM bound to
    # trust, pupil and field name): "fl1.…" text, unreadable once the consent service destroys the
    # key. Matching an import's rows by UPN goes through upn_index, a keyed blind index
    # (HMAC-SHA256 with the trust's lookup key), never through the UPN itself.
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("upn_index", Text, nullable=False),
    Column("upn", Text, nullable=False),
    Column("legal_surname", Text, nullable=False),
    Column("legal_forename", Text, nullable=False),
    Column("preferred_surname", Text, nullable=False),
    Column("preferred_forename", Text, nullable=False),
    Column("date_of_birth", Text, nullable=False),
    Column("gender", Text, nullable=False),
    Column("year_group", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("academy_id", "upn_index", name="pupil_personal_data_upn_index_key"),
    info=per_trust(),
)

observation_notes = Table(
    "observation_notes",
    metadata,
    # The free-text note of an observation, sealed with the pupil's key (bound to the observation).
    Column("observation_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("pupil_id", Uuid, nullable=False),
    Column("note", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("observation_notes_pupil_idx", "pupil_id"),
    info=per_trust(),
)

# --- Erasure and retention (non-personal; their own truth) -------------------------------------

erased_pupils = Table(
    "erased_pupils",
    metadata,
    # A pupil the consent service erased (PupilErased, or RetentionExpired for `all`): their
    # personal data and notes are gone; reads of it answer 410. Ids and dates only.
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("erasure_event_id", Uuid, nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False),
    info=per_trust(),
)

retention_clock_outbox = Table(
    "retention_clock_outbox",
    metadata,
    # Pupils whose date of birth the consent service has not yet confirmed it holds (PUT
    # /pupils/{id}/retention-clock). Written in the import's transaction; a background task
    # delivers each row and deletes it only once consent answered 2xx (or 410: erased). The date
    # itself is read, sealed, from pupil_personal_data at delivery time: nothing personal here.
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text),
    Column("enqueued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("retention_clock_outbox_due_idx", "next_attempt_at"),
    info=per_trust(),
)

processing_opt_outs = Table(
    "processing_opt_outs",
    metadata,
    # Where each child stands on processing by the online tool (consent's `online_processing`,
    # opt-out: no row means in force), from consent's decisions (opt_out.py). While `opted_out`,
    # no observation or assessment of the child is recorded; `purged_since` is how far back the
    # window between consent's acknowledgement and this row was purged. Ids and dates only.
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("opted_out", Boolean, nullable=False),
    Column("record_version", Integer, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True), nullable=False),
    Column("purged_since", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    info=per_trust(),
)
