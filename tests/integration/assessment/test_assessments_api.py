"""Assessments through the API: the report's child assessed three times, completion rules, the
whole-class screening profile, progress from the baseline, and frameworks as data."""

from __future__ import annotations

import uuid
from datetime import date

import yaml

from services.assessment.framework_store import SAMPLE_PATH
from shared.auth import Role
from tests.integration.assessment.helpers import SAMPLE, class_of, events_of, now
from tests.unit.assessment.report import REPORT_FOCUS, REPORT_STRAND_PERCENTS, levels_at


async def start(api, tenant, strands=("being",), **who):
    body = {"strands": list(strands), "framework_version": SAMPLE, **{k: str(v) for k, v in who.items()}}
    response = await api.post("/assessments", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return response.json()


async def rate(api, tenant, pupil, assessment_id, levels):
    ratings = [{"pupil_id": str(pupil), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
               for s, level in levels.items()]
    response = await api.post("/observations/bulk", json={"observed_at": now(), "ratings": ratings}, headers=tenant.headers())
    assert response.status_code == 201, response.text


async def test_the_report_child_assessed_three_times_works_at_being_and_progresses_36_to_56(api, tenant):
    _, (pupil, *_) = await class_of(api, tenant, 1, born=date(2008, 5, 1))
    results = []
    for plan in (1, 2, 3):
        assessment_id = (await start(api, tenant, pupil_id=pupil))["assessments"][0]["assessment_id"]
        await rate(api, tenant, pupil, assessment_id, levels_at(plan))
        response = await api.post(f"/assessments/{assessment_id}/complete", headers=tenant.headers())
        assert response.status_code == 200, response.text
        results.append(response.json()["completed"][0])

    assert [round(r["scores"][0]["strand_percent"]) for r in results] == [36, 44, 56] == list(REPORT_STRAND_PERCENTS.values())
    assert [r["working_at_strand"] for r in results] == ["being"] * 3
    assert [r["baseline"] for r in results] == [True, False, False]
    assert results[2]["scores"][0]["focus_statements"] == [f"being.{n}" for n in REPORT_FOCUS]

    progress = (await api.get(f"/pupils/{pupil}/progress", headers=tenant.headers())).json()
    (being,) = progress["progress"]
    assert progress["baseline_assessment_id"] == results[0]["assessment_id"]
    assert (being["percent"]["baseline"], being["percent"]["latest"], being["percent"]["change"]) == (36.3, 56.3, 20.0)
    assert [a["strands"]["being"]["need_percents"]["being.safe"] for a in progress["assessments"]] == [51.1, 60.0, 68.9]


async def test_completing_with_missing_ratings_names_them_and_completing_twice_is_409(api, tenant, engine):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    assessment_id = (await start(api, tenant, pupil_id=pupil))["assessments"][0]["assessment_id"]
    levels = levels_at(1)
    del levels["being.12"], levels["being.40"]
    await rate(api, tenant, pupil, assessment_id, levels)

    gaps = await api.post(f"/assessments/{assessment_id}/complete", headers=tenant.headers())
    assert gaps.status_code == 422 and gaps.json()["missing_statements"] == {assessment_id: ["being.12", "being.40"]}
    shown = (await api.get(f"/assessments/{assessment_id}", headers=tenant.headers())).json()
    assert shown["status"] == "open" and shown["missing_statements"] == ["being.12", "being.40"]

    await rate(api, tenant, pupil, assessment_id, {s: levels_at(1)[s] for s in ("being.12", "being.40")})
    assert (await api.post(f"/assessments/{assessment_id}/complete", headers=tenant.headers())).status_code == 200
    again = await api.post(f"/assessments/{assessment_id}/complete", headers=tenant.headers())
    late = await api.post("/observations", headers=tenant.headers(), json={
        "pupil_id": str(pupil), "statement_id": "being.1", "level": "secure", "observed_at": now(),
        "assessment_id": assessment_id})
    assert again.status_code == 409 and late.status_code == 422
    events = await events_of(engine, tenant.trust_id, api)
    types = [t.rsplit(".", 2)[1] for _, t, _ in events]
    assert types.count("AssessmentCompleted") == 1 and types.count("StrandScored") == 1
    assert types.count("ObservationRecorded") == 45, "the late rating was not recorded"
    # The strand expected at the child's age travels with the event; the date of birth does not.
    [completed] = [data for _, t, data in events if t.endswith("AssessmentCompleted.v1")]
    assert completed["expected_strand"] is not None and "date_of_birth" not in completed
    # As stored (and published), what the event says about the child is sealed with the child's key.
    [stored] = [data for _, t, data in await events_of(engine, tenant.trust_id) if t.endswith("AssessmentCompleted.v1")]
    assert "expected_strand" not in stored and "working_at_strand" not in stored and "$sealed" in stored


async def test_starting_needs_a_known_strand_version_and_pupil_in_scope(api, tenant):
    _, (pupil, *_) = await class_of(api, tenant, 1)
    base = {"pupil_id": str(pupil), "strands": ["being"], "framework_version": SAMPLE}
    cases = [
        ({**base, "strands": ["flying"]}, tenant.headers(), 422),
        ({**base, "framework_version": "nope-1"}, tenant.headers(), 422),
        ({**base, "pupil_id": str(uuid.uuid4())}, tenant.headers(), 404),
        ({"strands": ["being"], "framework_version": SAMPLE}, tenant.headers(), 422),
        (base, tenant.headers(academy_ids=[uuid.uuid4()]), 403),
        # Row-level security: another trust's pupil is as unknown as a made-up one.
        (base, tenant.headers(trust_id=uuid.uuid4()), 404),
    ]
    for body, headers, status in cases:
        assert (await api.post("/assessments", json=body, headers=headers)).status_code == status, body


async def test_a_whole_class_screening_profiles_the_class_and_flags_who_needs_support(api, tenant):
    class_id, _pupils = await class_of(api, tenant, 6, born=date(2017, 4, 3))
    started = await start(api, tenant, ("being", "doing", "thinking", "power-and-identity", "skills-and-structure"),
                          class_id=class_id)
    assert started["screening_id"] and len(started["assessments"]) == 6
    framework = (await api.get(f"/frameworks/{SAMPLE}", headers=tenant.headers())).json()
    statements = [f"{s['id']}.{st['number']}" for s in framework["strands"][:5] for n in s["needs"] for st in n["statements"]]
    ratings = []
    for i, a in enumerate(started["assessments"]):
        behind = i < 2  # two children still at Being
        for statement in statements:
            level = "emerging" if behind and statement.startswith("being.") else "secure"
            ratings.append({"pupil_id": a["pupil_id"], "statement_id": statement, "level": level,
                            "assessment_id": a["assessment_id"]})
    response = await api.post("/observations/bulk", json={"observed_at": now(), "ratings": ratings}, headers=tenant.headers())
    assert response.status_code == 201 and response.json()["recorded"] == 6 * 165

    completed = await api.post(f"/screenings/{started['screening_id']}/complete", headers=tenant.headers())
    assert completed.status_code == 200 and len(completed.json()["completed"]) == 6

    profile = (await api.get(f"/screenings/{started['screening_id']}/profile", headers=tenant.headers())).json()
    behind = {started["assessments"][i]["pupil_id"] for i in (0, 1)}
    assert set(profile["flagged"]) == behind and profile["not_assessed"] == []
    children = {c["pupil_id"]: c for c in profile["children"]}
    assert all(children[p]["working_at"] == "being" and children[p]["expected"] == "skills-and-structure" for p in behind)
    being = profile["strands"][0]
    assert (being["working_at"], being["percent"]["below_threshold"], being["needs"]["being.safe"]["lowest"]) == (2, 2, 33.3)
    assert profile["strands"][5]["working_at"] == 4  # the rest met every strand screened: on to Interdependence
    assert (await api.get(f"/classes/{class_id}/profile", headers=tenant.headers())).json()["flagged"] == profile["flagged"]


async def test_a_framework_version_is_loaded_by_admins_and_is_immutable_once_used(api, tenant):
    document = yaml.safe_load(SAMPLE_PATH.read_text())
    document["version"] = f"trust-bank-{uuid.uuid4().hex[:6]}"
    admin = {**tenant.headers(Role.trust_admin), "Content-Type": "application/yaml"}

    as_staff = {**tenant.headers(), "Content-Type": "application/yaml"}
    assert (await api.post("/frameworks", content=yaml.safe_dump(document), headers=as_staff)).status_code == 403
    created = await api.post("/frameworks", content=yaml.safe_dump(document), headers=admin)
    same = await api.post("/frameworks", content=yaml.safe_dump(document), headers=admin)
    assert (created.status_code, created.json()["outcome"], same.json()["outcome"]) == (201, "created", "unchanged")

    document["strands"][0]["needs"][0]["statements"][0]["text"] = "Reworded before anyone used it"
    assert (await api.post("/frameworks", content=yaml.safe_dump(document), headers=admin)).json()["outcome"] == "replaced"

    _, (pupil, *_) = await class_of(api, tenant, 1)
    body = {"pupil_id": str(pupil), "strands": ["being"], "framework_version": document["version"]}
    assert (await api.post("/assessments", json=body, headers=tenant.headers())).status_code == 201
    async def stored(version: str) -> str:
        return (await api.get(f"/frameworks/{version}", headers=tenant.headers())).json()["content_hash"]

    in_use, sample = await stored(document["version"]), await stored(SAMPLE)
    document["strands"][0]["needs"][0]["statements"][0]["text"] = "Reworded after it was used"
    refused = await api.post("/frameworks", content=yaml.safe_dump(document), headers=admin)
    assert refused.status_code == 409 and document["version"] in refused.json()["detail"]
    assert await stored(document["version"]) == in_use

    other_trust = tenant.headers(trust_id=uuid.uuid4())
    assert (await api.get(f"/frameworks/{document['version']}", headers=other_trust)).status_code == 404
    reserved = await api.post("/frameworks", content=SAMPLE_PATH.read_text().replace("Stays close", "Keeps close"),
                              headers=admin)
    assert reserved.status_code == 409 and SAMPLE in reserved.json()["detail"]
    assert await stored(SAMPLE) == sample


async def test_an_invalid_framework_is_refused_naming_strand_statement_and_field(api, tenant):
    document = yaml.safe_load(SAMPLE_PATH.read_text())
    document["version"] = "broken-1"
    document["strands"][0]["needs"][2]["statements"][8]["text"] = ""
    response = await api.post("/frameworks", content=yaml.safe_dump(document),
                              headers={**tenant.headers(Role.trust_admin), "Content-Type": "application/yaml"})
    assert response.status_code == 422
    assert "strand 'Being', need 'Having Needs Met', statement 39, field 'text'" in response.json()["detail"]
    assert (await api.get("/frameworks/broken-1", headers=tenant.headers())).status_code == 404
