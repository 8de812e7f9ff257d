"""The consent ledger through the consent service's API, on the real Kafka and PostgreSQL:
recording, withdrawing, deciding, receipts, lawful bases, roles, idempotency and bad input."""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson

from shared.auth import Role
from shared.events.envelope import decode
from tests.integration.consent.conftest import Consent, of_pupils, raw_bytes, read_until, types_of

WITHDRAWN = "flourish.consent.ConsentWithdrawn.v1"


async def test_a_parent_grants_sharing_then_withdraws_and_the_next_decision_is_deny(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    before = (await consent.decision(pupil)).json()
    granted = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                                        json=consent.consent_body("share_camhs", name="Priya Parentname"))
    allowed = (await consent.decision(pupil)).json()
    withdrawn = await consent.client.post(f"/pupils/{pupil}/consents/share_camhs/withdrawal", headers=consent.senco,
                                          json=consent.withdrawal_body(name="Priya Parentname"))
    denied = (await consent.decision(pupil)).json()

    assert before["decision"] == "deny" and before["reason"] == "no_record"
    assert granted.status_code == 201, granted.text
    consent_id = granted.json()["consent_id"]
    assert allowed["decision"] == "allow" and allowed["lawful_basis"] == "consent" and allowed["consent_obtained"]
    assert allowed["record"] == {"stream_id": f"consent-{pupil}-share_camhs", "version": 1, "decision_id": consent_id}
    assert withdrawn.status_code == 201, withdrawn.text
    assert denied["decision"] == "deny" and denied["reason"] == "consent_withdrawn"
    assert denied["record"]["version"] == 2

    # ConsentWithdrawn reaches Kafka, naming the grant it withdrew; the parent's name is sealed.
    records = await read_until(consent.bootstrap, consent.topic,
                               lambda rs: WITHDRAWN in types_of(of_pupils(rs, pupil)))
    envelopes = {e.id: e for e in (decode(r.headers, r.value) for r in of_pupils(records, pupil))}
    withdrawals = [e for e in envelopes.values() if e.type == WITHDRAWN]
    assert len(withdrawals) == 1 and str(withdrawals[0].data.consent_id) == consent_id
    assert withdrawals[0].data.given_by.startswith("fl1.")
    assert b"Priya" not in raw_bytes(records)


async def test_withdrawal_while_a_share_is_in_flight_flips_the_decision_at_delivery(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                              json=consent.consent_body("share_social_care"))
    at_request = (await consent.decision(pupil, "social_care", "action_plan")).json()
    # The share is queued for delivery; the parent withdraws before it goes.
    await consent.client.post(f"/pupils/{pupil}/consents/share_social_care/withdrawal", headers=consent.senco,
                              json=consent.withdrawal_body())
    at_delivery = (await consent.decision(pupil, "social_care", "action_plan")).json()

    assert at_request["decision"] == "allow"
    assert at_delivery["decision"] == "deny" and at_delivery["record"]["version"] > at_request["record"]["version"]
    records = await read_until(consent.bootstrap, consent.topic,
                               lambda rs: WITHDRAWN in types_of(of_pupils(rs, pupil)))
    assert list(dict.fromkeys(types_of(of_pupils(records, pupil)))) == [
        "flourish.consent.ConsentGranted.v1", WITHDRAWN]


async def test_consent_covers_only_what_it_says_and_expires(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    now = consent.clock()
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        "share_speech_and_language", covers=["profile"], valid_until=(now + timedelta(days=30)).isoformat()))

    profile = (await consent.decision(pupil, "speech_and_language", "profile")).json()
    plan = (await consent.decision(pupil, "speech_and_language", "action_plan")).json()
    other_agency = (await consent.decision(pupil, "camhs", "profile")).json()
    consent.clock.fixed = now + timedelta(days=31)
    expired = (await consent.decision(pupil, "speech_and_language", "profile")).json()

    assert profile["decision"] == "allow" and profile["valid_until"] is not None
    assert plan["decision"] == "deny" and plan["reason"] == "kind_of_data_not_covered"
    assert other_agency["decision"] == "deny" and other_agency["reason"] == "no_record"
    assert expired["decision"] == "deny" and expired["reason"] == "consent_expired"


async def test_a_refusal_and_opt_outs_are_recorded_and_shown(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    before = (await consent.client.get(f"/pupils/{pupil}/consents", headers=consent.senco)).json()
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                              json=consent.consent_body("online_processing", decision="refused", method="email"))
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                              json=consent.consent_body("share_local_authority", decision="refused"))
    after = (await consent.client.get(f"/pupils/{pupil}/consents", headers=consent.senco)).json()
    denied = (await consent.decision(pupil, "local_authority")).json()

    by_purpose = {p["purpose"]: p for p in before["purposes"]}
    assert by_purpose["interventions"]["in_force"] and by_purpose["online_processing"]["in_force"]  # opt-out
    assert not any(by_purpose["share_camhs"]["sharing_allowed"].values())  # opt-in
    by_purpose = {p["purpose"]: p for p in after["purposes"]}
    assert by_purpose["online_processing"]["in_force"] is False and by_purpose["interventions"]["in_force"]
    assert by_purpose["share_local_authority"]["status"] == "refused"
    assert denied["reason"] == "consent_refused"


async def test_the_receipt_reads_as_json_text_and_html_and_the_history_holds_no_names(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    granted = (await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        "share_educational_psychology", name="Olu Carer", method="portal",
        given_by={"name": "Olu Carer", "relationship": "foster carer"}))).json()

    as_json = await consent.client.get(f"/consent-decisions/{granted['decision_id']}/receipt", headers=consent.senco)
    as_text = await consent.client.get(f"/consent-decisions/{granted['decision_id']}/receipt",
                                       headers={**consent.senco, "Accept": "text/plain"})
    as_html = await consent.client.get(f"/consent-decisions/{granted['decision_id']}/receipt?format=html",
                                       headers=consent.senco)
    history = (await consent.client.get(f"/pupils/{pupil}/consents/history", headers=consent.senco)).json()

    receipt = as_json.json()
    assert receipt["given_by"] == {"name": "Olu Carer", "relationship": "foster carer"}
    assert receipt["method"] == "portal" and receipt["purpose"] == "share_educational_psychology"
    assert receipt["recorded_by"] == "senco-1" and receipt["decision"] == "granted"
    assert "Olu Carer" in as_text.text and as_text.headers["content-type"].startswith("text/plain")
    assert "Olu Carer" in as_html.text and as_html.text.startswith("<!doctype html>")
    assert len(history["items"]) == 1 and b"Olu" not in orjson.dumps(history)


async def test_history_pages_with_a_cursor(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    for purpose in ("share_camhs", "share_other", "share_social_care"):
        await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(purpose))
    first = (await consent.client.get(f"/pupils/{pupil}/consents/history?limit=2", headers=consent.senco)).json()
    second = (await consent.client.get(f"/pupils/{pupil}/consents/history",
                                       params={"limit": 2, "cursor": first["next_cursor"]}, headers=consent.senco)).json()
    assert [i["purpose"] for i in first["items"] + second["items"]] == ["share_camhs", "share_other", "share_social_care"]
    assert second["next_cursor"] is None


async def test_safeguarding_sharing_rests_on_another_lawful_basis_and_the_record_says_so(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    now = consent.clock()
    recorded = await consent.client.post(f"/pupils/{pupil}/lawful-bases", headers=consent.senco, json={
        "agency_category": "social_care", "basis": "legal_obligation", "reason": "Section 47 enquiry",
        "policy_reference": "Working Together to Safeguard Children 2023", "decided_at": now.isoformat(),
        "valid_until": (now + timedelta(days=14)).isoformat()})
    decision = (await consent.decision(pupil, "social_care")).json()
    camhs = (await consent.decision(pupil, "camhs")).json()

    assert recorded.status_code == 201, recorded.text
    assert decision["decision"] == "allow" and decision["lawful_basis"] == "legal_obligation"
    assert decision["consent_obtained"] is False and decision["record"]["decision_id"] == recorded.json()["decision_id"]
    assert camhs["decision"] == "deny"
    history = (await consent.client.get(f"/pupils/{pupil}/consents/history", headers=consent.senco)).json()
    [entry] = history["items"]
    assert entry["kind"] == "lawful_basis" and entry["recorded_by"] == "senco-1"
    assert entry["policy_reference"].startswith("Working Together")
    [event] = await consent.events("flourish.consent.LawfulBasisRecorded.v1")
    assert event["data"]["reason"].startswith("fl1.") and "Section 47" not in orjson.dumps(event["data"]).decode()


async def test_only_staff_with_the_right_role_record_or_withdraw_consent(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    body = consent.consent_body()
    anonymous = await consent.client.post(f"/pupils/{pupil}/consents", json=body)
    practitioner = await consent.client.post(f"/pupils/{pupil}/consents", json=body,
                                             headers=consent.token(Role.practitioner))
    service = await consent.client.post(f"/pupils/{pupil}/consents", json=body, headers=consent.service)
    withdraw = await consent.client.post(f"/pupils/{pupil}/consents/share_camhs/withdrawal",
                                         json=consent.withdrawal_body(), headers=consent.token(Role.practitioner))
    dpo = await consent.client.post(f"/pupils/{pupil}/consents", json=body, headers=consent.dpo)

    assert anonymous.status_code == 401
    assert practitioner.status_code == service.status_code == withdraw.status_code == 403
    assert practitioner.headers["content-type"] == "application/problem+json"
    assert dpo.status_code == 201
    assert len(await consent.events()) == 1


async def test_an_idempotency_key_replays_the_first_response_and_records_once(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    headers = {**consent.senco, "Idempotency-Key": "form-2026-001"}
    body = consent.consent_body("share_other")
    first = await consent.client.post(f"/pupils/{pupil}/consents", headers=headers, json=body)
    again = await consent.client.post(f"/pupils/{pupil}/consents", headers=headers, json=body)
    reused = await consent.client.post(f"/pupils/{pupil}/consents", headers=headers,
                                       json=consent.consent_body("share_camhs"))

    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert reused.status_code == 422
    assert len(await consent.events("flourish.consent.ConsentGranted.v1")) == 1


async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    [elsewhere] = await consent.enrol(academy_id=consent.other_academy_id)
    now = consent.clock()
    unknown_purpose = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                                                json=consent.consent_body("share_with_the_newspaper"))
    unknown_category = await consent.decision(pupil, "newspaper")
    never_granted = await consent.client.post(f"/pupils/{pupil}/consents/share_camhs/withdrawal",
                                              headers=consent.senco, json=consent.withdrawal_body())
    future = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        decided_at=(now + timedelta(days=1)).isoformat()))
    no_zone = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        decided_at="2026-01-01T10:00:00"))
    backwards = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        valid_until=(now - timedelta(days=1)).isoformat()))
    unknown_pupil = await consent.client.post(f"/pupils/{uuid.uuid4()}/consents", headers=consent.senco,
                                              json=consent.consent_body())
    other_academy = await consent.client.post(f"/pupils/{elsewhere}/consents", headers=consent.senco,
                                              json=consent.consent_body())
    other_academy_decision = await consent.decision(elsewhere, headers=consent.token(Role.practitioner))
    other_trust_decision = await consent.decision(pupil, headers=consent.token(Role.service, trust_id=uuid.uuid4()))
    unknown_pupil_decision = await consent.decision(uuid.uuid4())
    basis_as_consent = await consent.client.post(f"/pupils/{pupil}/lawful-bases", headers=consent.senco, json={
        "agency_category": "camhs", "basis": "consent", "reason": "x", "policy_reference": "p",
        "decided_at": now.isoformat(), "valid_until": (now + timedelta(days=1)).isoformat()})

    assert unknown_purpose.status_code == 422 and unknown_category.status_code == 422
    assert "share_with_the_newspaper" not in unknown_purpose.text  # problems never echo input
    assert never_granted.status_code == 409
    assert future.status_code == 422 and "future" in future.json()["detail"]
    assert no_zone.status_code == 422 and backwards.status_code == 422
    assert unknown_pupil.status_code == 404 and unknown_pupil_decision.status_code == 404
    assert other_academy.status_code == 403 and other_academy_decision.status_code == 403
    assert other_trust_decision.status_code == 403
    assert basis_as_consent.status_code == 422
    for response in (unknown_purpose, never_granted, future, unknown_pupil, other_academy):
        assert response.headers["content-type"] == "application/problem+json"
    assert await consent.events() == []


async def test_a_back_dated_decision_cannot_rewrite_a_later_one(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    now = consent.clock()
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body())
    await consent.client.post(f"/pupils/{pupil}/consents/share_camhs/withdrawal", headers=consent.senco,
                              json=consent.withdrawal_body())
    recorded = await consent.events()
    older = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        decided_at=(now - timedelta(days=7)).isoformat()))
    assert older.status_code == 422
    assert (await consent.decision(pupil)).json()["decision"] == "deny"
    assert await consent.events() == recorded


async def test_reading_a_receipt_is_written_to_the_audit_as_a_personal_data_read(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    granted = (await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                                         json=consent.consent_body("share_camhs"))).json()
    await consent.client.get(f"/consent-decisions/{granted['decision_id']}/receipt", headers=consent.senco)

    reads = [e["data"] for e in await consent.events("flourish.audit.PersonalDataRead.v1")
             if e["data"]["pupil_id"] == str(pupil)]
    assert len(reads) == 1
    assert reads[0]["data_categories"] == ["consent_receipt"] and reads[0]["actor"] == "senco-1"
