"""Row-level security on every assessment table that carries trust_id (the kernel's excepted): a
transaction in an HTTP request sees only its caller's trust's rows (shared/tenancy.py,
docs/security.md).

Revision ID: assessment_0003_tenant_rls
Revises: assessment_0002
Create Date: 2026-11-26
"""

from shared import tenancy

revision = "assessment_0003_tenant_rls"
down_revision = "assessment_0002"
branch_labels = None
depends_on = None

_TABLES = ("trusts", "academies", "classes", "groups", "group_members", "pupils", "pupil_personal_data",
           "observations", "observation_notes", "screenings", "assessments", "strand_scores", "erased_pupils",
           "retention_clock_outbox")


def upgrade() -> None:
    tenancy.enable("assessment", _TABLES)


def downgrade() -> None:
    tenancy.disable("assessment", _TABLES)
