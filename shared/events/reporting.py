"""Events the reporting service publishes: disclosures to agencies and blocked attempts."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from shared.events.registry import Event, register

CONTEXT = "reporting"


@register("flourish.reporting.ReportShared.v1", CONTEXT)
class ReportShared(Event):
    share_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    document_kind: str
    consent_id: UUID | None
    shared_by: str
    shared_at: datetime


@register("flourish.reporting.ShareBlocked.v1", CONTEXT)
class ShareBlocked(Event):
    share_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    reason: str
    blocked_at: datetime
