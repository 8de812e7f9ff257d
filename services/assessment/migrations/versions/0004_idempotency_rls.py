"""Row-level security on the idempotency keys too: the stored responses of assessment commands are
tenant data, and only run_command reads or writes them, always with the caller's trust, in the
caller's request scope (docs/security.md).

Revision ID: assessment_0004_idempotency_rls
Revises: assessment_0003_tenant_rls
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "assessment_0004_idempotency_rls"
down_revision = "assessment_0003_tenant_rls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tenancy.enable("assessment", ["idempotency_keys"])


def downgrade() -> None:
    tenancy.disable("assessment", ["idempotency_keys"])
