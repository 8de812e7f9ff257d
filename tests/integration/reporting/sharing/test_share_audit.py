"""What a share entry in the audit ledger says, end to end through the public APIs: a share made
with consent and one made on another lawful basis (legal obligation, with its policy reference),
both delivered to a real webhook receiver, then asked of `GET /audit/shares` (JSON and CSV) by a
DPO: the basis, whether consent was obtained, the record and version, the agency's id, name and
category, the document's kind, id and hash; and after the consent is withdrawn, the deletion
notice that went out for the first share and not for the second."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import timedelta
from typing import Any

import orjson

from shared.auth import Role
from tests.integration.reporting.sharing.conftest import Receiver, Stack, eventually

POLICY = "Working Together to Safeguard Children 2023, s47"


def dpo(stack: Stack) -> dict[str, str]:
    token = stack.issuer.issue("dpo-9", [Role.dpo], stack.consent.trust_id, [])
    return {"Authorization": f"Bearer {token}"}


async def shares(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    response = await stack.client.get("/audit/shares", headers=dpo(stack), params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def shares_csv(stack: Stack, **params: Any) -> list[dict[str, str]]:
    response = await stack.client.get("/audit/shares.csv", headers=dpo(stack), params=params)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_share_entries_say_basis_record_agency_document_and_deletion_notice(stack: Stack, receiver: Receiver) -> None:
    consented, safeguarded = await stack.consent.enrol(2)
    camhs = await stack.agency(receiver.url)
    social = (await stack.client.post("/sharing/agencies", headers=stack.staff(Role.trust_admin), json={
        "category": "social_care", "organisation": "Northshire Children's Services", "endpoint_url": receiver.url})).json()
    await stack.grant(consented)
    now = stack.consent.clock()
    basis = await stack.consent.client.post(f"/pupils/{safeguarded}/lawful-bases", headers=stack.consent.senco, json={
        "agency_category": "social_care", "basis": "legal_obligation", "reason": "Section 47 enquiry",
        "policy_reference": POLICY, "decided_at": (now - timedelta(minutes=1)).isoformat(),
        "valid_until": (now + timedelta(days=14)).isoformat()})
    assert basis.status_code == 201, basis.text

    first_doc = (await stack.documents(consented)).assessment_id
    second_doc = (await stack.documents(safeguarded)).assessment_id
    first = (await stack.share(camhs["agency_id"], consented)).json()
    second = (await stack.share(social["agency_id"], safeguarded)).json()
    assert first["status"] == second["status"] == "accepted", (first, second)
    assert second["lawful_basis"] == "legal_obligation" and second["consent_obtained"] is False

    async def both_delivered() -> dict[str, dict[str, Any]] | None:
        found = {i["share_id"]: i for i in await shares(stack)}
        done = all(any(o["action"] == "share_delivered" for o in found.get(s["share_id"], {}).get("outcomes", []))
                   for s in (first, second))
        return found if done else None

    found = await eventually(both_delivered, timeout=60)
    one, two = found[first["share_id"]], found[second["share_id"]]
    # The agency checks the hash against what it received.
    sent = {d["share_id"]: d for d in (orjson.loads(r["body"])["data"] for r in receiver.received)}
    digests = {s: hashlib.sha256(orjson.dumps(d["document"], option=orjson.OPT_SORT_KEYS)).hexdigest()
               for s, d in sent.items()}
    assert digests == {first["share_id"]: first["document_sha256"], second["share_id"]: second["document_sha256"]}
    digest, digest_two = first["document_sha256"], second["document_sha256"]

    assert one["lawful_basis"] == "consent" and one["consent_obtained"] is True and one["policy_reference"] is None
    assert one["consent_id"] == one["basis_id"] and one["consent_in_force"] is True
    assert one["basis_stream_id"] == f"consent-{consented}-share_camhs" and one["record_version"] == 1
    assert (one["agency_id"], one["agency_name"], one["agency_category"]) == (camhs["agency_id"], "North CAMHS", "camhs")
    assert (one["document_kind"], one["document_id"], one["document_sha256"]) == ("report", str(first_doc), digest)
    assert one["delivery_id"] == first["delivery_id"] and one["shared_by"] == "senco-1"

    assert two["lawful_basis"] == "legal_obligation" and two["consent_obtained"] is False
    assert two["policy_reference"] == POLICY and two["consent_id"] is None
    assert two["basis_id"] == basis.json()["decision_id"]
    assert two["basis_stream_id"] == f"consent-{safeguarded}-share_social_care" and two["record_version"] == 1
    assert (two["agency_name"], two["agency_category"]) == ("Northshire Children's Services", "social_care")
    assert (two["document_id"], two["document_sha256"]) == (str(second_doc), digest_two)
    assert one["deletion_notice"] is None and two["deletion_notice"] is None
    # Nothing personal in clear: no name, no reason for the basis (it may name people).
    assert "Jane Example" not in str(found) and "Section 47 enquiry" not in str(found)

    by_basis = await shares(stack, lawful_basis="legal_obligation")
    assert [i["share_id"] for i in by_basis] == [second["share_id"]]

    # Consent is withdrawn: the agency that received the first share is told to delete it.
    await stack.withdraw(consented)

    async def notice_recorded() -> list[dict[str, Any]] | None:
        items = await shares(stack, deletion_notice="true")
        return items or None

    [told] = await eventually(notice_recorded, timeout=60)
    notices = [r for r in receiver.received if orjson.loads(r["body"])["type"] == "share.deletion_requested"]
    assert len(notices) == 1
    assert told["share_id"] == first["share_id"] and told["deletion_notice"] == "delivered"
    [notice] = told["deletion_notices"]
    assert notice["delivery_id"] == notices[0]["headers"]["webhook-id"] and notice["status_code"] == 204
    assert [i["share_id"] for i in await shares(stack, deletion_notice="false")] == [second["share_id"]]

    # A share asked after the withdrawal is blocked: its entry keeps the reason and the agency.
    blocked = (await stack.share(camhs["agency_id"], consented)).json()
    assert blocked["status"] == "blocked"

    async def blocked_recorded() -> dict[str, Any] | None:
        items = {i["share_id"]: i for i in await shares(stack, include_blocked="true")}
        return items.get(blocked["share_id"])

    entry = await eventually(blocked_recorded, timeout=60)
    assert entry["action"] == "share_blocked" and entry["reason"] == "consent_withdrawn"
    assert entry["agency_name"] == "North CAMHS" and entry["basis_stream_id"] == f"consent-{consented}-share_camhs"
    assert entry["lawful_basis"] is None and entry["consent_obtained"] is False

    # The CSV says the same, a column each.
    rows = {r["share_id"]: r for r in await shares_csv(stack)}
    csv_one, csv_two = rows[first["share_id"]], rows[second["share_id"]]
    assert csv_one["lawful_basis"] == "consent" and csv_one["consent_obtained"] == "true"
    assert csv_one["agency_name"] == "North CAMHS" and csv_one["document_sha256"] == digest
    assert csv_one["document_id"] == str(first_doc) and csv_one["record_version"] == "1"
    assert csv_one["basis_id"] == one["basis_id"] and csv_one["basis_stream_id"] == one["basis_stream_id"]
    assert csv_one["deletion_notice"] == "delivered" and csv_one["deletion_notice_delivery_id"] == notice["delivery_id"]
    assert csv_one["deletion_notice_at"]
    assert csv_two["lawful_basis"] == "legal_obligation" and csv_two["consent_obtained"] == "false"
    assert csv_two["policy_reference"] == POLICY and csv_two["agency_name"] == "Northshire Children's Services"
    assert csv_two["deletion_notice"] == "" and csv_two["agency_category"] == "social_care"
    filtered = await shares_csv(stack, lawful_basis="consent", deletion_notice="true")
    assert [r["share_id"] for r in filtered] == [first["share_id"]]


async def test_an_agency_name_the_ledger_could_not_record_is_refused_at_registration(stack: Stack, receiver: Receiver) -> None:
    for name in ('North "CAMHS"', "North\\CAMHS", "North\nCAMHS"):
        response = await stack.client.post("/sharing/agencies", headers=stack.staff(Role.trust_admin), json={
            "category": "camhs", "organisation": name, "endpoint_url": receiver.url})
        assert response.status_code == 422, (name, response.text)
