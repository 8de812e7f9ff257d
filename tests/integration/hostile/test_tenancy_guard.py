"""The kernel's tenancy check on its own, against a roster table in a schema of the test's own:
what it refuses, what it lets through, and that an academy's trust, once learned, is remembered."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Column, MetaData, Table, Uuid, text

from shared.events.planning import PlanIssued
from shared.messaging.tenancy import TRUST_LEVEL, TenancyGuard, TenantMismatch
from tests.integration.hostile.helpers import about, envelope

A, A1, P = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
B, B1, Q = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


@pytest.fixture
async def roster(engine, kernel):
    table = Table("roster", MetaData(schema=kernel.schema), Column("pupil_id", Uuid, primary_key=True),
                  Column("trust_id", Uuid, nullable=False), Column("academy_id", Uuid, nullable=False))
    async with engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)
        await conn.execute(table.insert(), [{"pupil_id": P, "trust_id": A, "academy_id": A1},
                                            {"pupil_id": Q, "trust_id": B, "academy_id": B1}])
    return table


def plan(trust: uuid.UUID, academy: uuid.UUID, *pupils: uuid.UUID):  # type: ignore[no-untyped-def]
    """A group plan about the pupils (pupil_ids), claiming the trust and academy."""
    data = about(PlanIssued, pupils[0]).model_copy(update={"pupil_ids": list(pupils)})
    return envelope(data, trust, academy)


@pytest.mark.parametrize(("claim", "reason"), [
    (lambda: [plan(B, B1, P)], "pupil_id: the pupil belongs to another trust"),
    (lambda: [plan(B, B1, Q, P)], "pupil_id: the pupil belongs to another trust"),  # one of a group
    (lambda: [plan(A, B1, P)], "ce_academyid: the academy belongs to another trust"),
    (lambda: [plan(A, A1, uuid.UUID(int=7)), plan(B, uuid.uuid4(), uuid.UUID(int=7))], "for one pupil"),
    (lambda: [plan(A, uuid.UUID(int=9), uuid.uuid4()), plan(B, uuid.UUID(int=9), uuid.uuid4())], "for one academy"),
], ids=["pupil-of-another-trust", "one-of-a-group", "academy-of-another-trust", "batch-disagrees-on-a-pupil",
        "batch-disagrees-on-an-academy"])
async def test_an_event_that_contradicts_the_roster_or_its_batch_is_refused(engine, roster, claim, reason):
    async with engine.connect() as conn:
        with pytest.raises(TenantMismatch, match=reason):
            await TenancyGuard(roster).refuse_other_tenants(conn, claim())


async def test_what_the_roster_does_not_contradict_is_let_through(engine, roster):
    unknown_pupil, new_academy = uuid.uuid4(), uuid.uuid4()
    async with engine.connect() as conn:
        await TenancyGuard(roster).refuse_other_tenants(conn, [
            plan(A, A1, P),  # as the roster says
            plan(A, new_academy, P),  # a move to a new academy of the same trust
            plan(B, B1, unknown_pupil),  # a pupil never seen
            plan(A, TRUST_LEVEL, P),  # about the whole trust: no academy to check
        ])


async def test_an_academys_trust_once_learned_is_remembered(engine, roster):
    guard = TenancyGuard(roster)
    async with engine.connect() as conn:
        await guard.refuse_other_tenants(conn, [plan(B, B1, Q)])
    async with engine.begin() as conn:
        await conn.execute(text(f'DELETE FROM "{roster.schema}".roster'))
    async with engine.connect() as conn:
        with pytest.raises(TenantMismatch, match="ce_academyid"):
            await guard.refuse_other_tenants(conn, [plan(A, B1, uuid.uuid4())])
        await TenancyGuard(roster).refuse_other_tenants(conn, [plan(A, B1, uuid.uuid4())])  # a fresh guard knows nothing
