"""Sharing with agencies: recipients, shares, the webhook deliveries outbox and its log.

Frozen DDL: the tables as they stood at this revision, spelled out, each under the tenant policy
(every one is a trust's rows); a later change comes as a new revision, never as an edit here
(tests/integration/schema checks the tables' declarations agree).

Revision ID: reporting_0003_sharing
Revises: reporting_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.migrations import apply_tenancy
from shared.tenancy import per_trust

revision = "reporting_0003_sharing"
down_revision = "reporting_0001"
branch_labels = ("sharing",)
depends_on = None

SCHEMA = "reporting"


def upgrade() -> None:
    # Each table declares its tenancy as tables.py does; the tenant policy follows from that.
    created = [
        op.create_table(
            "sharing_agencies",
            sa.Column("agency_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("category", sa.String(length=40), nullable=False),
            sa.Column("organisation", sa.String(length=200), nullable=False),
            sa.Column("endpoint_url", sa.String(length=2000), nullable=False),
            sa.Column("secret_wrapped", sa.LargeBinary, nullable=False),
            sa.Column("kek_id", sa.String(length=100), nullable=False),
            sa.Column("registered_by", sa.String(length=200), nullable=False),
            sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("active", sa.Boolean, server_default=sa.text("true"), nullable=False),
            sa.PrimaryKeyConstraint("agency_id"),
            sa.Index("sharing_agencies_by_trust", "trust_id", "category"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "sharing_deliveries",
            sa.Column("delivery_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("agency_id", sa.UUID, nullable=False),
            sa.Column("agency_category", sa.String(length=40), nullable=False),
            sa.Column("share_id", sa.UUID, nullable=True),
            sa.Column("kind", sa.String(length=20), nullable=False),
            sa.Column("document_kind", sa.String(length=40), nullable=True),
            sa.Column("event_type", sa.String(length=100), nullable=False),
            sa.Column("payload", JSONB, nullable=True),
            sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("attempts", sa.Integer, server_default=sa.text("0"), nullable=False),
            sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_status_code", sa.Integer, nullable=True),
            sa.Column("last_error", sa.String(length=200), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(["agency_id"], [f"{SCHEMA}.sharing_agencies.agency_id"]),
            sa.PrimaryKeyConstraint("delivery_id"),
            sa.Index("sharing_deliveries_by_pupil", "trust_id", "pupil_id", "agency_category"),
            sa.Index("sharing_deliveries_due", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "sharing_shares",
            sa.Column("share_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("academy_id", sa.UUID, nullable=False),
            sa.Column("pupil_id", sa.UUID, nullable=False),
            sa.Column("agency_id", sa.UUID, nullable=False),
            sa.Column("document_kind", sa.String(length=40), nullable=False),
            sa.Column("document_id", sa.UUID, nullable=True),
            sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("reason", sa.String(length=200), nullable=False),
            sa.Column("decision", JSONB, nullable=False),
            sa.Column("shared_by", sa.String(length=200), nullable=False),
            sa.Column("shared_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["agency_id"], [f"{SCHEMA}.sharing_agencies.agency_id"]),
            sa.PrimaryKeyConstraint("share_id"),
            schema=SCHEMA,
            info=per_trust(),
        ),
        op.create_table(
            "sharing_attempts",
            sa.Column("attempt_id", sa.Integer, autoincrement=True, nullable=False),
            sa.Column("delivery_id", sa.UUID, nullable=False),
            sa.Column("trust_id", sa.UUID, nullable=False),
            sa.Column("agency_id", sa.UUID, nullable=False),
            sa.Column("attempt", sa.Integer, nullable=False),
            sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
            sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("outcome", sa.String(length=20), nullable=False),
            sa.Column("status_code", sa.Integer, nullable=True),
            sa.Column("error", sa.String(length=200), nullable=True),
            sa.Column("duration_ms", sa.Integer, nullable=True),
            sa.ForeignKeyConstraint(["delivery_id"], [f"{SCHEMA}.sharing_deliveries.delivery_id"]),
            sa.PrimaryKeyConstraint("attempt_id"),
            sa.Index("sharing_attempts_by_agency", "trust_id", "agency_id", "attempt_id"),
            sa.Index("sharing_attempts_by_delivery", "delivery_id", "attempt"),
            schema=SCHEMA,
            info=per_trust(),
        ),
    ]
    apply_tenancy(created)


def downgrade() -> None:
    for name in ("sharing_attempts", "sharing_shares", "sharing_deliveries", "sharing_agencies"):
        op.drop_table(name, schema=SCHEMA)
