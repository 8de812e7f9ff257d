"""Row-level security on the idempotency keys too: the stored responses of reporting commands are
tenant data, and only run_command reads or writes them, always with the caller's trust, in the
caller's request scope (docs/security.md).

Revision ID: reporting_0005_idempotency_rls
Revises: reporting_0004_tenant_rls
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "reporting_0005_idempotency_rls"
down_revision = "reporting_0004_tenant_rls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tenancy.enable("reporting", ["idempotency_keys"])


def downgrade() -> None:
    tenancy.disable("reporting", ["idempotency_keys"])
