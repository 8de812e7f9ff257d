"""Row-level security on the idempotency keys: what this revision did for databases made before
the schema was frozen (issue 13). The kernel's first revision (shared/store/kernel_migrations),
which every service's first revision builds on, now creates the idempotency keys under the tenant
policy, so this revision does nothing; it is kept because databases are stamped at it.

Revision ID: planning_0003_idempotency_rls
Revises: planning_0002_tenant_rls
Create Date: 2026-11-26
"""

revision = "planning_0003_idempotency_rls"
down_revision = "planning_0002_tenant_rls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: see above."""


def downgrade() -> None:
    """Nothing: see above."""
