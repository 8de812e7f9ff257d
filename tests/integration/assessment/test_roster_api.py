"""The roster through the API: academies, MIS imports (idempotent, all or nothing), scope."""

from __future__ import annotations

import uuid

from shared.auth import Role
from tests.integration.assessment.helpers import (
    HEADER,
    class_of,
    count,
    events_of,
    import_roster,
    pupil_rows,
    roster_csv,
)


async def test_an_import_enrols_pupils_in_classes_and_keeps_their_personal_data_out_of_events(api, tenant, engine):
    await tenant.register(api)
    rows = pupil_rows(3, "4B") + pupil_rows(2, "4A")
    response = await import_roster(api, tenant, roster_csv(rows))

    report = response.json()
    assert response.status_code == 200
    assert (report["rows"], len(report["enrolled"]), report["classes_created"]) == (5, 5, ["4A", "4B"])
    events = await events_of(engine, tenant.trust_id)
    assert [t for _, t, _ in events] == ["flourish.assessment.PupilEnrolled.v1"] * 5
    stored = str(events)
    for row in rows:
        upn, surname, forename, dob = row.split(",")[:4]
        assert upn not in stored and surname not in stored and forename not in stored and dob not in stored

    pupil = report["enrolled"][0]["pupil_id"]
    record = (await api.get(f"/pupils/{pupil}", headers=tenant.headers())).json()
    assert (record["upn"], record["legal_surname"], record["year_group"]) == (rows[0].split(",")[0], "Surname0", "4")


async def test_importing_the_same_file_twice_changes_nothing_the_second_time(api, tenant, engine):
    await tenant.register(api)
    data = roster_csv(pupil_rows(4))
    await import_roster(api, tenant, data)
    before = await events_of(engine, tenant.trust_id)

    again = (await import_roster(api, tenant, data)).json()

    assert (again["enrolled"], again["unchanged"], again["left"], again["moved"]) == ([], 4, 0, 0)
    assert await events_of(engine, tenant.trust_id) == before
    assert await count(engine, "SELECT count(*) FROM assessment.pupil_personal_data WHERE academy_id = :a",
                       a=tenant.academy_id) == 4


async def test_a_re_import_applies_changes_moves_and_leavers(api, tenant, engine):
    await tenant.register(api)
    rows = pupil_rows(4, "4B")
    first = (await import_roster(api, tenant, roster_csv(rows))).json()
    ids = [e["pupil_id"] for e in first["enrolled"]]
    changed = [rows[0].replace("Surname0", "Newname"), rows[1].replace(",4B", ",4A"), rows[2], *pupil_rows(1, "4B")]

    report = (await import_roster(api, tenant, roster_csv(changed), whole_roll="true")).json()

    assert (report["updated"], report["moved"], report["left"], len(report["enrolled"]), report["unchanged"]) == (1, 1, 1, 1, 1)
    assert (await api.get(f"/pupils/{ids[0]}", headers=tenant.headers())).json()["legal_surname"] == "Newname"
    left = (await api.get(f"/pupils/{ids[3]}", headers=tenant.headers())).json()
    assert left["on_roll"] is False and left["left_on"] is not None
    types = [t.rsplit(".", 2)[1] for _, t, _ in await events_of(engine, tenant.trust_id)]
    assert types.count("PupilClassChanged") == 1 and types.count("PupilLeft") == 1 and types.count("PupilEnrolled") == 5


async def test_a_bad_file_is_rejected_with_a_report_per_row_and_nothing_is_imported(api, tenant, engine):
    await tenant.register(api)
    rows = pupil_rows(3)
    rows[1] = rows[1].replace("03/04/2017", "31/02/2017")
    rows[2] = "NOT-A-UPN" + rows[2][13:]

    response = await import_roster(api, tenant, roster_csv(rows))

    body = response.json()
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert {(p["row"], p["column"]) for p in body["problems"]} == {(3, "DOB"), (4, "UPN")}
    assert "31/02/2017" not in response.text and "NOT-A-UPN" not in response.text
    assert await events_of(engine, tenant.trust_id) == []
    assert await count(engine, "SELECT count(*) FROM assessment.pupil_personal_data WHERE academy_id = :a",
                       a=tenant.academy_id) == 0
    assert await count(engine, "SELECT count(*) FROM assessment.classes WHERE academy_id = :a", a=tenant.academy_id) == 0


async def test_a_malformed_csv_is_a_clear_422_and_nothing_is_imported(api, tenant, engine):
    await tenant.register(api)
    response = await import_roster(api, tenant, (HEADER + '\r\nA123,"unterminated\r\n').encode())
    assert response.status_code == 422 and "not valid CSV" in response.json()["problems"][0]["message"]
    assert await events_of(engine, tenant.trust_id) == [] and await _personal_data_rows(engine, tenant) == 0


async def test_an_unregistered_academy_is_404_and_another_academys_staff_get_403(api, tenant, engine):
    unknown = await import_roster(api, tenant, roster_csv(pupil_rows(1)))
    assert unknown.status_code == 404
    assert await events_of(engine, tenant.trust_id) == [] and await _personal_data_rows(engine, tenant) == 0

    class_id, pupils = await class_of(api, tenant, 2)
    other_academy = tenant.headers(academy_ids=[uuid.uuid4()])
    other_trust = tenant.headers(Role.trust_admin, trust_id=uuid.uuid4())
    # Row-level security: another trust's pupil and class are as unknown as made-up ones (404).
    for headers, status in ((other_academy, 403), (other_trust, 404)):
        assert (await api.get(f"/pupils/{pupils[0]}", headers=headers)).status_code == status
        assert (await api.get(f"/classes/{class_id}/pupils", headers=headers)).status_code == status
    assert (await api.get(f"/pupils/{pupils[0]}", headers=tenant.headers(Role.trust_admin, academy_ids=[]))).status_code == 200


async def test_an_academy_of_another_trust_cannot_be_taken_over(api, tenant):
    await tenant.register(api)
    takeover = await api.put(f"/academies/{tenant.academy_id}", json={"name": "Mine now"},
                             headers=tenant.headers(Role.trust_admin, trust_id=uuid.uuid4()))
    assert takeover.status_code == 403
    central = (await api.get("/academies", headers=tenant.headers(Role.trust_admin, academy_ids=[]))).json()["items"]
    assert [(a["academy_id"], a["name"]) for a in central] == [(str(tenant.academy_id), "Oak Hill Primary")]


async def test_class_lists_are_paginated_with_a_cursor(api, tenant):
    class_id, pupils = await class_of(api, tenant, 7)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(f"/classes/{class_id}/pupils", params=params, headers=tenant.headers())).json()
        seen += [p["pupil_id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(p) for p in pupils) and len(seen) == 7


async def test_a_retried_import_with_the_same_idempotency_key_is_answered_from_the_first(api, tenant, engine):
    await tenant.register(api)
    data = roster_csv(pupil_rows(2))
    headers = {**tenant.headers(), "Content-Type": "text/csv", "Idempotency-Key": "import-1"}
    first = await api.post(f"/academies/{tenant.academy_id}/roster-imports", content=data, headers=headers)
    again = await api.post(f"/academies/{tenant.academy_id}/roster-imports", content=data, headers=headers)
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert len(await events_of(engine, tenant.trust_id)) == 2


async def test_groups_list_and_scope_and_a_group_can_be_screened(api, tenant):
    _, pupils = await class_of(api, tenant, 4)
    created = await api.post(f"/academies/{tenant.academy_id}/groups", headers=tenant.headers(Role.practitioner),
                             json={"name": "Nurture group", "pupil_ids": [str(p) for p in pupils[:2]]})
    assert created.status_code == 201
    group_id = created.json()["group_id"]
    group = (await api.get(f"/groups/{group_id}", headers=tenant.headers())).json()
    assert group["pupil_ids"] == sorted(str(p) for p in pupils[:2])
    groups = (await api.get(f"/academies/{tenant.academy_id}/groups", headers=tenant.headers())).json()["items"]
    assert [g["name"] for g in groups] == ["Nurture group"]
    assert (await api.get(f"/groups/{group_id}", headers=tenant.headers(academy_ids=[uuid.uuid4()]))).status_code == 403
    stranger = await api.post(f"/academies/{tenant.academy_id}/groups", headers=tenant.headers(),
                              json={"name": "Mixed", "pupil_ids": [str(uuid.uuid4())]})
    assert stranger.status_code == 404
    groups = (await api.get(f"/academies/{tenant.academy_id}/groups", headers=tenant.headers())).json()["items"]
    assert [g["name"] for g in groups] == ["Nurture group"]

    screening = (await api.post("/assessments", headers=tenant.headers(), json={
        "group_id": group_id, "strands": ["being"], "framework_version": "flourish-sample-1"})).json()
    shown = (await api.get(f"/screenings/{screening['screening_id']}", headers=tenant.headers())).json()
    assert shown["group_id"] == group_id and {a["pupil_id"] for a in shown["assessments"]} == {str(p) for p in pupils[:2]}
    listed = (await api.get(f"/pupils/{pupils[0]}/assessments", headers=tenant.headers())).json()["items"]
    assert [a["screening_id"] for a in listed] == [screening["screening_id"]]


async def test_academies_are_listed_within_scope_and_the_trust_can_be_named(api, tenant):
    other = uuid.uuid4()
    await tenant.register(api)
    await tenant.register(api, other)
    renamed = await api.put("/trust", json={"name": "Oak Hill Learning Trust"}, headers=tenant.headers(Role.trust_admin))
    assert renamed.status_code == 200
    staff = (await api.get("/academies", headers=tenant.headers())).json()["items"]
    central = (await api.get("/academies", headers=tenant.headers(Role.trust_admin, academy_ids=[]))).json()["items"]
    assert [a["academy_id"] for a in staff] == [str(tenant.academy_id)]
    assert {a["academy_id"] for a in central} == {str(tenant.academy_id), str(other)}
    schema = (await api.get("/framework-schema", headers=tenant.headers())).json()
    assert {"version", "strands", "levels", "threshold_percent"} <= set(schema["properties"])


async def test_reading_a_pupils_personal_data_is_audited_and_a_service_reads_only_attributes(api, tenant, engine):
    await tenant.register(api)
    report = (await import_roster(api, tenant, roster_csv(pupil_rows(1)))).json()
    pupil = report["enrolled"][0]["pupil_id"]

    by_staff = await api.get(f"/pupils/{pupil}", headers=tenant.headers(subject="senco-9"))
    service = tenant.headers(Role.service, subject="service:reporting")
    by_service = await api.get(f"/pupils/{pupil}", headers=service)
    attributes = await api.get(f"/pupils/{pupil}/attributes", headers=service)
    # Another service's client (planning) does not read them; nor does staff (the route is the service's).
    by_planning = await api.get(f"/pupils/{pupil}/attributes",
                                headers=tenant.headers(Role.service, subject="service:planning", client="planning"))
    by_staff_attributes = await api.get(f"/pupils/{pupil}/attributes", headers=tenant.headers(subject="senco-9"))

    assert by_staff.status_code == 200 and by_staff.json()["legal_surname"]
    assert by_service.status_code == 403, by_service.text  # a service reads no names, DOB or UPN
    assert attributes.status_code == 200, attributes.text
    assert set(attributes.json()) == {"pupil_id", "academy_id", "gender", "year_group"}
    assert (attributes.json()["gender"], attributes.json()["year_group"]) == (by_staff.json()["gender"],
                                                                            by_staff.json()["year_group"])
    assert by_planning.status_code == by_staff_attributes.status_code == 403
    assert by_planning.headers["content-type"] == "application/problem+json"
    events = await events_of(engine, tenant.trust_id)
    reads = [data for _, event_type, data in events if event_type == "flourish.audit.PersonalDataRead.v1"]
    assert [(r["pupil_id"], r["actor"], r["data_categories"]) for r in reads] == [
        (pupil, "senco-9", ["roster_personal_data"]),
        (pupil, "service:reporting", ["pupil_attributes"]),
    ]
    refused = [data for _, event_type, data in events if event_type == "flourish.audit.AccessRefused.v1"]
    assert [(r["refusal"], r["actor"], r["client"], r["route"], r["pupil_id"]) for r in refused] == [
        ("client_not_allowed", "service:planning", "planning", "/pupils/{pupil_id}/attributes", pupil)]


async def _personal_data_rows(engine, tenant) -> int:
    return await count(engine, "SELECT count(*) FROM assessment.pupil_personal_data WHERE academy_id = :a", a=tenant.academy_id)
