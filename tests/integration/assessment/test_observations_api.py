"""Observations through the API: one rating, a whole class at once (all or nothing), corrections,
notes kept apart, and every kind of bad input refused with nothing changed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.auth import Role
from tests.integration.assessment.helpers import SAMPLE, class_of, count, events_of, now

OBSERVED = "flourish.assessment.ObservationRecorded.v1"


def one(pupil, **changes):
    body = {"pupil_id": str(pupil), "statement_id": "being.3", "level": "emerging", "observed_at": now(),
            "framework_version": SAMPLE}
    body.update(changes)
    return body


def whole_class(pupils, statements=range(1, 46)):
    return {"observed_at": now(), "framework_version": SAMPLE,
            "ratings": [{"pupil_id": str(p), "statement_id": f"being.{n}", "level": "developing"}
                        for p in pupils for n in statements]}


async def observations(engine, tenant, api=None) -> list:
    return [e for e in await events_of(engine, tenant.trust_id, api) if e[1] == OBSERVED]


async def test_one_rating_is_recorded_as_an_observation_on_the_pupils_stream(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    response = await api.post("/observations", json=one(pupil), headers=tenant.headers(Role.practitioner, subject="staff-9"))

    assert response.status_code == 201
    ((stream, _, data),) = await observations(engine, tenant, api)
    ((_, _, stored),) = await observations(engine, tenant)
    assert "level" not in stored and "statement_id" not in stored, "the rating is sealed as stored"
    assert stream == f"pupil-{pupil}" and data["observer_id"] == "staff-9" and data["level"] == "emerging"
    assert data["observation_id"] == response.json()["observation_ids"][0]


async def test_a_whole_class_is_recorded_in_one_request(api, tenant, engine):
    _, pupils = await class_of(api, tenant, 30)
    response = await api.post("/observations/bulk", json=whole_class(pupils), headers=tenant.headers())

    assert response.status_code == 201 and response.json()["recorded"] == 1350
    assert len(await observations(engine, tenant)) == 1350
    listed = (await api.get(f"/pupils/{pupils[0]}/observations", params={"limit": 200}, headers=tenant.headers())).json()
    assert len(listed["items"]) == 45


async def test_one_bad_rating_in_a_bulk_request_records_nothing_and_says_which(api, tenant, engine):
    _, pupils = await class_of(api, tenant, 10)
    body = whole_class(pupils)
    body["ratings"][17]["statement_id"] = "being.99"
    body["ratings"][230]["observed_at"] = (datetime.now(UTC) + timedelta(days=2)).isoformat()

    response = await api.post("/observations/bulk", json=body, headers=tenant.headers())

    assert response.status_code == 422
    assert {p["index"] for p in response.json()["problems"]} == {17, 230}
    assert await observations(engine, tenant) == []


async def test_bad_single_ratings_are_clear_4xx_and_change_nothing(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    cases = {
        "unknown pupil": (one(uuid.uuid4()), 422),
        "unknown statement": (one(pupil, statement_id="being.46"), 422),
        "level outside the scale": (one(pupil, level="outstanding"), 422),
        "unknown framework version": (one(pupil, framework_version="thrive-0"), 422),
        "observed in the future": (one(pupil, observed_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat()), 422),
        "observed without a time zone": (one(pupil, observed_at="2026-11-20T10:00:00"), 422),
    }
    for case, (body, status) in cases.items():
        response = await api.post("/observations", json=body, headers=tenant.headers())
        assert response.status_code == status, case
        assert response.headers["content-type"] == "application/problem+json", case
    assert await observations(engine, tenant) == []


async def test_a_pupil_of_another_academy_or_trust_is_403_and_nothing_is_recorded(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    other_academy = tenant.headers(academy_ids=[uuid.uuid4()])
    other_trust = tenant.headers(trust_id=uuid.uuid4())
    assert (await api.post("/observations", json=one(pupil), headers=other_academy)).status_code == 403
    assert (await api.post("/observations/bulk", json=whole_class([pupil]), headers=other_academy)).status_code == 403
    # Row-level security: to another trust the pupil is as unknown as a made-up one.
    unknown = uuid.uuid4()
    for body, made_up in ((one(pupil), one(unknown)), (whole_class([pupil]), whole_class([unknown]))):
        path = "/observations" if "ratings" not in body else "/observations/bulk"
        refused = await api.post(path, json=body, headers=other_trust)
        assert refused.status_code == (await api.post(path, json=made_up, headers=other_trust)).status_code
        assert refused.status_code in (403, 404, 422) and "on the roster" in refused.text
    assert await observations(engine, tenant) == []


async def test_a_duplicate_submission_is_409_and_a_retry_with_its_key_gets_the_first_answer(api, tenant, engine):
    _, pupils = await class_of(api, tenant, 3)
    body = whole_class(pupils, range(1, 4))
    assert (await api.post("/observations/bulk", json=body, headers=tenant.headers())).status_code == 201

    duplicate = await api.post("/observations/bulk", json=body, headers=tenant.headers())
    assert duplicate.status_code == 409 and duplicate.json()["duplicate_ratings"] == list(range(9))

    keyed = {**tenant.headers(), "Idempotency-Key": "class-4b-monday"}
    body = whole_class(pupils, range(4, 6))
    first = await api.post("/observations/bulk", json=body, headers=keyed)
    again = await api.post("/observations/bulk", json=body, headers=keyed)
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert len(await observations(engine, tenant)) == 15


async def test_a_correction_is_a_new_observation_naming_the_one_it_corrects(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    original = (await api.post("/observations", json=one(pupil), headers=tenant.headers())).json()["observation_ids"][0]

    corrected = await api.post(f"/observations/{original}/corrections", json={"level": "developing"}, headers=tenant.headers())
    twice = await api.post(f"/observations/{original}/corrections", json={"level": "secure"}, headers=tenant.headers())

    assert corrected.status_code == 201 and twice.status_code == 409
    first, second = [data for _, _, data in await observations(engine, tenant, api)]
    assert first["level"] == "emerging"  # nothing was updated
    assert second["corrects"] == original and second["level"] == "developing"
    assert second["observed_at"] == first["observed_at"]


async def test_a_note_is_kept_apart_and_never_travels_in_the_event(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    note = "Was upset after a difficult morning at home"
    response = await api.post("/observations", json=one(pupil, note=note), headers=tenant.headers())

    ((_, _, data),) = await observations(engine, tenant, api)
    assert note not in str(data) and data["has_note"] is True
    observation_id = response.json()["observation_ids"][0]
    # Kept apart, and sealed with the pupil's data key: the table holds ciphertext only.
    assert await count(engine, "SELECT count(*) FROM assessment.observation_notes WHERE observation_id = :o "
                               "AND note LIKE 'fl1.%' AND position(:n in note) = 0", o=observation_id, n=note) == 1
    listed = (await api.get(f"/pupils/{pupil}/observations", headers=tenant.headers())).json()["items"]
    assert listed[0]["note"] == note


async def test_an_auditor_cannot_record_observations(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    response = await api.post("/observations", json=one(pupil), headers=tenant.headers(Role.auditor))
    assert response.status_code == 403 and await observations(engine, tenant) == []
