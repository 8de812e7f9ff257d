"""Documents the platform makes, for the pupil it names (issue 16 item 1), as a SENCo trying to
send what consent does not cover would find it: through the HTTP API, to a real webhook receiver.

- Content in the request (`document`) is refused: 422 problem+json, nothing shared or sent.
- Another pupil's document id, an unknown id, or an id of another kind: 404, the same answer
  each time, nothing shared, nothing sent.
- What the agency receives is the document the platform assembled for that pupil; the SHA-256 of
  `data.document` equals the one ReportShared recorded (asked of the audit ledger), and each
  delivery attempt records the SHA-256 of the exact body it sent.
- Until delivered, the frozen document is ciphertext in the table (sealed with the pupil's key);
  once delivered only its hash stays."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
from sqlalchemy import func, select, update

from services.reporting.readmodels.tables import LIVE as T
from services.reporting.sharing.tables import attempts, deliveries, shares
from shared.auth import Role
from shared.datakeys import SEALED_PREFIX
from tests.integration.reporting.sharing.conftest import Receiver, Stack, eventually


async def _nothing_shared(stack: Stack, *pupils: uuid.UUID) -> None:
    async with stack.engine.connect() as conn:
        for table in (shares, deliveries):
            count = await conn.scalar(select(func.count()).select_from(table).where(table.c.pupil_id.in_(pupils)))
            assert count == 0, table.name


async def _audit_entry(stack: Stack, share_id: str) -> dict[str, Any] | None:
    token = stack.issuer.issue("dpo-9", [Role.dpo], stack.consent.trust_id, [])
    response = await stack.client.get("/audit/shares", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return next((i for i in response.json()["items"] if i["share_id"] == share_id), None)


def _sha256_of(document: Any) -> str:
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def test_content_in_the_request_is_refused(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    documents = await stack.documents(pupil)
    smuggled = {"title": "Termly report", "about": "another child", "strand_percent": 12.0}
    for kind in ("report", "profile", "action_plan"):
        for extra in ({"document": smuggled}, {"document": None}, {"content": smuggled}):
            response = await stack.client.post("/sharing/shares", headers=stack.staff(), json={
                "agency_id": agency["agency_id"], "pupil_id": str(pupil), "document_kind": kind,
                "document_id": documents.id_of(kind), **extra})
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
    # A share without a document id names no document.
    response = await stack.client.post("/sharing/shares", headers=stack.staff(), json={
        "agency_id": agency["agency_id"], "pupil_id": str(pupil), "document_kind": "report"})
    assert response.status_code == 422, response.text
    await _nothing_shared(stack, pupil)
    assert receiver.received == []


async def test_another_pupils_or_an_unknown_document_is_not_found(stack: Stack, receiver: Receiver) -> None:
    mine, theirs = await stack.consent.enrol(2)
    await stack.grant(mine)
    await stack.grant(theirs)
    agency = await stack.agency(receiver.url)
    await stack.documents(mine)
    their_documents = await stack.documents(theirs)
    answers = []
    for kind, document_id in [("report", their_documents.assessment_id), ("profile", their_documents.assessment_id),
                              ("action_plan", their_documents.plan_id), ("report", uuid.uuid4()),
                              ("action_plan", uuid.uuid4()),
                              # an id of the right pupil but of another kind
                              ("action_plan", (await stack.documents(mine)).assessment_id),
                              ("report", (await stack.documents(mine)).plan_id)]:
        response = await stack.share(agency["agency_id"], mine, kind, document_id=str(document_id))
        assert response.status_code == 404, (kind, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        answers.append(response.json()["detail"].replace(kind, "KIND"))
    assert len(set(answers)) == 1  # the same answer: nothing tells another pupil's id from an unknown one
    await _nothing_shared(stack, mine, theirs)
    assert receiver.received == []


async def test_the_agency_receives_the_platforms_document_and_its_hashes_match(stack: Stack,
                                                                              receiver: Receiver) -> None:
    pupil, other = await stack.consent.enrol(2)
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    documents = await stack.documents(pupil)
    await stack.documents(other)
    receiver.fail_first = 1  # the first try fails: two attempts, two bodies, two hashes

    sent: dict[str, dict[str, Any]] = {}
    for kind in ("report", "profile", "action_plan"):
        response = await stack.share(agency["agency_id"], pupil, kind)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "accepted" and body["document_id"] == documents.id_of(kind)
        sent[kind] = body

    async def all_delivered() -> bool:
        async with stack.engine.connect() as conn:
            statuses = (await conn.execute(select(deliveries.c.status).where(deliveries.c.pupil_id == pupil))).scalars()
            return sorted(statuses) == ["delivered"] * 3

    await eventually(all_delivered, timeout=60)
    by_share = {}
    for request in receiver.received:
        data = orjson.loads(request["body"])["data"]
        by_share.setdefault(data["share_id"], []).append((request["body"], data))

    for kind, share in sent.items():
        bodies = by_share[share["share_id"]]
        for _, data in bodies:
            document = data["document"]
            # The pupil's own document, made by the platform: no other pupil in it.
            assert document["kind"] == kind and document["pupil_id"] == str(pupil)
            assert document["document_id"] == documents.id_of(kind)
            assert str(other) not in orjson.dumps(data).decode()
            # The hash ReportShared recorded (asked of the audit ledger) is the hash of what was sent.
            assert _sha256_of(document) == share["document_sha256"]
        entry = await eventually(lambda share=share: _audit_entry(stack, share["share_id"]), timeout=60)
        assert entry["document_sha256"] == share["document_sha256"]
        # Each attempt records the SHA-256 of the exact body it sent.
        async with stack.engine.connect() as conn:
            recorded = (await conn.execute(select(attempts.c.body_sha256).where(
                attempts.c.delivery_id == uuid.UUID(share["delivery_id"])).order_by(attempts.c.attempt))).scalars().all()
        assert sorted(recorded) == sorted(hashlib.sha256(raw).hexdigest() for raw, _ in bodies)
        assert all(recorded)

    report = by_share[sent["report"]["share_id"]][-1][1]["document"]
    assert report["assessments"][0]["strand_percent"] == 42.5 and report["plans"][0]["plan_id"] == str(documents.plan_id)
    plan = by_share[sent["action_plan"]["share_id"]][-1][1]["document"]["plan"]
    assert plan["plan_id"] == str(documents.plan_id) and "practitioner_id" not in plan
    # Delivered: the sealed document is gone from the table, its hash stays.
    async with stack.engine.connect() as conn:
        rows = (await conn.execute(select(shares).where(shares.c.pupil_id == pupil))).all()
    assert all(r.document_sealed is None and r.document_sha256 for r in rows)


async def test_the_frozen_document_is_ciphertext_until_delivered(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    documents = await stack.documents(pupil)
    receiver.fail_first = 10 ** 6  # never delivered: dead-lettered after its tries
    share = (await stack.share(agency["agency_id"], pupil)).json()
    assert share["status"] == "accepted", share
    # The read models move on after the share (a correction): the share sends what it froze.
    async with stack.engine.begin() as conn:
        await conn.execute(update(T.strand_scores).where(T.strand_scores.c.pupil_id == pupil).values(strand_percent=99.0))

    async def dead_lettered() -> bool:
        row = await stack.delivery(share["delivery_id"])
        return row.status == "failed"

    await eventually(dead_lettered, timeout=60)
    async with stack.engine.connect() as conn:
        row = (await conn.execute(select(shares).where(shares.c.share_id == uuid.UUID(share["share_id"])))).one()
        payload = (await stack.delivery(share["delivery_id"])).payload
    sealed = row.document_sealed
    assert sealed.startswith(SEALED_PREFIX)
    for clear in (str(documents.assessment_id), str(documents.plan_id), str(pupil), "need_percents", "safety",
                  "Calm box", "42.5"):
        assert clear not in sealed
    # The outbox's payload names the document; its content is only in the sealed column.
    assert "document" not in payload and payload["document_id"] == str(documents.assessment_id)
    # The frozen document is what every try sent: the same document in each body.
    sent = {orjson.dumps(orjson.loads(r["body"])["data"]["document"], option=orjson.OPT_SORT_KEYS)
            for r in receiver.received}
    assert len(sent) == 1
    frozen = sent.pop()
    assert hashlib.sha256(frozen).hexdigest() == share["document_sha256"]
    assert orjson.loads(frozen)["assessments"][0]["strand_percent"] == 42.5
    # The family's subject access (asked by the DPO) shows the document kept for the share.
    token = stack.issuer.issue("dpo-9", [Role.dpo], stack.consent.trust_id, [])
    response = await stack.client.get(f"/pupils/{pupil}/subject-access", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    [kept] = [x for x in response.json()["services"]["reporting"]["shares"] if x["share_id"] == share["share_id"]]
    assert orjson.dumps(kept["what_was_sent"]["document"], option=orjson.OPT_SORT_KEYS) == frozen
