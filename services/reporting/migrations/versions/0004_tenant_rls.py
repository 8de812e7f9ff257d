"""Row-level security on every reporting table that carries trust_id (the kernel's excepted): a
transaction in an HTTP request sees only its caller's trust's rows (shared/tenancy.py,
docs/security.md). Also where the read-models and sharing branches meet.

Revision ID: reporting_0004_tenant_rls
Revises: reporting_0002_read_models, reporting_0003_sharing
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "reporting_0004_tenant_rls"
down_revision = ("reporting_0002_read_models", "reporting_0003_sharing")
branch_labels = None
depends_on = None

_TABLES = ("audit_entries", "audit_checkpoints", "audit_chain_heads",
           "sharing_agencies", "sharing_shares", "sharing_deliveries", "sharing_attempts",
           "rm_pupils", "rm_assessments", "rm_strand_scores", "rm_observations", "rm_plans", "rm_plan_pupils",
           "rm_plan_reviews", "rm_plan_closures", "rm_sessions")


def upgrade() -> None:
    tenancy.enable("reporting", _TABLES)


def downgrade() -> None:
    tenancy.disable("reporting", _TABLES)
