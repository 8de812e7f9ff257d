"""Retention on the real Kafka and PostgreSQL: policies, the preview, RetentionExpired exactly once
per pupil and category through crashes, kills and restarts, catching up after downtime, and the
whole journey from a policy whose period has passed to a pupil unreadable everywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.consent.handlers import ConsentDeps
from services.consent.scheduler import RetentionScheduler
from services.consent.tables import retention_expiries
from shared.auth import Role
from shared.events.envelope import decode
from tests.integration.consent.conftest import (
    Consent,
    eventually,
    of_pupils,
    read_until,
    running_consent,
    types_of,
)

EXPIRED = "flourish.consent.RetentionExpired.v1"
ERASED = "flourish.consent.PupilErased.v1"
PROJECT = Path(__file__).resolve().parents[3]


async def set_policy(consent: Consent, category: str, counted_from: str = "leaving_date", **period: int) -> dict:
    response = await consent.client.put(f"/academies/{consent.academy_id}/retention-policies/{category}",
                                        headers=consent.token(Role.trust_admin, academies=[]),
                                        json={"counted_from": counted_from, "period": period})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def run(consent: Consent) -> list[dict]:
    response = await consent.client.post("/retention/runs", headers=consent.dpo)
    assert response.status_code == 200, response.text
    return response.json()["expired"]  # type: ignore[no-any-return]


def pairs(events: list) -> Counter:
    return Counter((e["data"]["pupil_id"], e["data"]["data_category"]) for e in events)


def _expiries_on(records: list, trust_id: uuid.UUID) -> Counter:
    envelopes = {}
    for record in records:
        if dict(record.headers)["ce_type"] == EXPIRED.encode():
            envelope = decode(record.headers, record.value)
            if envelope.trust_id == trust_id:
                envelopes.setdefault(envelope.id, envelope)  # a relay re-send would repeat the id
    return Counter((str(e.data.pupil_id), e.data.data_category.value) for e in envelopes.values())


async def kafka_expiries(consent: Consent, expected: Counter) -> Counter:
    """The distinct RetentionExpired events of this trust on Kafka, once all expected arrived."""
    records = await read_until(consent.bootstrap, consent.topic,
                               lambda rs: set(_expiries_on(rs, consent.trust_id)) >= set(expected))
    return _expiries_on(records, consent.trust_id)


async def test_a_policy_whose_period_passed_expires_the_category_once_and_the_preview_showed_it(consent: Consent) -> None:
    today = consent.clock().date()
    [overdue] = await consent.enrol(left_on=today - timedelta(days=40))
    [soon] = await consent.enrol(left_on=today - timedelta(days=10))
    [staying] = await consent.enrol()
    policy = await set_policy(consent, "assessments", days=30)
    admin = consent.token(Role.trust_admin, academies=[])

    now_due = (await consent.client.get(f"/academies/{consent.academy_id}/retention/preview?days=0", headers=admin)).json()
    month = (await consent.client.get(f"/academies/{consent.academy_id}/retention/preview?days=30", headers=admin)).json()
    policies = (await consent.client.get(f"/academies/{consent.academy_id}/retention-policies", headers=admin)).json()
    first = await run(consent)
    second = await run(consent)

    assert [(i["pupil_id"], i["data_category"], i["overdue"]) for i in now_due["items"]] == [
        (str(overdue), "assessments", True)]
    assert {i["pupil_id"] for i in month["items"]} == {str(overdue), str(soon)}
    assert str(staying) not in {i["pupil_id"] for i in month["items"]}
    assert month["pupils_with_incomplete_clock"] == 3  # no date of birth for the default `all` policy
    assert {p["data_category"]: p["is_default"] for p in policies["items"]} == {"all": True, "assessments": False}
    assert policy["description"] == "30 days from the pupil's leaving date"
    assert [(e["pupil_id"], e["data_category"]) for e in first] == [(str(overdue), "assessments")]
    assert second == []
    events = await consent.events(EXPIRED)
    assert pairs(events) == Counter({(str(overdue), "assessments"): 1})
    assert events[0]["data"]["policy_id"] == policy["policy_id"]
    only = Counter({(str(overdue), "assessments"): 1})
    assert await kafka_expiries(consent, only) == only
    # Only `all` erases the pupil; a single category expiring leaves the key in place.
    assert (await consent.client.get(f"/pupils/{overdue}/data-key", headers=consent.service)).status_code == 200


async def test_a_retention_period_that_passed_makes_the_pupil_unreadable_everywhere(consent: Consent) -> None:
    """The issue's journey: consent recorded, sharing allowed, withdrawn, denied; a retention
    policy whose period has passed; the pupil's data unreadable; the audit shows it happened."""
    today = consent.clock().date()
    [pupil] = await consent.enrol(left_on=today - timedelta(days=800))
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body())
    assert (await consent.decision(pupil)).json()["decision"] == "allow"
    await consent.client.post(f"/pupils/{pupil}/consents/share_camhs/withdrawal", headers=consent.senco,
                              json=consent.withdrawal_body())
    assert (await consent.decision(pupil)).json()["decision"] == "deny"
    key_before = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)
    await set_policy(consent, "all", years=2)

    expired = await run(consent)

    assert key_before.status_code == 200
    assert [(e["pupil_id"], e["data_category"]) for e in expired] == [(str(pupil), "all")]
    assert (await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)).status_code == 410
    record = (await consent.client.get(f"/pupils/{pupil}/erasure", headers=consent.token(Role.auditor))).json()
    assert record["reason"] == "retention_expired" and record["requested_by"] == "retention-scheduler"
    records = await read_until(consent.bootstrap, consent.topic, lambda rs: ERASED in types_of(of_pupils(rs, pupil)))
    assert list(dict.fromkeys(types_of(of_pupils(records, pupil))))[-2:] == [EXPIRED, ERASED]


async def test_the_default_policy_counts_from_the_sealed_date_of_birth(consent: Consent) -> None:
    old, young = await consent.enrol(2)
    today = consent.clock().date()
    await consent.client.put(f"/pupils/{old}/retention-clock", headers=consent.service,
                             json={"date_of_birth": (today.replace(year=today.year - 26)).isoformat()})
    await consent.client.put(f"/pupils/{young}/retention-clock", headers=consent.service,
                             json={"date_of_birth": (today.replace(year=today.year - 9)).isoformat()})
    expired = await run(consent)
    assert [(e["pupil_id"], e["data_category"]) for e in expired] == [(str(old), "all")]
    assert (await consent.client.get(f"/pupils/{young}/data-key", headers=consent.service)).status_code == 200


async def test_a_scheduler_that_crashes_before_commit_and_restarts_emits_each_expiry_exactly_once(
    consent: Consent,
) -> None:
    today = consent.clock().date()
    pupils = await consent.enrol(5, left_on=today - timedelta(days=400))
    await set_policy(consent, "assessments", years=1)
    await set_policy(consent, "action_plans", months=6)
    deps: ConsentDeps = consent.app.state.runtime.deps.handlers
    engine = consent.app.state.runtime.engine
    crashes = 0

    def crash_on_the_third(stage: str) -> None:
        nonlocal crashes
        if stage == "before_commit":
            crashes += 1
            if crashes == 3:
                raise RuntimeError("killed between deciding and committing")

    crashing = RetentionScheduler(engine, deps, fault=crash_on_the_third)
    with pytest.raises(RuntimeError):
        await crashing.run_once(consent.trust_id)
    assert len(await consent.events(EXPIRED)) == 2  # the third rolled back with its claim

    restarted = RetentionScheduler(engine, deps)
    emitted = await restarted.run_once(consent.trust_id)
    again = await restarted.run_once(consent.trust_id)

    expected = Counter({(str(p), c): 1 for p in pupils for c in ("assessments", "action_plans")})
    assert len(emitted) == 8 and again == []
    assert pairs(await consent.events(EXPIRED)) == expected
    assert await kafka_expiries(consent, expected) == expected


async def test_a_scheduler_killed_in_its_own_process_and_restarted_emits_each_expiry_exactly_once(
    consent: Consent, stack_settings, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    today = consent.clock().date()
    pupils = await consent.enrol(20, left_on=today - timedelta(days=400))
    await set_policy(consent, "assessments", years=1)
    await set_policy(consent, "action_plans", months=6)
    engine = consent.app.state.runtime.engine

    async def claimed() -> int:
        async with engine.connect() as conn:
            return await conn.scalar(  # type: ignore[no-any-return]
                select(func.count()).where(retention_expiries.c.trust_id == consent.trust_id))

    process = subprocess.Popen(  # noqa: ASYNC220 - spawning returns at once; the test kills it below
        [sys.executable, "-m", "tests.integration.consent.scheduler_process", stack_settings.database_url,
         str(consent.trust_id), str(tmp_path)],
        cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)}, stdout=subprocess.PIPE,
    )
    try:
        await eventually(lambda: _at_least(claimed, 3), timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    at_kill = await claimed()
    assert 3 <= at_kill < 40, "the process was killed in the middle of its pass"

    restarted = RetentionScheduler(engine, consent.app.state.runtime.deps.handlers)
    emitted = await restarted.run_once(consent.trust_id)

    expected = Counter({(str(p), c): 1 for p in pupils for c in ("assessments", "action_plans")})
    assert len(emitted) == 40 - at_kill
    assert pairs(await consent.events(EXPIRED)) == expected
    assert await claimed() == 40
    assert await kafka_expiries(consent, expected) == expected


async def _at_least(count: object, n: int) -> bool:
    return await count() >= n  # type: ignore[operator,no-any-return]


async def test_the_scheduler_runs_in_the_service_and_catches_up_after_downtime(
    stack_settings, topic_prefix, tmp_path, publisher  # type: ignore[no-untyped-def]
) -> None:
    from services.consent.app import ConsentSettings

    off = ConsentSettings(run_retention_scheduler=False)
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, off) as consent:
        today = consent.clock().date()
        pupils = await consent.enrol(3, left_on=today - timedelta(days=90))
        await set_policy(consent, "shared_reports", days=60)
        trust, academy = consent.trust_id, consent.academy_id
    # The service was down while the periods ended; it starts again with its scheduler.
    on = ConsentSettings(run_retention_scheduler=True, retention_interval_s=3600)
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, on) as consent:
        consent.trust_id, consent.academy_id = trust, academy

        async def all_expired() -> bool:
            return len(await consent.events(EXPIRED)) >= 3

        await eventually(all_expired)
        assert pairs(await consent.events(EXPIRED)) == Counter({(str(p), "shared_reports"): 1 for p in pupils})


async def test_retention_bad_input_gets_a_clear_4xx_and_changes_nothing(consent: Consent) -> None:
    await consent.enrol()
    admin = consent.token(Role.trust_admin, academies=[])
    url = f"/academies/{consent.academy_id}/retention-policies"
    zero = await consent.client.put(f"{url}/assessments", headers=admin,
                                    json={"counted_from": "leaving_date", "period": {"years": 0}})
    negative = await consent.client.put(f"{url}/assessments", headers=admin,
                                        json={"counted_from": "leaving_date", "period": {"days": -5}})
    unknown_category = await consent.client.put(f"{url}/everything_forever", headers=admin,
                                                json={"counted_from": "leaving_date", "period": {"years": 1}})
    unknown_clock = await consent.client.put(f"{url}/assessments", headers=admin,
                                             json={"counted_from": "full_moon", "period": {"years": 1}})
    other_trust = await consent.client.put(f"{url}/assessments",
                                           headers=consent.token(Role.trust_admin, academies=[], trust_id=uuid.uuid4()),
                                           json={"counted_from": "leaving_date", "period": {"years": 1}})
    senco = await consent.client.put(f"{url}/assessments", headers=consent.senco,
                                     json={"counted_from": "leaving_date", "period": {"years": 1}})
    preview = await consent.client.get(f"/academies/{consent.academy_id}/retention/preview?days=-1", headers=admin)

    assert zero.status_code == negative.status_code == 422
    assert "zero" in zero.json()["detail"] and "negative" in negative.json()["detail"]
    assert unknown_category.status_code == unknown_clock.status_code == preview.status_code == 422
    assert other_trust.status_code == 403 and senco.status_code == 403
    assert await consent.events() == []


async def test_a_full_pass_reports_when_the_scheduler_last_ran(consent: Consent) -> None:
    started = time.time()
    await RetentionScheduler(consent.app.state.runtime.engine, consent.app.state.runtime.deps.handlers).run_once()
    scrape = (await consent.client.get("/metrics")).text
    name = "flourish_retention_scheduler_last_run_timestamp_seconds"
    [line] = [line for line in scrape.splitlines() if line.startswith(name)]
    assert float(line.rsplit(" ", 1)[1]) >= started
