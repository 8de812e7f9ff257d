"""Row-level security on every consent table that carries trust_id: what this revision did for
databases made before the schema was frozen (issue 13). Each table now gets the tenant policy in
the revision that creates it, derived from its declaration (`info=per_trust()`,
shared/store/migrations.apply_tenancy), so this revision does nothing; it is kept because
databases are stamped at it or past it.

Revision ID: consent_0002_tenant_rls
Revises: consent_0001
Create Date: 2026-11-26
"""

revision = "consent_0002_tenant_rls"
down_revision = "consent_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: see above."""


def downgrade() -> None:
    """Nothing: see above."""
