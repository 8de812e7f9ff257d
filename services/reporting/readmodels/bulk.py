"""A rebuild's replay folded in memory and written with COPY (issue 18, item 4).

The projections (projections.py) are statements per batch: right for the live consumer, slow for
a replay of the whole history into empty tables. `Fold` applies the same effects to rows held in
memory, one event at a time in the order read, and writes them with COPY:

* the tenancy guard (shared/messaging/tenancy.py) against the roster as it stands (the pupils
  folded so far, the erased pupils' roster entries first): an event that claims another trust
  for a known pupil, or puts a known academy in another trust, is refused as the guard refuses it;
* the tombstones (erasure.admitted, what `keep` runs): nothing about an erased pupil, nothing of
  an expired category from before its expiry, a group plan without its erased members;
* every table but `rm_pupils` is an insert keyed by the event's natural key with ON CONFLICT DO
  NOTHING: the first row of a key wins, later ones are dropped (a set of the keys written holds
  that across flushes, so COPY never meets a duplicate);
* `rm_pupils` rows are merged per pupil exactly as the upserts merge them (greatest enrolment,
  rejoining clears `left_on`, the latest assessment by completion time, the first baseline) and
  written once, at the end.

The result equals applying the events one at a time through the projections
(tests/integration/reporting/readmodels/test_bulk_rebuild.py compares every table row for row).
What arrives after the bulk replay (the swap's catch-up) goes through the projections' statements,
on the rows written here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.readmodels.erasure import Remembered, admitted
from services.reporting.readmodels.tables import ReadModelTables
from shared.events.assessment import (
    AssessmentCompleted,
    ObservationRecorded,
    PupilEnrolled,
    PupilLeft,
    StrandScored,
)
from shared.events.envelope import Envelope
from shared.events.planning import PlanClosed, PlanIssued, PlanReviewed, SessionLogged
from shared.messaging.tenancy import TRUST_LEVEL

COPY_ROWS = 20_000  # rows held before they are handed to COPY (every key written stays in memory)

Rows = list[tuple[Table, tuple[str, ...], list[tuple[Any, ...]]]]

# rm_pupils, in its columns' order (checked against tables.py when a Fold is made).
PUPIL_COLUMNS = ("pupil_id", "trust_id", "academy_id", "enrolled_on", "left_on", "framework_version",
                 "working_at_strand", "expected_strand", "baseline_assessment_id", "latest_assessment_id",
                 "latest_completed_at")
_TRUST, _ACADEMY, _ENROLLED, _LEFT, _FRAMEWORK, _WORKING_AT, _EXPECTED, _BASELINE, _LATEST, _LATEST_AT = range(1, 11)

COLUMNS = {
    "pupils": PUPIL_COLUMNS,
    "assessments": ("assessment_id", "pupil_id", "trust_id", "academy_id", "framework_version", "strands",
                    "completed_at", "baseline", "working_at_strand"),
    "strand_scores": ("assessment_id", "strand", "pupil_id", "trust_id", "academy_id", "framework_version",
                      "need_percents", "strand_percent", "threshold_percent", "threshold_met", "working_at_strand",
                      "focus_statements", "baseline", "scored_at"),
    "observations": ("observation_id", "pupil_id", "trust_id", "academy_id", "assessment_id", "framework_version",
                     "statement_id", "level", "observed_at", "corrects"),
    "plans": ("plan_id", "plan_version", "trust_id", "academy_id", "kind", "strand", "targets", "activities",
              "frequency", "sessions_per_week", "session_minutes", "practitioner_id", "review_on", "issued_at",
              "supersedes_version"),
    "plan_pupils": ("plan_id", "pupil_id", "trust_id", "academy_id"),
    "plan_reviews": ("event_id", "plan_id", "plan_version", "pupil_id", "trust_id", "academy_id", "reviewed_at",
                     "strand_percent_now", "change_since_previous_plan", "change_since_baseline",
                     "need_percents_now", "assessment_id"),
    "plan_closures": ("plan_id", "trust_id", "academy_id", "plan_version", "closed_at"),
    "sessions": ("event_id", "session_id", "plan_id", "pupil_id", "trust_id", "academy_id", "held_on", "minutes"),
}


def _json(value: Any) -> str:
    # What the engine's JSON serializer (shared/store/db.py) sends: the jsonb codec takes text.
    return orjson.dumps(value).decode()


def _instant(moment: datetime) -> datetime:
    # How the driver stores a timestamptz (a naive one as local time), hence how PostgreSQL compares.
    return moment.astimezone(UTC)


class _Keyed:
    """One table's rows, the first of each key kept (an insert with ON CONFLICT DO NOTHING)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.rows: list[tuple[Any, ...]] = []
        self.seen: set[Any] = set()

    def add(self, key: Any, row: Callable[[], tuple[Any, ...]]) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.rows.append(row())

    def put(self, key: Any, row: tuple[Any, ...]) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.rows.append(row)


class Fold:
    """The read models `t` (empty, a rebuild's shadow set) as a replay makes them, in memory."""

    def __init__(self, t: ReadModelTables, remembered: Remembered) -> None:
        for name, columns in COLUMNS.items():
            declared = tuple(c.name for c in getattr(t, name).columns)
            if declared != columns:
                raise RuntimeError(f"{name}: bulk.COLUMNS is not the table's columns {declared}")
        self.t = t
        self.remembered = remembered
        self.pupils: dict[UUID, list[Any]] = {}
        self.academies: dict[UUID, dict[UUID, int]] = {}  # the roster's academies: trust → rows
        self.learned: dict[UUID, UUID] = {}  # academies the guard has looked up (TenancyGuard._academy_trust)
        self.keyed = {name: _Keyed(getattr(t, name)) for name in COLUMNS if name != "pupils"}
        self.applied = 0
        self._apply: dict[type[Any], Callable[[Envelope[Any], Any], None]] = {
            PupilEnrolled: self._enrolled, PupilLeft: self._left, AssessmentCompleted: self._completed,
            StrandScored: self._scored, ObservationRecorded: self._observed, PlanIssued: self._issued,
            PlanReviewed: self._reviewed, PlanClosed: self._closed, SessionLogged: self._session,
        }

    def keep_on_roster(self, roster: Iterable[tuple[UUID, UUID, UUID]]) -> None:
        """Erased pupils' roster entries (erasure.keep_on_roster), before anything is folded."""
        for pupil_id, trust_id, academy_id in roster:
            if pupil_id not in self.pupils:
                self._new_pupil(pupil_id, trust_id, academy_id)

    def add(self, envelopes: Iterable[Envelope[Any]]) -> None:
        graves = self.remembered.found
        for envelope in envelopes:
            apply = self._apply.get(type(envelope.data))
            if apply is None or self._refused(envelope):
                continue  # the live consumer dead-letters a refused event; a read model never had it
            self.applied += 1
            if graves:
                kept = admitted(graves, envelope)
                if kept is None:
                    continue
                envelope = kept
            apply(envelope, envelope.data)

    def pending(self) -> int:
        return sum(len(k.rows) for k in self.keyed.values())

    def take(self, *, final: bool) -> Rows:
        """The rows held, handed over to `copy` (rm_pupils only when `final`: they merge until the end)."""
        taken: Rows = []
        for name, keyed in self.keyed.items():
            if keyed.rows:
                taken.append((keyed.table, COLUMNS[name], keyed.rows))
                keyed.rows = []
        if final and self.pupils:
            taken.append((self.t.pupils, PUPIL_COLUMNS, [tuple(row) for row in self.pupils.values()]))
            self.pupils.clear()
        return taken

    # --- the tenancy guard, on the roster in memory ---------------------------------------------

    def _refused(self, e: Envelope[Any]) -> bool:
        # The pupils it is about (tenancy.pupils_of): every projected event has a pupil_id, a
        # PlanIssued its group's pupil_ids too.
        d = e.data
        pupils = self.pupils
        if (row := pupils.get(d.pupil_id)) is not None and row[_TRUST] != e.trust_id:
            return True
        if type(d) is PlanIssued:
            for member in d.pupil_ids:
                if (row := pupils.get(member)) is not None and row[_TRUST] != e.trust_id:
                    return True
        academy_id = e.academy_id
        if academy_id == TRUST_LEVEL:
            return False
        trust_id = self.learned.get(academy_id)
        if trust_id is None and (present := self.academies.get(academy_id)):
            # The guard looks an academy up in the roster and keeps what it found.
            trust_id = self.learned[academy_id] = next(iter(present))
        return trust_id is not None and trust_id != e.trust_id

    def _new_pupil(self, pupil_id: UUID, trust_id: UUID, academy_id: UUID) -> list[Any]:
        row: list[Any] = [pupil_id, trust_id, academy_id, None, None, None, None, None, None, None, None]
        self.pupils[pupil_id] = row
        self._count(academy_id, trust_id, 1)
        return row

    def _count(self, academy_id: UUID, trust_id: UUID, change: int) -> None:
        trusts = self.academies.setdefault(academy_id, {})
        trusts[trust_id] = trusts.get(trust_id, 0) + change
        if not trusts[trust_id]:
            del trusts[trust_id]
            if not trusts:
                del self.academies[academy_id]

    # --- the projections' effects (projections.py), one event at a time --------------------------

    def _enrolled(self, e: Envelope[Any], d: PupilEnrolled) -> None:
        row = self.pupils.get(d.pupil_id)
        if row is None:
            self._new_pupil(d.pupil_id, e.trust_id, e.academy_id)[_ENROLLED] = d.enrolled_on
            return
        if row[_TRUST] != e.trust_id:
            return
        if row[_ACADEMY] != e.academy_id:
            self._count(row[_ACADEMY], row[_TRUST], -1)
            self._count(e.academy_id, row[_TRUST], 1)
            row[_ACADEMY] = e.academy_id
        left_on = row[_LEFT]
        row[_ENROLLED] = d.enrolled_on if row[_ENROLLED] is None else max(row[_ENROLLED], d.enrolled_on)
        # Rejoining after leaving puts the pupil back on roll.
        row[_LEFT] = None if left_on is None or d.enrolled_on >= left_on else left_on

    def _left(self, e: Envelope[Any], d: PupilLeft) -> None:
        row = self.pupils.get(d.pupil_id)
        if row is None:
            self._new_pupil(d.pupil_id, e.trust_id, e.academy_id)[_LEFT] = d.left_on
        elif row[_TRUST] == e.trust_id and (row[_ENROLLED] is None or d.left_on >= row[_ENROLLED]):
            row[_LEFT] = d.left_on

    def _completed(self, e: Envelope[Any], d: AssessmentCompleted) -> None:
        self.keyed["assessments"].add(d.assessment_id, lambda: (
            d.assessment_id, d.pupil_id, e.trust_id, e.academy_id, d.framework_version, _json(d.strands),
            d.completed_at, d.baseline, d.working_at_strand))
        baseline = d.assessment_id if d.baseline else None
        row = self.pupils.get(d.pupil_id)
        if row is None:
            row = self._new_pupil(d.pupil_id, e.trust_id, e.academy_id)
        elif row[_TRUST] != e.trust_id:
            return
        elif row[_LATEST_AT] is not None and _instant(d.completed_at) < _instant(row[_LATEST_AT]):
            if row[_BASELINE] is None:
                row[_BASELINE] = baseline
            return
        row[_FRAMEWORK], row[_WORKING_AT], row[_EXPECTED] = d.framework_version, d.working_at_strand, d.expected_strand
        row[_LATEST], row[_LATEST_AT] = d.assessment_id, d.completed_at
        if row[_BASELINE] is None:
            row[_BASELINE] = baseline

    def _scored(self, e: Envelope[Any], d: StrandScored) -> None:
        self.keyed["strand_scores"].add((d.assessment_id, d.strand), lambda: (
            d.assessment_id, d.strand, d.pupil_id, e.trust_id, e.academy_id, d.framework_version,
            _json(d.need_percents), d.strand_percent, d.threshold_percent, d.threshold_met, d.working_at_strand,
            _json(d.focus_statements), d.baseline, d.scored_at))

    def _observed(self, e: Envelope[Any], d: ObservationRecorded) -> None:
        self.keyed["observations"].add(d.observation_id, lambda: (
            d.observation_id, d.pupil_id, e.trust_id, e.academy_id, d.assessment_id, d.framework_version,
            d.statement_id, d.level._value_, d.observed_at, d.corrects))

    def _issued(self, e: Envelope[Any], d: PlanIssued) -> None:
        self.keyed["plans"].add((d.plan_id, d.plan_version), lambda: (
            d.plan_id, d.plan_version, e.trust_id, e.academy_id, d.kind._value_, d.strand, _json(d.target_statements),
            _json(d.activities), d.frequency, d.sessions_per_week, d.session_minutes, d.practitioner_id,
            d.review_on, d.issued_at, d.supersedes_version))
        members = self.keyed["plan_pupils"]
        for pupil_id in {*d.pupil_ids, *([d.pupil_id] if d.pupil_id else [])}:
            members.put((d.plan_id, pupil_id), (d.plan_id, pupil_id, e.trust_id, e.academy_id))

    def _reviewed(self, e: Envelope[Any], d: PlanReviewed) -> None:
        self.keyed["plan_reviews"].add(e.id, lambda: (
            e.id, d.plan_id, d.plan_version, d.pupil_id, e.trust_id, e.academy_id, d.reviewed_at,
            d.strand_percent_now, d.change_since_previous_plan, d.change_since_baseline,
            _json(d.need_percents_now), d.assessment_id))

    def _closed(self, e: Envelope[Any], d: PlanClosed) -> None:
        self.keyed["plan_closures"].add(d.plan_id, lambda: (
            d.plan_id, e.trust_id, e.academy_id, d.plan_version, d.closed_at))

    def _session(self, e: Envelope[Any], d: SessionLogged) -> None:
        self.keyed["sessions"].add(e.id, lambda: (
            e.id, d.session_id, d.plan_id, d.pupil_id, e.trust_id, e.academy_id, d.held_on, d.minutes))


async def copy(conn: AsyncConnection, taken: Rows) -> None:
    """Write rows `Fold.take` handed over, with COPY on the connection's driver (asyncpg)."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    for table, columns, rows in taken:
        await raw.copy_records_to_table(table.name, schema_name=table.schema, columns=list(columns), records=rows)
