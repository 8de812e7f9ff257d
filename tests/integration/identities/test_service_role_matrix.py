"""Issue 17 item 2, the role matrix for `service`: a Flourish service's own token — of every valid
client — reads no name, date of birth or UPN through any route of the four services.

A pupil is planted with distinctive personal data (names, a date of birth, a UPN) and a parent's
name and email; then every operation of the four OpenAPI documents is called with a `service`
token of each client, its path and required query parameters filled with the planted ids, and every
body searched for the planted values. The routes a service does use still answer it (the data key,
the pupil's attributes, the sharing decision), so the matrix is not vacuously empty.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.auth import Role
from shared.settings import SERVICE_NAMES
from tests.integration.assessment.helpers import upn
from tests.integration.identities.test_identities import Platform
from tests.integration.kernel.helpers import eventually

HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
SURNAME, FORENAME, PARENT, EMAIL = "Quenterbury", "Ximenaya", "Ottoline Parentsworth", "ottoline.home@example.org"
DOB_FORMS = ("2016-02-29", "29/02/2016", "29 February 2016")


async def test_no_route_gives_a_service_token_a_name_a_date_of_birth_or_a_upn(platform: Platform) -> None:
    p = platform
    senco = p.as_(Role.senco)
    assert (await p.clients["assessment"].put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"},
                                              headers=p.as_(Role.trust_admin))).is_success
    number = upn()
    csv = f"{HEADER}\r\n{number},{SURNAME},{FORENAME},29/02/2016,F,4,4B,\r\n".encode()
    imported = await p.clients["assessment"].post(f"/academies/{p.academy_id}/roster-imports", content=csv,
                                                  headers={**senco, "Content-Type": "text/csv"})
    assert imported.status_code == 200, imported.text
    pupil = imported.json()["enrolled"][0]["pupil_id"]
    [klass] = (await p.clients["assessment"].get(f"/academies/{p.academy_id}/classes", headers=senco)).json()["items"]

    async def decided() -> Any:  # once consent knows the pupil (PupilEnrolled, on Kafka)
        response = await p.clients["consent"].post(f"/pupils/{pupil}/consents", headers=senco, json={
            "purpose": "share_camhs", "decision": "granted", "decided_at": datetime.now(UTC).isoformat(),
            "method": "paper", "given_by": {"name": PARENT, "relationship": "mother", "email": EMAIL}})
        return response.json() if response.status_code == 201 else None

    decision = await eventually(decided, timeout=90, interval=0.3)
    planted = (SURNAME, FORENAME, number, PARENT, EMAIL, *DOB_FORMS)
    # Staff do see them (the values are really there to find).
    staff_view = (await p.clients["assessment"].get(f"/pupils/{pupil}", headers=senco)).text
    assert SURNAME in staff_view and number in staff_view and "2016-02-29" in staff_view

    ids = {"pupil_id": pupil, "academy_id": str(p.academy_id), "class_id": klass["class_id"],
           "decision_id": decision["decision_id"], "purpose": "share_camhs", "data_category": "assessments",
           "version": "flourish-sample-1", "agency_category": "camhs", "data_kind": "report"}
    answered: dict[tuple[str, str, str], int] = {}
    leaks = []
    for client in SERVICE_NAMES:
        headers = p.service(client)
        for service, app in sorted(p.apps.items()):
            for path, operations in sorted(app.openapi()["paths"].items()):
                for method, operation in sorted(operations.items()):
                    params = operation.get("parameters", [])
                    url = path
                    for param in params:
                        if param["in"] == "path":
                            url = url.replace(f"{{{param['name']}}}", ids.get(param["name"], str(uuid.uuid4())))
                    query = {q["name"]: ids.get(q["name"], "x") for q in params if q["in"] == "query" and q.get("required")}
                    body = {} if method in ("post", "put", "patch") else None
                    response = await p.clients[service].request(method.upper(), url, headers=headers, params=query,
                                                                json=body)
                    answered[(client, service, f"{method.upper()} {path}")] = response.status_code
                    text = response.text
                    leaks += [(client, service, method, path, value) for value in planted if value in text]
    assert leaks == []

    # What a service uses still answers the clients that use it.
    assert answered[("reporting", "consent", "GET /pupils/{pupil_id}/data-key")] == 200
    assert answered[("planning", "consent", "GET /pupils/{pupil_id}/data-key")] == 200
    assert answered[("consent", "consent", "GET /pupils/{pupil_id}/data-key")] == 403
    assert answered[("reporting", "assessment", "GET /pupils/{pupil_id}/attributes")] == 200
    assert answered[("reporting", "consent", "GET /sharing-decisions")] == 200
    assert answered[("reporting", "consent", "GET /pupils/{pupil_id}/family-contact")] == 200
    # And what holds names refuses every client: the roster record, class lists, the export.
    for client in SERVICE_NAMES:
        assert answered[(client, "assessment", "GET /pupils/{pupil_id}")] == 403
        assert answered[(client, "assessment", "GET /classes/{class_id}/pupils")] == 403
        assert answered[(client, "consent", "GET /pupils/{pupil_id}/subject-access")] == 403
        assert answered[(client, "consent", "GET /consent-decisions/{decision_id}/receipt")] == 403
    assert len({route for _, service, route in answered}) > 60
