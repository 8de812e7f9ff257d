"""The kernel's tables in a service's schema: the event store, the outbox, the inbox and the
idempotency keys, with the tenant policy on the idempotency keys (commands' responses are tenant
data; the event store, outbox and inbox are read across trusts by design: docs/security.md).

Frozen DDL, as shared/store/tables.py declared these tables when this revision was written;
a later change comes as a new revision of this branch, never as an edit here. Databases migrated
before this branch existed got exactly this from their service's first revision (and its
*_idempotency_rls revision), which now builds on this one, so they never run it.

Revision ID: kernel_0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.migrations import apply_tenancy, service_schema
from shared.tenancy import per_trust

revision = "kernel_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = service_schema()
    op.create_table(
        "events",
        sa.Column("global_position", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("academy_id", sa.Uuid, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("global_position"),
        sa.UniqueConstraint("event_id", name="events_event_id_key"),
        sa.UniqueConstraint("stream_id", "stream_version", name="events_stream_version_key"),
        schema=schema,
    )
    op.create_table(
        "outbox",
        sa.Column("global_position", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("global_position"),
        schema=schema,
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="inbox_pkey"),
        schema=schema,
    )
    idempotency_keys = op.create_table(
        "idempotency_keys",
        sa.Column("trust_id", sa.Uuid, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("trust_id", "subject", "key", name="idempotency_keys_pkey"),
        schema=schema,
        info=per_trust(),
    )
    apply_tenancy([idempotency_keys])


def downgrade() -> None:
    schema = service_schema()
    for name in ("idempotency_keys", "inbox", "outbox", "events"):
        op.drop_table(name, schema=schema)
