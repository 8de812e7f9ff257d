"""The retention scheduler: emits RetentionExpired exactly once per pupil and data category when
its period ends, and erases the pupil when everything held on them (`all`) has expired.

Exactly once, whatever crashes: each expiry is one transaction that first claims a unique row
(pupil, category) in `retention_expiries` and then appends the event (and, for `all`, destroys the
key and appends PupilErased). A crash before the commit leaves nothing, so the next pass does it
again; a crash after it leaves the claim, so no pass does it twice; two replicas racing for the
same claim serialise on the unique key and only the first inserts. Each pass looks for periods
that ended on or before today, so after downtime it catches up on everything overdue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from uuid import UUID

from opentelemetry import metrics
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.consent import opt_out
from services.consent.domain.retention import Expiry, PupilClock, RetentionPolicy, expiries
from services.consent.handlers import (
    ConsentDeps,
    Pupil,
    academy_policies,
    erase,
    find_pupil,
    pupil_stream,
    read_date_of_birth,
)
from services.consent.tables import pupils, retention_expiries
from shared.datakeys import DataKeyError
from shared.events.consent import DataCategory, ErasureReason, RetentionClock, RetentionExpired
from shared.store.emission import Emission
from shared.telemetry import meter

log = logging.getLogger(__name__)

SCHEDULER = "retention-scheduler"

# When this process last finished a pass (Unix time): the ops alert fires when no replica has
# reported a pass for a day, i.e. children's data is being kept beyond its policy.
_last_run: dict[str, float] = {}


def _observe_last_run(_: object) -> Iterator[metrics.Observation]:
    if "at" in _last_run:
        yield metrics.Observation(_last_run["at"])


last_run_gauge = meter.create_observable_gauge(
    "flourish_retention_scheduler_last_run_timestamp", callbacks=[_observe_last_run], unit="s",
    description="Unix time of the retention scheduler's last completed pass",
)
# A fault injection point for the crash tests: called with the stage name inside the transaction.
FaultHook = Callable[[str], None]


@dataclass(frozen=True)
class AcademyClocks:
    trust_id: UUID
    academy_id: UUID
    policies: list[RetentionPolicy]
    clocks: list[PupilClock]
    already: set[tuple[UUID, DataCategory]]
    incomplete: int  # pupils whose clock lacks a date some policy counts from


async def academy_clocks(conn: AsyncConnection, deps: ConsentDeps, trust_id: UUID, academy_id: UUID) -> AcademyClocks:
    """The academy's effective policies, each live pupil's retention clock, and what already expired."""
    policies = await academy_policies(conn, trust_id, academy_id)
    needs_dob = any(p.counted_from is RetentionClock.DATE_OF_BIRTH for p in policies)
    rows = (await conn.execute(select(pupils).where(
        pupils.c.trust_id == trust_id, pupils.c.academy_id == academy_id, pupils.c.erased_at.is_(None)))).all()
    clocks, incomplete = [], 0
    for row in rows:
        dob = None
        if needs_dob and row.date_of_birth_sealed is not None:
            try:
                dob = await read_date_of_birth(conn, deps.vault, trust_id, row.pupil_id, row.date_of_birth_sealed)
            except DataKeyError:
                dob = None  # unreadable: treated as unknown, never as a reason to erase
        clock = PupilClock(row.pupil_id, row.left_on, dob, row.last_activity_on, row.case_closed_on)
        if any(clock.start(p.counted_from) is None for p in policies):
            incomplete += 1
        clocks.append(clock)
    done = await conn.execute(select(retention_expiries.c.pupil_id, retention_expiries.c.data_category).where(
        retention_expiries.c.trust_id == trust_id, retention_expiries.c.academy_id == academy_id))
    already = {(pupil_id, DataCategory(category)) for pupil_id, category in done}
    return AcademyClocks(trust_id, academy_id, policies, clocks, already, incomplete)


async def preview(conn: AsyncConnection, deps: ConsentDeps, trust_id: UUID, academy_id: UUID,
                  until: date) -> tuple[list[Expiry], int]:
    """What will have expired by `until` (overdue ones included), and how many clocks are incomplete."""
    academy = await academy_clocks(conn, deps, trust_id, academy_id)
    return expiries(academy.policies, academy.clocks, until, academy.already), academy.incomplete


class RetentionScheduler:
    def __init__(self, engine: AsyncEngine, deps: ConsentDeps, *, interval_s: float = 900.0,
                 fault: FaultHook | None = None, opt_out_grace_days: int = 30) -> None:
        self.engine = engine
        self.deps = deps
        self.interval_s = interval_s
        self.fault = fault
        self.opt_out_grace_days = opt_out_grace_days

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until stopped; a failed pass is logged and tried again next interval."""
        while not stop.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the scheduler outlives a failed pass (logged); the next retries it
                log.warning("retention pass failed", extra={"error_type": type(error).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)

    async def run_once(self, trust_id: UUID | None = None) -> list[Expiry]:
        """One pass over every academy (of one trust, if given); returns what this pass expired."""
        today = self.deps.clock().date()
        async with self.engine.connect() as conn:
            query = select(pupils.c.trust_id, pupils.c.academy_id).where(pupils.c.erased_at.is_(None)).distinct()
            if trust_id is not None:
                query = query.where(pupils.c.trust_id == trust_id)
            academies = (await conn.execute(query)).all()
        emitted: list[Expiry] = []
        for academy_trust, academy_id in academies:
            async with self.engine.connect() as conn:
                academy = await academy_clocks(conn, self.deps, academy_trust, academy_id)
            for expiry in expiries(academy.policies, academy.clocks, today, academy.already):
                if await self._expire(academy_trust, academy_id, expiry):
                    emitted.append(expiry)
        emitted += await self._expire_opt_outs(today, trust_id)
        if emitted:
            log.info("retention pass", extra={"count": len(emitted)})
        if trust_id is None:
            _last_run["at"] = time.time()  # a full pass, not one trust's on-demand run
        return emitted

    async def _expire_opt_outs(self, today: date, trust_id: UUID | None) -> list[Expiry]:
        """What was held on children whose family opted out of the online tool, once the grace
        period ended without a DPO's reason to keep it (services/consent/opt_out.py)."""
        async with self.engine.connect() as conn:
            ended = await opt_out.due(conn, today, self.opt_out_grace_days, trust_id)
        emitted = []
        for ending in ended:
            for expiry in opt_out.expiries_of(ending, self.opt_out_grace_days):
                if await self._expire(ending.trust_id, ending.academy_id, expiry):
                    emitted.append(expiry)
        return emitted

    async def _expire(self, trust_id: UUID, academy_id: UUID, expiry: Expiry) -> bool:
        """One expiry in one transaction; False if it was already done (or the pupil is gone)."""
        async with self.engine.begin() as conn:
            pupil = await find_pupil(conn, expiry.pupil_id, for_update=True)
            if pupil is None or pupil.erased_at is not None or pupil.academy_id != academy_id:
                return False
            now = self.deps.clock()
            event = RetentionExpired(pupil_id=expiry.pupil_id, data_category=expiry.data_category,
                                     policy_id=expiry.policy_id, counted_from=expiry.counted_from,
                                     due_on=expiry.due_on, expired_at=now)
            emission = Emission(self.deps.store, trust_id)
            envelope = emission.add(pupil_stream(expiry.pupil_id), academy_id, event)
            claimed = await conn.execute(
                insert(retention_expiries).values(
                    pupil_id=expiry.pupil_id, data_category=expiry.data_category.value, trust_id=trust_id,
                    academy_id=academy_id, policy_id=expiry.policy_id, due_on=expiry.due_on, event_id=envelope.id,
                    expired_at=now,
                ).on_conflict_do_nothing().returning(retention_expiries.c.pupil_id)
            )
            if claimed.first() is None:
                return False
            self._fault("claimed")
            await emission.append(conn)
            if expiry.data_category is DataCategory.ALL:
                await erase(conn, self.deps, Pupil(pupil.pupil_id, pupil.trust_id, pupil.academy_id, None),
                            reason=ErasureReason.RETENTION_EXPIRED, requested_by=SCHEDULER, cause=envelope)
            self._fault("before_commit")
        return True

    def _fault(self, stage: str) -> None:
        if self.fault is not None:
            self.fault(stage)
