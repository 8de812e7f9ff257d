"""The round trips one observation costs the assessment service's database (issue 18 item 2).

A `before_cursor_execute` listener on the running service's own engine counts the statements a
request sends (those run in a request's tenant scope: the relay and consumers, in the system scope,
are counted apart), and a pool `checkout` listener counts the connections checked out (each of which
paid a ping while `pool_pre_ping` was on). Warm process: one request first, then the one counted.
The budget is a count, not a time: it holds on a loaded machine too."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event

from shared import tenancy
from tests.integration.assessment.helpers import SAMPLE, class_of, now, serving

SINGLE_BUDGET = 6
BULK_BUDGET = 6


@dataclass
class Counted:
    request: list[str] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    checkouts: int = 0

    def explain(self) -> str:
        return "\n".join(f"  {i + 1}. {' '.join(s.split())[:160]}" for i, s in enumerate(self.request))


@contextmanager
def counting(engine) -> Iterator[Counted]:
    counted = Counted()

    def on_statement(conn, cursor, statement, parameters, context, executemany):
        # A request's transactions run in its tenant scope (NOBODY or the caller's trust).
        (counted.request if tenancy.current_scope() != tenancy.SYSTEM else counted.system).append(statement)

    def on_checkout(dbapi_conn, record, proxy):
        counted.checkouts += 1

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    try:
        yield counted
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        event.remove(engine.sync_engine.pool, "checkout", on_checkout)


def one(pupil) -> dict:
    return {"pupil_id": str(pupil), "statement_id": "being.3", "level": "emerging", "observed_at": now(),
            "framework_version": SAMPLE}


async def test_one_observation_costs_at_most_six_statements_and_no_ping(service_settings, tenant):
    async with serving(service_settings) as (app, api):
        engine = app.state.runtime.engine
        _, pupils = await class_of(api, tenant, 2)
        for _ in range(2):  # the first marks the framework version used, the second reads it used
            warm = await api.post("/observations", json=one(pupils[0]),
                                  headers={**tenant.headers(), "Idempotency-Key": str(uuid.uuid4())})
            assert warm.status_code == 201, warm.text

        with counting(engine) as counted:
            response = await api.post("/observations", json=one(pupils[1]),
                                      headers={**tenant.headers(), "Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 201, response.text
        print(f"single observation: {len(counted.request)} statements, {counted.checkouts} checkouts "
              f"(+{len(counted.system)} system-scope statements meanwhile: relay, consumers)\n"
              f"{counted.explain()}")
        assert len(counted.request) <= SINGLE_BUDGET, f"{len(counted.request)} statements:\n{counted.explain()}"
        assert not engine.pool._pre_ping, "a checkout pays no ping: connections are recycled instead"  # noqa: SLF001


async def test_a_bulk_observation_request_costs_a_handful_of_statements(service_settings, tenant):
    async with serving(service_settings) as (app, api):
        engine = app.state.runtime.engine
        _, pupils = await class_of(api, tenant, 5)

        def bulk() -> dict:
            return {"observed_at": now(), "framework_version": SAMPLE,
                    "ratings": [{"pupil_id": str(p), "statement_id": f"being.{n}", "level": "developing",
                                 "observation_id": str(uuid.uuid4())} for p in pupils for n in range(1, 10)]}

        warm = await api.post("/observations/bulk", json=bulk(),
                              headers={**tenant.headers(), "Idempotency-Key": str(uuid.uuid4())})
        assert warm.status_code == 201, warm.text
        with counting(engine) as counted:
            response = await api.post("/observations/bulk", json=bulk(),
                                      headers={**tenant.headers(), "Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 201 and response.json()["recorded"] == 45, response.text
        print(f"bulk (45 ratings): {len(counted.request)} statements, {counted.checkouts} checkouts "
              f"(+{len(counted.system)} system-scope statements meanwhile: relay, consumers)\n"
              f"{counted.explain()}")
        assert len(counted.request) <= BULK_BUDGET, f"{len(counted.request)} statements:\n{counted.explain()}"
