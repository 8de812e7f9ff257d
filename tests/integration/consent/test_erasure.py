"""Per-pupil data keys, erasure and subject access, on the real Kafka and PostgreSQL: after
erasure no plaintext of the pupil's name, date of birth or UPN exists in the consent service's
tables or topic, nor readable in what another service sealed with shared/datakeys.py, while other
pupils' data still reads."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import httpx
import orjson
import pytest
from sqlalchemy import select

from services.consent.tables import data_keys
from shared.auth import Role
from shared.datakeys import DataKeyClient, DataKeyDestroyed, DataKeyUnavailable, SealedFieldUnreadable
from shared.events.assessment import PupilEnrolled
from shared.events.envelope import decode
from shared.messaging.producer import OutgoingRecord
from shared.messaging.topics import ensure_topics
from tests.integration.consent.conftest import Consent, of_pupils, raw_bytes, read_topic, read_until, scan_schema, types_of

ERASED = {"name": "Zebedee Quillfeather", "date_of_birth": "2016-02-29", "upn": "A123456789012",
          "parent": "Marguerite Quillfeather"}
KEPT = {"name": "Ophelia Thistlewood", "date_of_birth": "2017-07-14", "upn": "B987654321098",
        "parent": "Barnaby Thistlewood"}


def needles(person: dict[str, str]) -> list[str]:
    day = person["date_of_birth"]
    return [person["name"], person["name"].split()[0], person["upn"], person["parent"], day,
            f"{day[8:10]}/{day[5:7]}/{day[0:4]}"]


def key_client(consent: Consent) -> DataKeyClient:
    """How another service gets keys: over authenticated HTTP, as a `service` of the trust."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=consent.app))
    return DataKeyClient("http://consent", lambda trust: consent.service["Authorization"].removeprefix("Bearer "),
                         ttl_s=60, http=http)


async def hold_personal_data(consent: Consent, pupil: uuid.UUID, person: dict[str, str], keys: DataKeyClient,
                             scratch_topic: str) -> str:
    """Everything the consent service and 'another service' keep about one pupil."""
    granted = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        "share_camhs", given_by={"name": person["parent"], "relationship": "mother"},
        evidence_reference=f"signed form for {person['name']} (UPN {person['upn']})"))
    assert granted.status_code == 201, granted.text
    clock = await consent.client.put(f"/pupils/{pupil}/retention-clock", headers=consent.service,
                                     json={"date_of_birth": person["date_of_birth"]})
    assert clock.status_code == 200, clock.text
    # Another service seals its own event payload with the pupil's key and publishes it.
    key = await keys.key_for(consent.trust_id, pupil)
    sealed = key.seal_json({"name": person["name"], "date_of_birth": person["date_of_birth"], "upn": person["upn"]},
                           "assessment.pupil_details")
    await consent.publisher.send(OutgoingRecord(scratch_topic, str(pupil).encode(),
                                                orjson.dumps({"pupil_id": str(pupil), "details": sealed}), []))
    return granted.json()["decision_id"]


async def test_after_erasure_no_plaintext_remains_and_other_pupils_still_read(consent: Consent) -> None:
    erased, kept = await consent.enrol(2)
    scratch = f"{consent.prefix}scratch"
    await ensure_topics(consent.bootstrap, [scratch])
    keys = key_client(consent)
    receipt_erased = await hold_personal_data(consent, erased, ERASED, keys, scratch)
    receipt_kept = await hold_personal_data(consent, kept, KEPT, keys, scratch)
    engine = consent.app.state.runtime.engine

    erasure = await consent.client.post(f"/pupils/{erased}/erasure", headers=consent.dpo,
                                        json={"reason": "right_to_erasure"})
    assert erasure.status_code == 201, erasure.text

    # PostgreSQL: no plaintext of either pupil anywhere in the consent service's schema (it was
    # sealed from the start), and the erased pupil's wrapped key is gone.
    assert await scan_schema(engine, "consent", needles(ERASED) + needles(KEPT)) == {}
    assert "consent_records" in await scan_schema(engine, "consent", [str(erased)])  # the scan does see rows
    async with engine.connect() as conn:
        key_row = (await conn.execute(data_keys.select().where(data_keys.c.pupil_id == erased))).one()
    assert key_row.wrapped_key is None and key_row.destroyed_at is not None

    # Kafka: the raw bytes of the consent topic and of the other service's topic hold no plaintext.
    consent_records = of_pupils(await read_until(
        consent.bootstrap, consent.topic,
        lambda rs: "flourish.consent.PupilErased.v1" in types_of(of_pupils(rs, erased))
        and "flourish.consent.ConsentGranted.v1" in types_of(of_pupils(rs, kept))), erased, kept)
    scratch_records = await read_topic(consent.bootstrap, scratch, expected=2)
    wire = raw_bytes(consent_records + scratch_records).lower()
    assert not [n for n in needles(ERASED) + needles(KEPT) if n.lower().encode() in wire]
    assert str(erased).encode() in wire  # the pseudonymous id is there: the scan reads the bytes
    erasures = {e.id: e for e in (decode(r.headers, r.value) for r in consent_records)
                if e.type == "flourish.consent.PupilErased.v1"}
    assert [e.data.pupil_id for e in erasures.values()] == [erased]

    # What was sealed for the erased pupil no longer opens anywhere: the key service answers 410
    # (and keeps answering it), the client drops its copy; the kept pupil's data still reads.
    keys.forget(erased)
    with pytest.raises(DataKeyDestroyed):
        await keys.key_for(consent.trust_id, erased)
    kept_key = await keys.key_for(consent.trust_id, kept)
    details = {orjson.loads(r.value)["pupil_id"]: orjson.loads(r.value)["details"] for r in scratch_records}
    assert kept_key.open_json(details[str(kept)], "assessment.pupil_details")["upn"] == KEPT["upn"]
    with pytest.raises(SealedFieldUnreadable):
        kept_key.open_json(details[str(erased)], "assessment.pupil_details")
    assert (await consent.client.get(f"/pupils/{erased}/data-key", headers=consent.service)).status_code == 410
    assert (await consent.client.get(f"/consent-decisions/{receipt_erased}/receipt",
                                     headers=consent.senco)).status_code == 410
    kept_receipt = (await consent.client.get(f"/consent-decisions/{receipt_kept}/receipt", headers=consent.senco)).json()
    assert kept_receipt["given_by"]["name"] == KEPT["parent"] and KEPT["upn"] in kept_receipt["evidence_reference"]

    # The audit's non-personal record that it happened.
    record = (await consent.client.get(f"/pupils/{erased}/erasure", headers=consent.token(Role.auditor))).json()
    assert record["reason"] == "right_to_erasure" and record["key_destroyed"] is True
    assert record["requested_by"] == "dpo-1" and record["key_material_present"] is False
    decision = (await consent.decision(erased)).json()
    assert decision["decision"] == "deny" and decision["reason"] == "pupil_erased"
    await keys.aclose()


async def test_the_data_key_api_serves_services_of_the_trust_only_and_the_client_caches(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    engine = consent.app.state.runtime.engine
    keys_before = await _key_owners(engine, pupil)
    staff = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.dpo)
    anonymous = await consent.client.get(f"/pupils/{pupil}/data-key")
    other_trust = await consent.client.get(f"/pupils/{pupil}/data-key",
                                           headers=consent.token(Role.service, trust_id=uuid.uuid4(), academies=[]))
    never_seen = uuid.uuid4()  # a key would be made on the first request for it: refusals make none
    for headers in (consent.dpo, {}):
        assert (await consent.client.get(f"/pupils/{never_seen}/data-key", headers=headers)).status_code in (401, 403)
    assert await _key_owners(engine, pupil) == keys_before and await _key_owners(engine, never_seen) == []
    first = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)
    second = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)

    assert staff.status_code == 403 and anonymous.status_code == 401 and other_trust.status_code == 403
    assert await _key_owners(engine, pupil) == [consent.trust_id]
    assert first.status_code == 200 and first.json() == second.json()  # one key per pupil, for good
    assert first.json()["algorithm"] == "AES-256-GCM" and first.headers["cache-control"] == "no-store"

    keys = key_client(consent)
    a = await keys.key_for(consent.trust_id, pupil)
    b = await keys.key_for(consent.trust_id, pupil)
    assert a.material == b.material and keys.fetches == 1
    with pytest.raises(DataKeyUnavailable):
        await keys.key_for(uuid.uuid4(), pupil)  # asked in another trust's name: refused, fail closed
    # A key for a pupil whose enrolment has not arrived yet is made on first request (the
    # assessment service seals a new pupil's details before this service has consumed them).
    unseen = uuid.uuid4()
    made = await keys.key_for(consent.trust_id, unseen)
    assert made.pupil_id == unseen
    await keys.aclose()


async def test_erasure_of_an_unknown_or_another_academys_pupil_is_refused_and_changes_nothing(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    unknown = await consent.client.post(f"/pupils/{uuid.uuid4()}/erasure", headers=consent.dpo)
    other_trust = await consent.client.post(f"/pupils/{pupil}/erasure",
                                            headers=consent.token(Role.dpo, trust_id=uuid.uuid4(), academies=[]))
    senco = await consent.client.post(f"/pupils/{pupil}/erasure", headers=consent.senco)
    first = await consent.client.post(f"/pupils/{pupil}/erasure", headers=consent.dpo)
    again = await consent.client.post(f"/pupils/{pupil}/erasure", headers=consent.dpo)

    # Row-level security: another trust's pupil answers like an unknown one.
    assert unknown.status_code == 404 and other_trust.status_code == 404 and senco.status_code == 403
    assert first.status_code == 201 and again.status_code == 410
    # One erasure: its event, and the admin fact that the pupil's data key was destroyed.
    assert [e["event_type"] for e in await consent.events()] == [
        "flourish.consent.PupilErased.v1", "flourish.audit.AdminActionTaken.v1"]
    # An enrolment replayed after erasure does not bring the pupil back.
    await consent.publish(consent.assessment_event(PupilEnrolled(pupil_id=pupil, enrolled_on=date(2026, 1, 5))))
    [later] = await consent.enrol()  # the consumer has moved past the replayed enrolment
    assert later != pupil
    assert (await consent.client.get(f"/pupils/{pupil}/consents", headers=consent.senco)).status_code == 410


async def test_the_subject_access_export_reads_as_json_and_html_while_the_data_exists(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        "interventions", decision="refused", given_by={"name": "Sam Guardian", "relationship": "guardian"}))
    await consent.client.put(f"/pupils/{pupil}/retention-clock", headers=consent.senco,
                             json={"date_of_birth": "2018-05-01"})
    as_json = await consent.client.get(f"/pupils/{pupil}/subject-access", headers=consent.dpo)
    as_html = await consent.client.get(f"/pupils/{pupil}/subject-access", headers={**consent.dpo, "Accept": "text/html"})
    senco = await consent.client.get(f"/pupils/{pupil}/subject-access", headers=consent.senco)
    await consent.client.post(f"/pupils/{pupil}/erasure", headers=consent.dpo)
    after = await consent.client.get(f"/pupils/{pupil}/subject-access", headers=consent.dpo)

    section = as_json.json()["services"]["consent"]
    assert section["roster"]["date_of_birth"] == "2018-05-01"
    assert section["consent_decisions"][0]["given_by"] == {"name": "Sam Guardian", "relationship": "guardian"}
    assert "Sam Guardian" in as_html.text and "2018-05-01" in as_html.text
    assert senco.status_code == 403 and after.status_code == 410
    assert datetime.fromisoformat(as_json.json()["generated_at"]).tzinfo is not None


async def test_a_retention_clock_date_in_the_future_is_refused(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    response = await consent.client.put(f"/pupils/{pupil}/retention-clock", headers=consent.service,
                                        json={"date_of_birth": "2999-01-01"})
    export = (await consent.client.get(f"/pupils/{pupil}/subject-access", headers=consent.dpo)).json()
    assert response.status_code == 422 and export["services"]["consent"]["roster"]["date_of_birth"] is None


async def _key_owners(engine, pupil_id: uuid.UUID) -> list[uuid.UUID]:
    """The trusts the consent service holds a data key for this pupil in (one at most, ever)."""
    async with engine.connect() as conn:
        return list((await conn.execute(select(data_keys.c.trust_id).where(data_keys.c.pupil_id == pupil_id))).scalars())
