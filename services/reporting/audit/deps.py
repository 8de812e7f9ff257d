"""What the audit ledger's routes and background tasks are handed: built once by the reporting
service's bootstrap (services.reporting.app), whose dependencies hold it as `.audit`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from services.reporting.audit.ledger import Ledger
from services.reporting.audit.queries import AuditQueries
from services.reporting.audit.settings import AuditSettings


@dataclass(frozen=True)
class Audit:
    settings: AuditSettings
    ledger: Ledger
    queries: AuditQueries
    # The last verification of each trust's chain by this process (periodic or asked for through
    # POST /audit/verification): what GET /audit/status reports. Ids and counts only.
    verifications: dict[UUID, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: AuditSettings, schema: str) -> Audit:
        """The ledger and its queries in `schema` (the reporting schema; tests use their own)."""
        return cls(settings, Ledger(schema), AuditQueries(schema))
