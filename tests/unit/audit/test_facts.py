"""What the ledger records about each event: pseudonymous ids, codes and times, nothing sealed,
nothing it cannot record faithfully."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.reporting.audit.domain.facts import Kind, UnrecordableEvent, fact_from, is_recorded
from shared.audit import TRUST_LEVEL
from shared.events.assessment import ObservationRecorded
from shared.events.audit import AdminActionTaken, AuditQueried, PersonalDataRead
from shared.events.consent import ConsentGranted
from shared.events.envelope import Envelope
from shared.events.registry import registered_types
from shared.events.reporting import ReportShared, ShareBlocked

TRUST, ACADEMY = uuid.uuid4(), uuid.uuid4()
WHEN = datetime(2026, 10, 2, 14, 30, tzinfo=UTC)


def envelope(data, academy=ACADEMY):  # type: ignore[no-untyped-def]
    return Envelope(data=data, trust_id=TRUST, academy_id=academy, source="/flourish/tests")


def report_shared(**changes):  # type: ignore[no-untyped-def]
    fields = dict(share_id=uuid.uuid4(), pupil_id=uuid.uuid4(), agency_id=uuid.uuid4(), agency_category="camhs",
                  document_kind="profile", consent_id=uuid.uuid4(), shared_by="senco-7", shared_at=WHEN)
    return ReportShared(**{**fields, **changes})


def test_a_share_records_who_what_which_agency_when_and_the_consent():
    data = report_shared()
    fact = fact_from(envelope(data)).as_json(recorded_at=WHEN)
    assert fact == {
        "kind": "disclosure", "action": "share", "event_type": "flourish.reporting.ReportShared.v1",
        "event_id": fact["event_id"], "source": "/flourish/tests", "correlation_id": fact["event_id"],
        "occurred_at": "2026-10-02T14:30:00.000000Z", "recorded_at": "2026-10-02T14:30:00.000000Z",
        "academy_id": str(ACADEMY), "actor": "senco-7", "pupil_id": str(data.pupil_id),
        "agency_id": str(data.agency_id), "agency_category": "camhs", "share_id": str(data.share_id),
        "consent_id": str(data.consent_id), "details": {"document_kind": "profile"},
    }


def test_a_consent_decision_keeps_no_sealed_field_not_even_as_ciphertext():
    data = ConsentGranted(
        consent_id=uuid.uuid4(), pupil_id=uuid.uuid4(), purpose="share_camhs", record_version=3, method="paper",
        given_by="fl1.ciphertext-of-a-parents-name", evidence_reference="fl1.ciphertext", covers=["report"],
        recorded_by="office-2", decided_at=WHEN,
    )
    fact = fact_from(envelope(data))
    as_json = str(fact.as_json(WHEN))
    assert (fact.kind, fact.action, fact.actor) == (Kind.CONSENT, "consent_granted", "office-2")
    assert fact.ids["purpose"] == "share_camhs" and fact.details["covers"] == ["report"]
    assert "fl1." not in as_json and "given_by" not in as_json and "evidence" not in as_json


def test_reads_admin_actions_and_audit_queries_are_recorded_with_their_codes():
    pupil = uuid.uuid4()
    read = fact_from(envelope(PersonalDataRead(pupil_id=pupil, actor="teacher-4", data_categories=["profile"],
                                               route="/pupils/{pupil_id}", reason="safeguarding_review", read_at=WHEN)))
    assert (read.kind, read.action, read.ids, read.details) == (
        Kind.ACCESS, "personal_data_read", {"pupil_id": str(pupil)},
        {"data_categories": ["profile"], "reason": "safeguarding_review", "route": "/pupils/{pupil_id}"})
    admin = fact_from(envelope(AdminActionTaken(action="framework.loaded", actor="admin-1", target_kind="framework",
                                                target_id="thrive-2026.1", taken_at=WHEN), academy=TRUST_LEVEL))
    assert (admin.kind, admin.action, admin.academy_id, admin.details["target_id"]) == (
        Kind.ADMIN, "framework.loaded", None, "thrive-2026.1")
    query = fact_from(envelope(AuditQueried(actor="dpo-1", query="shares", filters={"from": "2026-09-01"},
                                            result_count=3, queried_at=WHEN)))
    assert query.details == {"query": "shares", "result_count": 3, "filter.from": "2026-09-01"}


def test_a_value_that_cannot_be_recorded_faithfully_is_refused_by_field_name_never_by_value():
    with pytest.raises(UnrecordableEvent) as refused:
        fact_from(envelope(report_shared(shared_by='senco "7"')))
    assert str(refused.value).startswith("actor:") and "senco" not in str(refused.value)
    with pytest.raises(UnrecordableEvent):
        fact_from(envelope(ShareBlocked(share_id=uuid.uuid4(), pupil_id=uuid.uuid4(), agency_id=uuid.uuid4(),
                                        agency_category="camhs", reason="bell\x07", blocked_at=WHEN)))


def test_the_ledger_records_consent_audit_and_share_events_and_nothing_else():
    recorded = {name for name, model in registered_types().items() if is_recorded(model)}
    assert {ReportShared.event_type, ShareBlocked.event_type, ConsentGranted.event_type,
            PersonalDataRead.event_type, AdminActionTaken.event_type, AuditQueried.event_type} <= recorded
    assert ObservationRecorded.event_type not in recorded
    assert all(name.split(".")[1] in ("consent", "audit", "reporting") for name in recorded)


def test_a_share_entry_keeps_the_basis_record_agency_name_and_document_but_nothing_sealed():
    basis_id, document_id = uuid.uuid4(), uuid.uuid4()
    data = report_shared(consent_id=None, lawful_basis="legal_obligation", consent_obtained=False, basis_id=basis_id,
                         basis_stream_id="consent-p-share_social_care", record_version=3,
                         policy_reference="Working Together 2023", agency_name="Northshire Children's Services",
                         document_id=document_id, document_sha256="ab" * 32, delivery_id=document_id)
    details = fact_from(envelope(data)).as_json(recorded_at=WHEN)["details"]
    assert details == {
        "document_kind": "profile", "lawful_basis": "legal_obligation", "consent_obtained": False,
        "basis_id": str(basis_id), "basis_stream_id": "consent-p-share_social_care", "record_version": 3,
        "policy_reference": "Working Together 2023", "agency_name": "Northshire Children's Services",
        "document_id": str(document_id), "document_sha256": "ab" * 32, "delivery_id": str(document_id),
    }


def test_entries_written_before_the_new_fields_verify_beside_entries_that_have_them():
    """Old entries are hashed text: a chain of an old-shaped share entry (details: the document
    kind only), then a new one, verifies; rewriting the new entry's agency name is named."""
    from services.reporting.audit.domain.canonical import GENESIS_HASH, entry_body, sha256_hex
    from services.reporting.audit.domain.chain import ChainVerifier

    old = fact_from(envelope(report_shared())).as_json(recorded_at=WHEN)
    assert old["details"] == {"document_kind": "profile"}  # an event without the new fields: the same fact as before
    new = fact_from(envelope(report_shared(agency_name="North CAMHS", lawful_basis="consent", consent_obtained=True))
                    ).as_json(recorded_at=WHEN)
    rows, prev = [], GENESIS_HASH
    for seq, fact in enumerate((old, new), start=1):
        body = entry_body(TRUST, seq, prev, fact)
        rows.append((seq, prev, sha256_hex(body), body))
        prev = rows[-1][2]
    verifier = ChainVerifier(TRUST, {})
    assert verifier.feed(rows) and verifier.finish().ok
    seq, prev_hash, entry_hash, body = rows[1]
    rewritten = [rows[0], (seq, prev_hash, entry_hash, body.replace("North CAMHS", "South CAMHS"))]
    verifier = ChainVerifier(TRUST, {})
    assert not verifier.feed(rewritten)
    assert verifier.report.mismatch is not None and verifier.report.mismatch.seq == 2
