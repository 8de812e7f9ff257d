"""The questions a data-protection officer asks the audit ledger, as SQL over one trust's entries.

Rows are found through the generated query columns and their indexes; what a response *says*
always comes from the hashed body itself, so an answer shows exactly what the chain vouches for.
Every query is one trust's (the caller's), bounded by a period and paged by (occurred_at, seq).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.audit.domain.facts import CONSENT_DECISIONS, SHARE, Kind
from services.reporting.audit.tables import ENTRIES
from shared.events.consent import AgencyCategory, LawfulBasis

# The entries that record what became of a deletion notice's delivery (its share_id is None).
NOTICE_ACTIONS = ("share_delivered", "share_delivery_failed")


class InvertedPeriod(Exception):
    def __init__(self, start: date, end: date) -> None:
        super().__init__(f"the date range is inverted: from {start.isoformat()} is after to {end.isoformat()}")


@dataclass(frozen=True)
class Period:
    """Whole days in UTC, both ends included (a term: from its first day to its last)."""

    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise InvertedPeriod(self.start, self.end)

    @property
    def lower(self) -> datetime:
        return datetime.combine(self.start, time.min, UTC) if self.start else datetime(1970, 1, 1, tzinfo=UTC)

    @property
    def upper(self) -> datetime:
        """Exclusive: the first instant after the last day."""
        return datetime.combine(self.end + timedelta(days=1), time.min, UTC) if self.end else datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EntryFilter:
    """Which entries: a trust, a period and any of the ids a DPO asks by."""

    trust_id: UUID
    period: Period = field(default_factory=Period)
    actions: Sequence[str] = ()
    kind: Kind | None = None
    pupil_id: UUID | None = None
    agency_id: UUID | None = None
    agency_category: AgencyCategory | None = None
    staff_id: str | None = None
    academy_id: UUID | None = None
    share_id: UUID | None = None
    consent_id: UUID | None = None
    lawful_basis: LawfulBasis | None = None  # shares: the basis the entry records
    deletion_notice: bool | None = None  # shares: whether a deletion notice for it was delivered

    def described(self) -> dict[str, str]:
        """The filters as the audit of this query records them: ids, codes and dates only."""
        described = {
            "from": self.period.start.isoformat() if self.period.start else None,
            "to": self.period.end.isoformat() if self.period.end else None,
            "action": ",".join(self.actions) or None,
            "kind": self.kind.value if self.kind else None,
            "pupil_id": self.pupil_id, "agency_id": self.agency_id,
            "agency_category": self.agency_category.value if self.agency_category else None,
            "staff_id": self.staff_id, "academy_id": self.academy_id, "share_id": self.share_id,
            "consent_id": self.consent_id,
            "lawful_basis": self.lawful_basis.value if self.lawful_basis else None,
            "deletion_notice": None if self.deletion_notice is None else str(self.deletion_notice).lower(),
        }
        return {key: str(value) for key, value in described.items() if value is not None}


@dataclass(frozen=True)
class After:
    """Where the previous page ended (its last row's sort key)."""

    occurred_at: datetime
    seq: int

    def cursor(self) -> dict[str, Any]:
        return {"t": self.occurred_at.isoformat(), "s": self.seq}

    @classmethod
    def from_cursor(cls, position: dict[str, Any] | None) -> After | None:
        if position is None:
            return None
        try:
            moment = datetime.fromisoformat(position["t"])
            seq = position["s"]
        except (KeyError, TypeError, ValueError):
            raise ValueError("not an audit cursor") from None
        if not isinstance(seq, int) or moment.tzinfo is None:
            raise ValueError("not an audit cursor")
        return cls(moment, seq)


@dataclass(frozen=True)
class LedgerRow:
    seq: int
    entry_hash: str
    occurred_at: datetime
    fact: dict[str, Any]
    consent: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (seq, hash, fact)
    outcomes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (seq, fact)
    notices: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # deletion notices: (seq, fact)


class AuditQueries:
    def __init__(self, schema: str) -> None:
        self.entries = f'"{schema}".{ENTRIES}'

    def _where(self, flt: EntryFilter, after: After | None) -> tuple[list[str], dict[str, Any]]:
        clauses = ["e.trust_id = :trust_id", "e.occurred_at >= :lower", "e.occurred_at < :upper"]
        params: dict[str, Any] = {"trust_id": flt.trust_id, "lower": flt.period.lower, "upper": flt.period.upper}
        if len(flt.actions) == 1:
            # Equality, not = ANY(...): only then does the (trust, action, occurred_at) index hand
            # rows over already in order, so a page stops after its 50 rows instead of sorting a term.
            clauses.append("e.action = :action")
            params["action"] = flt.actions[0]
        elif flt.actions:
            clauses.append("e.action = ANY(CAST(:actions AS text[]))")
            params["actions"] = list(flt.actions)
        for column, value in (
            ("kind", flt.kind.value if flt.kind else None),
            ("pupil_id", flt.pupil_id),
            ("agency_id", flt.agency_id),
            ("agency_category", flt.agency_category.value if flt.agency_category else None),
            ("actor", flt.staff_id),
            ("academy_id", flt.academy_id),
            ("share_id", flt.share_id),
            ("consent_id", flt.consent_id),
        ):
            if value is not None:
                clauses.append(f"e.{column} = :{column}")
                params[column] = value
        if flt.lawful_basis is not None:
            # Not a generated column: the filter reads the hashed body of the rows the index found.
            clauses.append("(e.body::jsonb #>> '{fact,details,lawful_basis}') = :lawful_basis")
            params["lawful_basis"] = flt.lawful_basis.value
        if flt.deletion_notice is not None:
            clauses.append(("" if flt.deletion_notice else "NOT ") + f"EXISTS ({self._notices_sql('e', delivered_only=True)})")
            params["notice_actions"] = list(NOTICE_ACTIONS)
        if after is not None:
            clauses.append("(e.occurred_at, e.seq) > (:after_t, :after_seq)")
            params.update(after_t=after.occurred_at, after_seq=after.seq)
        return clauses, params

    def _notices_sql(self, share: str, delivered_only: bool = False, columns: str = "1") -> str:
        """The deliveries of a deletion notice covering the share `share` (an alias): entries of the
        same pupil and agency, with no share of their own, whose `share_ids` name it. Found through
        the by-pupil index (trust, pupil, action, ...): a few rows per pupil."""
        actions = "'share_delivered'" if delivered_only else "ANY(CAST(:notice_actions AS text[]))"
        return f"""SELECT {columns} FROM {self.entries} n
                   WHERE n.trust_id = {share}.trust_id AND n.pupil_id = {share}.pupil_id AND n.action = {actions}
                     AND n.share_id IS NULL AND n.agency_id = {share}.agency_id
                     AND (n.body::jsonb #> '{{fact,details,share_ids}}') ? CAST({share}.share_id AS text)"""

    async def entries_page(
        self, conn: AsyncConnection, flt: EntryFilter, after: After | None, limit: int
    ) -> list[LedgerRow]:
        """Up to `limit` entries (ask for one more than a page to learn whether another exists)."""
        clauses, params = self._where(flt, after)
        sql = text(
            f"""SELECT e.seq, e.entry_hash, e.occurred_at, e.body FROM {self.entries} e
                WHERE {' AND '.join(clauses)} ORDER BY e.occurred_at, e.seq LIMIT :limit"""
        )
        result = await conn.execute(sql, {**params, "limit": limit})
        return [LedgerRow(r.seq, r.entry_hash, r.occurred_at, _fact(r.body)) for r in result]

    async def shares_page(
        self, conn: AsyncConnection, flt: EntryFilter, after: After | None, limit: int
    ) -> list[LedgerRow]:
        """Shares (and, if asked, blocked attempts) with every consent decision recorded for the
        consent each rested on, and what became of the share afterwards (delivery outcomes)."""
        clauses, params = self._where(flt, after)
        sql = text(
            f"""
            SELECT e.seq, e.entry_hash, e.occurred_at, e.body,
              (SELECT coalesce(json_agg(json_build_array(c.seq, c.entry_hash, c.body) ORDER BY c.seq), '[]')
                 FROM {self.entries} c
                WHERE c.trust_id = e.trust_id AND c.consent_id = e.consent_id
                  AND c.action = ANY(CAST(:decisions AS text[]))) AS consent,
              (SELECT coalesce(json_agg(json_build_array(o.seq, o.body) ORDER BY o.seq), '[]')
                 FROM {self.entries} o
                WHERE o.trust_id = e.trust_id AND o.share_id = e.share_id AND o.seq <> e.seq) AS outcomes,
              (SELECT coalesce(json_agg(json_build_array(notice.seq, notice.body) ORDER BY notice.seq), '[]')
                 FROM ({self._notices_sql('e', columns='n.seq, n.body')}) notice) AS notices
            FROM {self.entries} e
            WHERE {' AND '.join(clauses)}
            ORDER BY e.occurred_at, e.seq LIMIT :limit
            """
        )
        result = await conn.execute(sql, {**params, "limit": limit, "decisions": list(CONSENT_DECISIONS),
                                          "notice_actions": list(NOTICE_ACTIONS)})
        return [
            LedgerRow(
                r.seq, r.entry_hash, r.occurred_at, _fact(r.body),
                consent=[(seq, entry_hash, _fact(body)) for seq, entry_hash, body in _json(r.consent)],
                outcomes=[(seq, _fact(body)) for seq, body in _json(r.outcomes)],
                notices=[(seq, _fact(body)) for seq, body in _json(r.notices)],
            )
            for r in result
        ]

    async def share_seq(self, conn: AsyncConnection, trust_id: UUID, share_id: UUID) -> int | None:
        """The entry that records the share itself (not its later outcomes)."""
        return await conn.scalar(
            text(f"""SELECT seq FROM {self.entries} WHERE trust_id = :trust_id AND share_id = :share_id
                     AND action = :share ORDER BY seq LIMIT 1"""),
            {"trust_id": trust_id, "share_id": share_id, "share": SHARE},
        )


def _fact(body: str) -> dict[str, Any]:
    return orjson.loads(body)["fact"]  # type: ignore[no-any-return]


def _json(value: Any) -> list[Any]:
    return orjson.loads(value) if isinstance(value, str | bytes) else list(value or [])


# --- What the API returns ----------------------------------------------------------------------


class ConsentDecision(BaseModel):
    """A consent decision in the ledger, for the consent a share rested on."""

    seq: int
    entry_hash: str
    decision: str
    consent_id: UUID
    purpose: str | None
    decided_at: datetime
    recorded_by: str | None
    valid_until: str | None = None
    before_share: bool


class ShareOutcome(BaseModel):
    seq: int
    action: str
    occurred_at: datetime
    details: dict[str, Any] = {}


class DeletionNotice(BaseModel):
    """A deletion notice covering the share (sent when consent was withdrawn), as the ledger
    recorded its delivery: delivered (the agency acknowledged the signed webhook) or failed."""

    seq: int
    status: str  # delivered | failed
    delivery_id: UUID | None
    at: datetime
    status_code: int | None = None


class ShareRecord(BaseModel):
    """Who shared what with which agency, when, on which lawful basis and record, and whether the
    agency was told to delete it. Fields an entry does not record (entries written before the
    ledger kept them) are null."""

    seq: int
    entry_hash: str
    event_id: UUID
    action: str
    share_id: UUID | None
    shared_at: datetime
    shared_by: str | None
    pupil_id: UUID | None
    academy_id: UUID | None
    agency_id: UUID | None
    agency_name: str | None = None
    agency_category: str | None
    document_kind: str | None
    document_id: UUID | None = None
    document_sha256: str | None = None
    reason: str | None = None
    lawful_basis: str | None = None
    consent_obtained: bool | None = None
    policy_reference: str | None = None
    basis_id: UUID | None = None
    basis_stream_id: str | None = None
    record_version: int | None = None
    delivery_id: UUID | None = None
    consent_id: UUID | None
    consent_in_force: bool
    consent_decisions: list[ConsentDecision]
    outcomes: list[ShareOutcome]
    deletion_notice: str | None = None  # delivered | failed | null (none went out)
    deletion_notices: list[DeletionNotice] = []


class AuditEntry(BaseModel):
    seq: int
    entry_hash: str
    event_id: UUID
    event_type: str
    kind: str
    action: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    correlation_id: UUID | None = None
    actor: str | None = None
    academy_id: UUID | None = None
    pupil_id: UUID | None = None
    agency_id: UUID | None = None
    agency_category: str | None = None
    share_id: UUID | None = None
    consent_id: UUID | None = None
    purpose: str | None = None
    details: dict[str, Any] = {}


class PersonalDataReadRecord(BaseModel):
    """Who read a pupil's record: when, which data, through which route, why if they said."""

    seq: int
    entry_hash: str
    read_at: datetime
    reader: str | None
    academy_id: UUID | None
    data_categories: list[str]
    route: str | None
    reason: str | None
    service: str


def share_record(row: LedgerRow) -> ShareRecord:
    fact = row.fact
    details = fact.get("details", {})
    decisions = [
        ConsentDecision(
            seq=seq, entry_hash=entry_hash, decision=decision["action"], consent_id=decision["consent_id"],
            purpose=decision.get("purpose"), decided_at=decision["occurred_at"], recorded_by=decision.get("actor"),
            valid_until=decision.get("details", {}).get("valid_until"),
            # By when each happened, not by ledger order: the consent and reporting topics are
            # consumed side by side, so a share can be recorded before the grant it rested on.
            before_share=decision["occurred_at"] <= fact["occurred_at"],
        )
        for seq, entry_hash, decision in row.consent
    ]
    in_force_then = [d for d in decisions if d.before_share]
    notices = [
        DeletionNotice(seq=seq, status="delivered" if n["action"] == "share_delivered" else "failed",
                       delivery_id=n.get("details", {}).get("delivery_id"), at=n["occurred_at"],
                       status_code=n.get("details", {}).get("status_code"))
        for seq, n in row.notices
    ]
    statuses = {n.status for n in notices}
    return ShareRecord(
        seq=row.seq, entry_hash=row.entry_hash, event_id=fact["event_id"], action=fact["action"],
        share_id=fact.get("share_id"), shared_at=fact["occurred_at"], shared_by=fact.get("actor"),
        pupil_id=fact.get("pupil_id"), academy_id=fact.get("academy_id"), agency_id=fact.get("agency_id"),
        agency_category=fact.get("agency_category"), document_kind=details.get("document_kind"),
        reason=details.get("reason"), consent_id=fact.get("consent_id"),
        agency_name=details.get("agency_name"), document_id=details.get("document_id"),
        document_sha256=details.get("document_sha256"), lawful_basis=details.get("lawful_basis"),
        consent_obtained=details.get("consent_obtained"), policy_reference=details.get("policy_reference"),
        basis_id=details.get("basis_id"), basis_stream_id=details.get("basis_stream_id"),
        record_version=details.get("record_version"), delivery_id=details.get("delivery_id"),
        deletion_notice="delivered" if "delivered" in statuses else ("failed" if statuses else None),
        deletion_notices=notices,
        # The ledger's view: the last decision recorded before the share was a grant.
        consent_in_force=bool(in_force_then) and in_force_then[-1].decision == "consent_granted",
        consent_decisions=decisions,
        outcomes=[
            ShareOutcome(seq=seq, action=o["action"], occurred_at=o["occurred_at"], details=o.get("details", {}))
            for seq, o in row.outcomes
        ],
    )


def audit_entry(row: LedgerRow) -> AuditEntry:
    return AuditEntry(seq=row.seq, entry_hash=row.entry_hash, **row.fact)


def read_record(row: LedgerRow) -> PersonalDataReadRecord:
    fact, details = row.fact, row.fact.get("details", {})
    return PersonalDataReadRecord(
        seq=row.seq, entry_hash=row.entry_hash, read_at=fact["occurred_at"], reader=fact.get("actor"),
        academy_id=fact.get("academy_id"), data_categories=details.get("data_categories", []),
        route=details.get("route"), reason=details.get("reason"), service=fact["source"],
    )
