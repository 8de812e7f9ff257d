"""Row-level security on every consent table that carries trust_id (the kernel's excepted): a
transaction in an HTTP request sees only its caller's trust's rows (shared/tenancy.py,
docs/security.md).

Revision ID: consent_0002_tenant_rls
Revises: consent_0001
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "consent_0002_tenant_rls"
down_revision = "consent_0001"
branch_labels = None
depends_on = None

_TABLES = ("data_keys", "pupils", "consent_records", "consent_decisions", "retention_policies",
           "retention_expiries", "erasures")


def upgrade() -> None:
    tenancy.enable("consent", _TABLES)


def downgrade() -> None:
    tenancy.disable("consent", _TABLES)
