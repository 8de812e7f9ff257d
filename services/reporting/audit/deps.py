"""What the audit ledger's routes and background tasks are handed: built once by the reporting
service's bootstrap (services.reporting.app), whose dependencies hold it as `.audit`."""

from __future__ import annotations

from dataclasses import dataclass

from services.reporting.audit.ledger import Ledger
from services.reporting.audit.queries import AuditQueries
from services.reporting.audit.settings import AuditSettings


@dataclass(frozen=True)
class Audit:
    settings: AuditSettings
    ledger: Ledger
    queries: AuditQueries

    @classmethod
    def of(cls, settings: AuditSettings, schema: str) -> Audit:
        """The ledger and its queries in `schema` (the reporting schema; tests use their own)."""
        return cls(settings, Ledger(schema), AuditQueries(schema))
