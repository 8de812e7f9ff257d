"""Row-level security on every planning table that carries trust_id (the kernel's excepted): a
transaction in an HTTP request sees only its caller's trust's rows (shared/tenancy.py,
docs/security.md).

Revision ID: planning_0002_tenant_rls
Revises: planning_0001
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "planning_0002_tenant_rls"
down_revision = "planning_0001"
branch_labels = None
depends_on = None

_TABLES = ("frameworks", "pupils", "strand_scores", "participation", "erased_pupils", "plans", "sessions",
           "session_notes")


def upgrade() -> None:
    tenancy.enable("planning", _TABLES)


def downgrade() -> None:
    tenancy.disable("planning", _TABLES)
