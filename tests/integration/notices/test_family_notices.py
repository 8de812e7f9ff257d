"""The family is told before a share (the parents' letter: "We will always inform you ... prior to
information being shared"), tried as the family, staff, a DPO and an operator would, through the
public APIs, against a real SMTP server, a real webhook receiver, PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from services.consent.tables import family_contacts
from services.reporting.sharing.tables import deliveries, family_notices, shares
from services.reporting.tables import kernel
from shared.auth import Role
from shared.datakeys import DataKeyClient
from tests.integration.kernel.helpers import eventually
from tests.integration.notices.conftest import Notices
from tests.integration.reporting.sharing.conftest import Receiver

POLICY = "Working Together to Safeguard Children 2023, s47"


def mailbox_address() -> str:
    return f"parent.{uuid.uuid4().hex[:10]}@family.example"


async def grant_with_email(n: Notices, pupil: uuid.UUID, email: str, purpose: str = "share_camhs") -> None:
    body = n.consent.consent_body(purpose)
    body["given_by"]["email"] = email
    response = await n.consent.client.post(f"/pupils/{pupil}/consents", headers=n.consent.senco, json=body)
    assert response.status_code == 201, response.text


async def safeguarding_basis(n: Notices, pupil: uuid.UUID, category: str = "social_care",
                             policy_reference: str = POLICY) -> None:
    now = n.consent.clock()
    response = await n.consent.client.post(f"/pupils/{pupil}/lawful-bases", headers=n.consent.senco, json={
        "agency_category": category, "basis": "legal_obligation", "reason": "Section 47 enquiry",
        "policy_reference": policy_reference, "decided_at": (now - timedelta(minutes=1)).isoformat(),
        "valid_until": (now + timedelta(days=14)).isoformat()})
    assert response.status_code == 201, response.text


async def agency(n: Notices, url: str, category: str = "camhs", organisation: str = "North CAMHS") -> dict[str, Any]:
    response = await n.client.post("/sharing/agencies", headers=n.staff(Role.trust_admin), json={
        "category": category, "organisation": organisation, "endpoint_url": url})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def delivered(n: Notices, delivery_id: str) -> Any:
    row = await n.delivery(delivery_id)
    return row if row is not None and row.status == "delivered" else None


async def test_a_share_sends_the_family_a_notice_by_email_saying_what_to_whom_why_and_on_which_basis(
    notices: Notices, receiver: Receiver,
) -> None:
    n = notices
    assert n.smtp is not None
    n.smtp.start()
    email = mailbox_address()
    (pupil,) = await n.consent.enrol()
    await grant_with_email(n, pupil, email)
    camhs = await agency(n, receiver.url)

    response = await n.share(camhs["agency_id"], pupil)
    assert response.status_code == 201, response.text
    share = response.json()
    assert share["status"] == "accepted" and share["family_notice"]["status"] == "queued"

    # The notice was recorded with the share, in its transaction: before its delivery could go.
    async with n.engine.connect() as conn:
        notice = (await conn.execute(select(family_notices).where(
            family_notices.c.share_id == uuid.UUID(share["share_id"])))).one()
        queued = (await conn.execute(select(deliveries.c.created_at).where(
            deliveries.c.delivery_id == uuid.UUID(share["delivery_id"])))).scalar_one()
        row = (await conn.execute(select(shares).where(shares.c.share_id == uuid.UUID(share["share_id"])))).one()
    assert notice.created_at == queued == row.shared_at

    async def mailed() -> Any:
        return n.smtp.mailbox.to(email) or None  # type: ignore[union-attr]

    (message,) = await eventually(mailed)
    await eventually(lambda: delivered(n, share["delivery_id"]))
    # To: the contact the consent service keeps sealed, opened; From: the configured sender.
    assert message["To"] == email and message["From"] == "Oak Academy <office@oak.example>"
    assert message["Message-ID"] == f"<notice-{notice.notice_id}@flourish.invalid>"
    body = message.get_content()
    assert "What: a report about your child's wellbeing" in body
    assert "With whom: North CAMHS (Child and Adolescent Mental Health Services (CAMHS))" in body
    assert "Why: so that Child and Adolescent Mental Health Services (CAMHS) can support your child" in body
    assert "On which basis: the consent you gave" in body
    assert f"Reference: {share['share_id']}" in body
    sent = await eventually(lambda: n.notice_in(share["share_id"], "sent"))
    assert sent.attempts == 1 and sent.last_error is None
    # The email is not kept by reporting: neither in its notices nor anywhere in its schema.
    async with n.engine.connect() as conn:
        dumped = await conn.scalar(text(
            "SELECT string_agg(t::text, ' ') FROM reporting.sharing_family_notices t WHERE pupil_id = :p"),
            {"p": pupil})
    assert email not in dumped
    await asyncio.sleep(0.5)
    assert len(n.smtp.mailbox.to(email)) == 1  # once


async def test_smtp_down_the_notice_queues_shows_on_the_ops_page_and_is_sent_once_when_it_is_back(
    notices: Notices, receiver: Receiver, caplog: pytest.LogCaptureFixture,
) -> None:
    n = notices
    assert n.smtp is not None  # not started: nothing listens on its port
    email = mailbox_address()
    (pupil,) = await n.consent.enrol()
    await grant_with_email(n, pupil, email)
    camhs = await agency(n, receiver.url)
    share = (await n.share(camhs["agency_id"], pupil)).json()

    # The agency's delivery does not wait for the email.
    await eventually(lambda: delivered(n, share["delivery_id"]))

    async def failing() -> Any:
        row = await n.notice(share["share_id"])
        return row if row.status == "queued" and row.attempts >= 2 else None

    row = await eventually(failing)
    assert row.last_error == "smtp_unavailable" and row.next_attempt_at > row.created_at

    async def on_the_ops_page() -> Any:
        (own, *_) = (await n.client.get("/ops.json")).json()
        return own if own["notices_queued"] >= 1 and own["notices_failing"] >= 1 else None

    own = await eventually(on_the_ops_page)
    assert own["notices_oldest_age_s"] > 0
    assert any("notices to families failing" in note for note in own["attention"])
    page = (await n.client.get("/ops")).text
    assert "Notices to families" in page and "failing" in page
    assert email not in page and str(pupil) not in page  # counts only

    # The family gives a new address while the notice waits: the notice goes there.
    moved = mailbox_address()
    changed = await n.consent.client.put(f"/pupils/{pupil}/family-contact", headers=n.consent.senco,
                                         json={"email": moved})
    assert changed.status_code == 200, changed.text
    tried = (await n.notice(share["share_id"])).attempts

    async def tried_since_the_change() -> Any:  # two more tries: the later one asked after the change
        row = await n.notice(share["share_id"])
        return row if row.attempts >= tried + 2 else None

    await eventually(tried_since_the_change)
    n.smtp.start()
    sent = await eventually(lambda: n.notice_in(share["share_id"], "sent"), timeout=30)
    assert sent.attempts >= 3
    await asyncio.sleep(1.5)  # a few more passes of the sender
    assert len(n.smtp.mailbox.to(moved)) == 1  # sent exactly once
    assert n.smtp.mailbox.to(email) == []
    # The outage's log lines name neither address.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]  # not the test's server
    assert [line for line in ours if email in line or moved in line] == []


async def test_an_address_refused_for_good_fails_to_the_letter_and_an_erased_pupil_s_notice_is_never_sent_and_gone(
    notices: Notices, receiver: Receiver,
) -> None:
    n = notices
    assert n.smtp is not None  # down while the erasure happens
    erased, bounced = await n.consent.enrol(2)
    await grant_with_email(n, erased, mailbox_address())
    bounce = f"bounce.{uuid.uuid4().hex[:8]}@family.example"
    await grant_with_email(n, bounced, bounce)
    camhs = await agency(n, receiver.url)
    first = (await n.share(camhs["agency_id"], erased)).json()
    await eventually(lambda: delivered(n, first["delivery_id"]))
    erasure = await n.consent.client.post(f"/pupils/{erased}/erasure", headers=n.consent.dpo)
    assert erasure.status_code == 201, erasure.text

    n.smtp.start()
    second = (await n.share(camhs["agency_id"], bounced)).json()
    # Reporting's erasure consumer deletes the erased pupil's notices with their shares (whether the
    # sender cancelled this one first or not): no row names the child, and no email went.

    async def gone() -> bool:
        return await n.notice(first["share_id"]) is None

    await eventually(gone, timeout=30)
    failed = await eventually(lambda: n.notice_in(second["share_id"], "failed"), timeout=30)
    assert failed.last_error == "smtp_refused_550" and failed.attempts == 1
    assert n.smtp.mailbox.messages == []
    letter = await n.client.get(f"/sharing/shares/{second['share_id']}/notice", headers=n.staff())
    assert letter.status_code == 200 and "this letter is their notice" in letter.text

    async def on_the_ops_page() -> Any:
        own = (await n.client.get("/ops.json")).json()[0]
        return own if own["notices_failed"] >= 1 else None

    own = await eventually(on_the_ops_page)
    assert any("print their letters" in note for note in own["attention"])


async def test_no_contact_email_the_notice_is_a_printable_letter_only_and_hostile_values_stay_text(
    notices: Notices, receiver: Receiver,
) -> None:
    n = notices
    assert n.smtp is not None
    n.smtp.start()
    (pupil,) = await n.consent.enrol()
    hostile_policy = "<img src=x onerror=alert(1)> & s47"
    await safeguarding_basis(n, pupil, policy_reference=hostile_policy)
    social = await agency(n, receiver.url, "social_care", "<script>alert('x')</script> Children's Services")
    share = (await n.share(social["agency_id"], pupil)).json()
    assert share["status"] == "accepted", share

    letter_only = await eventually(lambda: n.notice_in(share["share_id"], "letter_only"))
    assert letter_only.last_error == "no_contact_email"
    assert n.smtp.mailbox.messages == [] or all(str(pupil) not in m.get_content() for _, m in n.smtp.mailbox.messages)

    response = await n.client.get(f"/sharing/shares/{share['share_id']}/notice", headers=n.staff())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "No email address is on record for this family" in html
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Children&#39;s Services" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; s47" in html
    assert "a legal obligation of the school, not consent" in html and "children&#39;s social care" in html
    as_json = (await n.client.get(f"/sharing/shares/{share['share_id']}/notice", headers=n.staff(),
                                  params={"format": "json"})).json()
    assert as_json["status"] == "letter_only" and as_json["to_whom"].startswith("<script>")
    # Another trust's staff, an unknown share, a practitioner: no letter.
    other = n.issuer.issue("senco-x", [Role.senco], uuid.uuid4(), [n.consent.academy_id])
    assert (await n.client.get(f"/sharing/shares/{share['share_id']}/notice",
                               headers={"Authorization": f"Bearer {other}"})).status_code == 404
    assert (await n.client.get(f"/sharing/shares/{uuid.uuid4()}/notice", headers=n.staff())).status_code == 404
    assert (await n.client.get(f"/sharing/shares/{share['share_id']}/notice",
                               headers=n.staff(Role.practitioner))).status_code == 403


async def test_the_dpo_withholds_a_safeguarding_share_s_notice_the_ledger_says_why_and_no_email_goes(
    notices: Notices, receiver: Receiver,
) -> None:
    n = notices
    assert n.smtp is not None
    n.smtp.start()
    email = mailbox_address()
    safeguarded, consented = await n.consent.enrol(2)
    await safeguarding_basis(n, safeguarded)
    await grant_with_email(n, consented, mailbox_address())
    contact = await n.consent.client.put(f"/pupils/{safeguarded}/family-contact", headers=n.consent.senco,
                                         json={"email": email})
    assert contact.status_code == 200, contact.text
    social = await agency(n, receiver.url, "social_care", "Northshire Children's Services")
    camhs = await agency(n, receiver.url)
    words = "Father under investigation; telling the family would alert him"
    withhold = {"withhold_family_notice": {"reason_code": "risk_of_harm_to_child", "reason": words}}

    async def counts() -> tuple[int, ...]:
        async with n.engine.connect() as conn:
            return tuple([await conn.scalar(select(func.count()).select_from(t).where(t.c.trust_id == n.consent.trust_id))
                          for t in (shares, deliveries, family_notices)])

    # A SENCo may not withhold: 403, and nothing is shared.
    refused = await n.share(social["agency_id"], safeguarded, **withhold)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    # Nor may the DPO withhold the notice of a share resting on consent: 422, nothing shared.
    on_consent = await n.client.post("/sharing/shares", headers=n.dpo(), json={
        "agency_id": camhs["agency_id"], "pupil_id": str(consented), "document_kind": "report",
        "document_id": (await n.documents(consented)).id_of("report"), **withhold})
    assert on_consent.status_code == 422, on_consent.text
    # An unknown reason code: 422, nothing shared.
    bad = await n.client.post("/sharing/shares", headers=n.dpo(), json={
        "agency_id": social["agency_id"], "pupil_id": str(safeguarded), "document_kind": "report",
        "document_id": (await n.documents(safeguarded)).id_of("report"),
        "withhold_family_notice": {"reason_code": "because", "reason": words}})
    assert bad.status_code == 422, bad.text
    assert await counts() == (0, 0, 0)
    assert receiver.received == []

    response = await n.client.post("/sharing/shares", headers=n.dpo(), json={
        "agency_id": social["agency_id"], "pupil_id": str(safeguarded), "document_kind": "report",
        "document_id": (await n.documents(safeguarded)).id_of("report"), **withhold})
    assert response.status_code == 201, response.text
    share = response.json()
    assert share["status"] == "accepted" and share["lawful_basis"] == "legal_obligation"
    assert share["family_notice"]["status"] == "withheld"
    await eventually(lambda: delivered(n, share["delivery_id"]))

    # The audit ledger records it: the DPO, the share, the reason's code (its words stay sealed).
    async def in_the_ledger() -> Any:
        found = await n.client.get("/audit/entries", headers=n.dpo(),
                                   params={"action": "family_notice_withheld", "pupil_id": str(safeguarded)})
        assert found.status_code == 200, found.text
        return found.json()["items"] or None

    (entry,) = await eventually(in_the_ledger, timeout=60)
    fact = entry.get("fact", entry)
    assert fact["share_id"] == share["share_id"] and fact["actor"] == "dpo-7"
    assert fact["details"]["reason"] == "risk_of_harm_to_child"
    assert fact["details"]["lawful_basis"] == "legal_obligation" and fact["details"]["policy_reference"] == POLICY
    assert words not in str(entry)
    # The words are kept sealed with the pupil's key: in the notice and in the event, never in clear.
    async with n.engine.connect() as conn:
        notice = await n.notice(share["share_id"])
        event = (await conn.execute(select(kernel.events.c.data).where(
            kernel.events.c.event_type == "flourish.reporting.FamilyNoticeWithheld.v1",
            kernel.events.c.stream_id == f"family-notice-{share['share_id']}"))).scalar_one()
    assert notice.status == "withheld" and notice.withheld_reason == "risk_of_harm_to_child"
    assert words not in notice.withheld_reason_sealed and words not in str(event)
    keys = DataKeyClient("http://consent", lambda _: n.consent.service["Authorization"].removeprefix("Bearer "),
                         http=n.consent.client)
    key = await keys.key_for(n.consent.trust_id, safeguarded)
    assert key.open_text(notice.withheld_reason_sealed, "reporting.family_notice_withheld_reason") == words
    # No email went, and none will; the letter is refused too.
    await asyncio.sleep(1.0)
    assert n.smtp.mailbox.to(email) == []
    letter = await n.client.get(f"/sharing/shares/{share['share_id']}/notice", headers=n.dpo())
    assert letter.status_code == 409, letter.text


async def test_the_contact_email_is_validated_sealed_and_released_sealed_to_services_only(notices: Notices) -> None:
    n = notices
    (pupil,) = await n.consent.enrol()
    url = f"/pupils/{pupil}/family-contact"
    for hostile in ["a@b.example\r\nBcc: everyone@evil.example", "not-an-email", "Jane <jane@x.example>",
                    "a@b", "a@@b.example", "a@b..example", "x" * 250 + "@b.example"]:
        response = await n.consent.client.put(url, headers=n.consent.senco, json={"email": hostile})
        assert response.status_code == 422, (hostile, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    consent_engine = n.consent.app.state.runtime.engine
    async with consent_engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(family_contacts).where(
            family_contacts.c.pupil_id == pupil)) == 0
    # A practitioner may not set it; staff of another academy may not either.
    assert (await n.consent.client.put(url, headers=n.consent.token(Role.practitioner),
                                       json={"email": "a@b.example"})).status_code == 403
    assert (await n.consent.client.put(url, headers=n.consent.token(Role.senco, academies=[uuid.uuid4()]),
                                       json={"email": "a@b.example"})).status_code == 403

    email = mailbox_address()
    response = await n.consent.client.put(url, headers=n.consent.senco, json={"email": email})
    assert response.status_code == 200 and email not in response.text
    async with consent_engine.connect() as conn:
        stored = await conn.scalar(text("SELECT string_agg(t::text, ' ') FROM consent.family_contacts t"))
    assert email not in stored
    # Staff get no copy of it; a service gets it sealed, and opens it with the pupil's key.
    assert (await n.consent.client.get(url, headers=n.consent.senco)).status_code == 403
    released = await n.consent.client.get(url, headers=n.consent.service)
    assert released.status_code == 200 and email not in released.text
    keys = DataKeyClient("http://consent", lambda _: n.consent.service["Authorization"].removeprefix("Bearer "),
                         http=n.consent.client)
    key = await keys.key_for(n.consent.trust_id, pupil)
    assert key.open_text(released.json()["email_sealed"], released.json()["field"]) == email
    # Forgotten on request: notices become letters only.
    assert (await n.consent.client.delete(url, headers=n.consent.senco)).status_code == 204
    assert (await n.consent.client.get(url, headers=n.consent.service)).status_code == 404
    # Erased with the pupil.
    await n.consent.client.put(url, headers=n.consent.senco, json={"email": email})
    assert (await n.consent.client.post(f"/pupils/{pupil}/erasure", headers=n.consent.dpo)).status_code == 201
    assert (await n.consent.client.get(url, headers=n.consent.service)).status_code == 410
    async with consent_engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(family_contacts).where(
            family_contacts.c.pupil_id == pupil)) == 0


async def test_the_dpo_withholds_a_notice_not_sent_yet_but_never_one_already_sent(
    notices: Notices, receiver: Receiver,
) -> None:
    n = notices
    assert n.smtp is not None  # down: the SENCo's share's notice waits
    held, told = await n.consent.enrol(2)
    held_email, told_email = mailbox_address(), mailbox_address()
    for pupil, email in ((held, held_email), (told, told_email)):
        await safeguarding_basis(n, pupil)
        assert (await n.consent.client.put(f"/pupils/{pupil}/family-contact", headers=n.consent.senco,
                                           json={"email": email})).status_code == 200
    social = await agency(n, receiver.url, "social_care", "Northshire Children's Services")
    share = (await n.share(social["agency_id"], held)).json()
    assert share["family_notice"]["status"] == "queued"
    url = f"/sharing/shares/{share['share_id']}/notice/withholding"
    body = {"reason_code": "prejudice_to_investigation", "reason": "Police enquiry under way"}

    assert (await n.client.post(url, headers=n.staff(), json=body)).status_code == 403
    assert (await n.client.post(f"/sharing/shares/{uuid.uuid4()}/notice/withholding", headers=n.dpo(),
                                json=body)).status_code == 404
    assert (await n.client.post(url, headers=n.dpo(), json={**body, "reason": ""})).status_code == 422
    assert (await n.notice(share["share_id"])).status == "queued"  # none of those changed anything

    withheld = await n.client.post(url, headers=n.dpo(), json=body)
    assert withheld.status_code == 200, withheld.text
    assert withheld.json()["status"] == "withheld"
    assert (await n.client.post(url, headers=n.dpo(), json=body)).status_code == 409

    n.smtp.start()
    other = (await n.share(social["agency_id"], told)).json()
    await eventually(lambda: n.notice_in(other["share_id"], "sent"), timeout=30)
    refused = await n.client.post(f"/sharing/shares/{other['share_id']}/notice/withholding", headers=n.dpo(), json=body)
    assert refused.status_code == 409, refused.text
    await asyncio.sleep(1.0)
    assert n.smtp.mailbox.to(held_email) == [] and len(n.smtp.mailbox.to(told_email)) == 1

    async def in_the_ledger() -> Any:
        found = await n.client.get("/audit/entries", headers=n.dpo(),
                                   params={"action": "family_notice_withheld", "pupil_id": str(held)})
        return found.json()["items"] or None

    (entry,) = await eventually(in_the_ledger, timeout=60)
    fact = entry.get("fact", entry)
    assert fact["share_id"] == share["share_id"] and fact["details"]["reason"] == "prejudice_to_investigation"
