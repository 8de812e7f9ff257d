"""Recording audit facts: what every service calls, in the same transaction as the effect it
records, so that the fact is published (through the service's own outbox, to its own topic
flourish.audit.<service>) if and only if the effect was committed. The reporting service's audit ledger consumes them.

    async with runtime.engine.begin() as conn:
        profile = await load_profile(conn, pupil_id)
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=..., academy_id=...,
                          data_categories=[ReadCategory.PUPIL_PROFILE])

Disclosures, consent decisions and erasures are already events of their own (ReportShared,
ConsentWithdrawn, PupilErased, ...): the ledger records those directly, so they need no call here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, TypeVar
from uuid import UUID

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.api import caller
from shared.auth import Principal
from shared.events.audit import (
    CODE_PATTERN,
    AdminAction,
    AdminActionTaken,
    AuditQueried,
    PersonalDataRead,
    ReadCategory,
)
from shared.events.envelope import Envelope
from shared.events.registry import Event
from shared.store.emission import Emission
from shared.store.event_store import EventStore

__all__ = [
    "TRUST_LEVEL",
    "AccessReason",
    "AdminAction",
    "PersonalDataReads",
    "ReadCategory",
    "audit_reads",
    "record_admin_action",
    "record_audit",
    "record_audit_query",
    "record_personal_data_read",
    "record_personal_data_reads",
]

# Envelopes always carry an academy; a fact about the trust as a whole (a framework loaded, an
# audit query) carries the nil UUID instead, and the ledger stores no academy for it.
TRUST_LEVEL = UUID(int=0)

Actor = Principal | str
AuditFact = TypeVar("AuditFact", bound=Event)


def actor_of(actor: Actor) -> str:
    """The pseudonymous subject of a caller, or a service's own name ("service:consent")."""
    return actor.subject if isinstance(actor, Principal) else actor


async def record_audit(
    conn: AsyncConnection,
    store: EventStore,
    fact: AuditFact,
    *,
    trust_id: UUID,
    academy_id: UUID | None = None,
    cause: Envelope[Event] | None = None,
) -> Envelope[AuditFact]:
    """Append an audit fact to this service's event store, in the caller's transaction.

    The fact reaches flourish.audit.<service> through the outbox once the transaction commits; if it
    rolls back, neither the effect nor its audit fact happened. `cause` ties the fact to the event that
    led to it (same correlation).
    """
    if fact.context != "audit":
        raise ValueError(f"{fact.event_type} is not an audit fact (context {fact.context!r})")
    emission = Emission(store, trust_id, cause=cause)
    # One stream per trust: the audit facts this service recorded for it, numbered in order.
    envelope = emission.add(f"audit-{trust_id}", academy_id or TRUST_LEVEL, fact)
    await emission.append(conn)
    return envelope


async def record_personal_data_read(
    conn: AsyncConnection,
    store: EventStore,
    reader: Actor,
    *,
    pupil_id: UUID,
    trust_id: UUID,
    academy_id: UUID | None,
    data_categories: Iterable[str],
    route: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> Envelope[PersonalDataRead]:
    """Record that `reader` read a pupil's personal data (which categories, through which route)."""
    fact = PersonalDataRead(
        pupil_id=pupil_id,
        actor=actor_of(reader),
        data_categories=list(data_categories),
        route=route,
        reason=reason,
        read_at=at or datetime.now(UTC),
    )
    return await record_audit(conn, store, fact, trust_id=trust_id, academy_id=academy_id)


async def record_personal_data_reads(
    conn: AsyncConnection,
    store: EventStore,
    reader: Actor,
    *,
    pupils: Iterable[tuple[UUID, UUID | None]],
    trust_id: UUID,
    data_categories: Iterable[str],
    route: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> list[Envelope[PersonalDataRead]]:
    """Record one read per pupil of a list (a class list, a session's pupils): `pupils` holds
    (pupil_id, academy_id) pairs. One entry per pupil, so "who read this pupil's record" finds
    every list the pupil was on; appended in one statement."""
    emission = Emission(store, trust_id)
    categories, moment, actor = list(data_categories), at or datetime.now(UTC), actor_of(reader)
    envelopes = [
        emission.add(f"audit-{trust_id}", academy_id or TRUST_LEVEL, PersonalDataRead(
            pupil_id=pupil_id, actor=actor, data_categories=categories, route=route, reason=reason, read_at=moment))
        for pupil_id, academy_id in dict.fromkeys(pupils)
    ]
    if envelopes:
        await emission.append(conn)
    return envelopes


async def record_admin_action(
    conn: AsyncConnection,
    store: EventStore,
    actor: Actor,
    action: AdminAction | str,
    *,
    trust_id: UUID,
    target_kind: str,
    target_id: str,
    academy_id: UUID | None = None,
    pupil_id: UUID | None = None,
    details: Mapping[str, str] | None = None,
    at: datetime | None = None,
    cause: Envelope[Event] | None = None,
) -> Envelope[AdminActionTaken]:
    """Record an admin action (framework loaded, agency registered, data key destroyed, ledger
    exported); `cause`: the event that led to it, if any (a retention expiry's erasure)."""
    fact = AdminActionTaken(
        action=str(action),
        actor=actor_of(actor),
        target_kind=target_kind,
        target_id=target_id,
        pupil_id=pupil_id,
        details=dict(details or {}),
        taken_at=at or datetime.now(UTC),
    )
    return await record_audit(conn, store, fact, trust_id=trust_id, academy_id=academy_id, cause=cause)


async def record_audit_query(
    conn: AsyncConnection,
    store: EventStore,
    actor: Actor,
    query: str,
    *,
    trust_id: UUID,
    filters: Mapping[str, str] | None = None,
    result_count: int | None = None,
    at: datetime | None = None,
) -> Envelope[AuditQueried]:
    """Record that someone asked the audit ledger a question (every audit query is audited)."""
    fact = AuditQueried(
        actor=actor_of(actor),
        query=query,
        filters=dict(filters or {}),
        result_count=result_count,
        queried_at=at or datetime.now(UTC),
    )
    return await record_audit(conn, store, fact, trust_id=trust_id)


# --- FastAPI ------------------------------------------------------------------------------------

AccessReason = Annotated[
    str | None,
    Header(
        alias="Flourish-Access-Reason",
        pattern=CODE_PATTERN,
        description="Why you are reading this pupil's data, as a reason code (e.g. `safeguarding_review`); "
        "recorded in the audit ledger. Codes only: never a name or free text.",
    ),
]


@dataclass(frozen=True)
class PersonalDataReads:
    """The current request's reader, route and stated reason: records reads of pupils' data.

    Call `record` inside the transaction that loads the data, after checking scope, so that a
    read nobody could record is a read that never happened (the request fails instead).
    """

    principal: Principal
    route: str
    reason: str | None

    async def record(
        self,
        conn: AsyncConnection,
        store: EventStore,
        *,
        pupil_id: UUID,
        trust_id: UUID,
        academy_id: UUID | None,
        data_categories: Iterable[str],
    ) -> Envelope[PersonalDataRead]:
        return await record_personal_data_read(
            conn, store, self.principal, pupil_id=pupil_id, trust_id=trust_id, academy_id=academy_id,
            data_categories=data_categories, route=self.route, reason=self.reason,
        )

    async def record_many(
        self,
        conn: AsyncConnection,
        store: EventStore,
        *,
        pupils: Iterable[tuple[UUID, UUID | None]],
        trust_id: UUID,
        data_categories: Iterable[str],
    ) -> list[Envelope[PersonalDataRead]]:
        """One read per pupil of a list: `pupils` holds (pupil_id, academy_id) pairs."""
        return await record_personal_data_reads(
            conn, store, self.principal, pupils=pupils, trust_id=trust_id, data_categories=data_categories,
            route=self.route, reason=self.reason,
        )


async def audit_reads(  # async: no thread-pool hop
    request: Request, principal: Annotated[Principal, Depends(caller)], reason: AccessReason = None
) -> PersonalDataReads:
    """FastAPI dependency for endpoints that return a pupil's personal data.

        @router.get("/pupils/{pupil_id}/profile")
        async def profile(pupil_id: UUID, read: Annotated[PersonalDataReads, Depends(audit_reads)]): ...
    """
    # The route template ("/pupils/{pupil_id}/profile"), never the concrete path.
    route = getattr(request.scope.get("route"), "path", None) or "unmatched"
    return PersonalDataReads(principal=principal, route=route, reason=reason)
