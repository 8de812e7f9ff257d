"""Row-level security on every reporting table that carries trust_id: what this revision did for
databases made before the schema was frozen (issue 13). Each table now gets the tenant policy in
the revision that creates it, derived from its declaration (`info=per_trust()`,
shared/store/migrations.apply_tenancy), so this revision does nothing; it is kept because
databases are stamped at it or past it. Also where the read-models and sharing branches meet.

Revision ID: reporting_0004_tenant_rls
Revises: reporting_0002_read_models, reporting_0003_sharing
Create Date: 2026-11-26
"""

revision = "reporting_0004_tenant_rls"
down_revision = ("reporting_0002_read_models", "reporting_0003_sharing")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: see above."""


def downgrade() -> None:
    """Nothing: see above."""
