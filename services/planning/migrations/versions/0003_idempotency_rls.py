"""Row-level security on the idempotency keys too: the stored responses of planning commands are
tenant data, and only run_command reads or writes them, always with the caller's trust, in the
caller's request scope (docs/security.md).

Revision ID: planning_0003_idempotency_rls
Revises: planning_0002_tenant_rls
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "planning_0003_idempotency_rls"
down_revision = "planning_0002_tenant_rls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tenancy.enable("planning", ["idempotency_keys"])


def downgrade() -> None:
    tenancy.disable("planning", ["idempotency_keys"])
