"""The audit facts' published language: codes, not free text, so no child is named by accident."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.events.audit import AdminActionTaken, PersonalDataRead

NOW = datetime(2026, 10, 2, tzinfo=UTC)


def test_a_read_needs_codes_for_its_categories_and_reason():
    PersonalDataRead(pupil_id=uuid.uuid4(), actor="teacher-4", data_categories=["profile"], route="/p/{id}",
                     reason="safeguarding_review", read_at=NOW)
    for bad in ({"data_categories": ["Jane Smith's profile"]}, {"reason": "her mum asked"}, {"data_categories": []},
                {"actor": "line\nbreak"}, {"read_at": datetime(2026, 10, 2)}):
        fields = dict(pupil_id=uuid.uuid4(), actor="teacher-4", data_categories=["profile"], route="/p", read_at=NOW)
        with pytest.raises(ValidationError):
            PersonalDataRead(**{**fields, **bad})


def test_admin_action_details_are_ids_and_codes():
    AdminActionTaken(action="agency.registered", actor="admin-1", target_kind="agency", target_id=str(uuid.uuid4()),
                     details={"category": "camhs"}, taken_at=NOW)
    with pytest.raises(ValidationError):
        AdminActionTaken(action="Agency Registered!", actor="admin-1", target_kind="agency", target_id="x", taken_at=NOW)
    with pytest.raises(ValidationError):
        AdminActionTaken(action="agency.registered", actor="admin-1", target_kind="agency", target_id="x",
                         details={"Contact Name": "x"}, taken_at=NOW)
