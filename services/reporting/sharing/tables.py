"""Sharing's tables in the reporting schema (migration reporting_0003_sharing creates them)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from services.reporting.tables import SCHEMA
from shared.tenancy import per_trust

metadata = MetaData(schema=SCHEMA)

# Registered recipients. The signing secret is kept wrapped by the key-encryption key (bound to
# trust and agency) and shown to the caller once, when the agency is registered.
agencies = Table(
    "sharing_agencies", metadata,
    Column("agency_id", UUID(as_uuid=True), primary_key=True),
    Column("trust_id", UUID(as_uuid=True), nullable=False),
    Column("category", String(40), nullable=False),
    Column("organisation", String(200), nullable=False),
    Column("endpoint_url", String(2000), nullable=False),
    Column("secret_wrapped", LargeBinary, nullable=False),
    Column("kek_id", String(100), nullable=False),
    Column("registered_by", String(200), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    # The lifecycle (migration agency_0010_lifecycle): nothing is sent to the endpoint until it
    # answered a signed `endpoint.verification` event with a 2xx; during a secret's rotation the
    # previous secret signs beside the new one until `previous_secret_until`.
    Column("verified_at", DateTime(timezone=True)),
    Column("previous_secret_wrapped", LargeBinary),
    Column("previous_kek_id", String(100)),
    Column("previous_secret_until", DateTime(timezone=True)),
    Column("deactivated_at", DateTime(timezone=True)),
    # The endpoint's health (migration delivery_0011): since when every try has failed (NULL
    # once one succeeds), and when and why deliveries stopped (`gone`: it answered 410;
    # `failing`: it failed for five days). A disabled endpoint is sent nothing.
    Column("failing_since", DateTime(timezone=True)),
    Column("disabled_at", DateTime(timezone=True)),
    Column("disabled_reason", String(40)),
    info=per_trust(),
)
Index("sharing_agencies_by_trust", agencies.c.trust_id, agencies.c.category)

# Every share asked for, allowed or blocked, with the consent decision it rested on.
shares = Table(
    "sharing_shares", metadata,
    Column("share_id", UUID(as_uuid=True), primary_key=True),
    Column("trust_id", UUID(as_uuid=True), nullable=False),
    Column("academy_id", UUID(as_uuid=True), nullable=False),
    Column("pupil_id", UUID(as_uuid=True), nullable=False),
    Column("agency_id", UUID(as_uuid=True), ForeignKey(agencies.c.agency_id), nullable=False),
    Column("document_kind", String(40), nullable=False),
    Column("document_id", UUID(as_uuid=True)),
    Column("status", String(20), nullable=False),  # accepted | blocked
    Column("reason", String(200), nullable=False),
    Column("decision", JSONB, nullable=False),
    Column("shared_by", String(200), nullable=False),
    Column("shared_at", DateTime(timezone=True), nullable=False),
    # The document the platform assembled for this share (sharing/documents.py), frozen at share
    # time and sealed with the pupil's key; NULL once delivered (or blocked). Its SHA-256 stays.
    Column("document_sealed", Text),
    Column("document_sha256", String(64)),
    # Set once the agency was sent a deletion notice because the consent expired (valid_until).
    Column("expiry_notified_at", DateTime(timezone=True)),
    info=per_trust(),
)

# The durable outbox of webhooks: one row per webhook (delivery_id is its webhook-id). The
# payload is dropped once delivered or blocked; only a dead letter keeps it, for a replay.
deliveries = Table(
    "sharing_deliveries", metadata,
    Column("delivery_id", UUID(as_uuid=True), primary_key=True),
    Column("trust_id", UUID(as_uuid=True), nullable=False),
    Column("academy_id", UUID(as_uuid=True), nullable=False),
    # NULL on a deletion notice about an erased pupil: it names them in its payload only (dropped
    # once delivered), so nothing here keeps the pupil's id after the agency was told.
    Column("pupil_id", UUID(as_uuid=True)),
    Column("agency_id", UUID(as_uuid=True), ForeignKey(agencies.c.agency_id), nullable=False),
    Column("agency_category", String(40), nullable=False),
    Column("share_id", UUID(as_uuid=True)),
    Column("kind", String(20), nullable=False),  # share | deletion_notice
    Column("document_kind", String(40)),
    Column("event_type", String(100), nullable=False),
    Column("payload", JSONB),
    # pending | delivered | failed (dead letter) | blocked | undeliverable (a deletion notice owed to
    # a disabled endpoint: listed for the DPO to send another way, kept until replayed or erased)
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    info=per_trust(),
)
Index("sharing_deliveries_due", deliveries.c.next_attempt_at, postgresql_where=deliveries.c.status == "pending")
Index("sharing_deliveries_by_pupil", deliveries.c.trust_id, deliveries.c.pupil_id, deliveries.c.agency_category)

# The delivery log: one row per try, per endpoint (agency).
attempts = Table(
    "sharing_attempts", metadata,
    Column("attempt_id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", UUID(as_uuid=True), ForeignKey(deliveries.c.delivery_id), nullable=False),
    Column("trust_id", UUID(as_uuid=True), nullable=False),
    Column("agency_id", UUID(as_uuid=True), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("scheduled_for", DateTime(timezone=True), nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(20), nullable=False),  # delivered | retried | failed | blocked
    Column("status_code", Integer),
    Column("error", String(200)),
    Column("duration_ms", Integer),
    Column("body_sha256", String(64)),  # SHA-256 (hex) of the exact body this try sent; NULL: nothing sent
    info=per_trust(),
)
Index("sharing_attempts_by_agency", attempts.c.trust_id, attempts.c.agency_id, attempts.c.attempt_id)
Index("sharing_attempts_by_delivery", attempts.c.delivery_id, attempts.c.attempt)

# The family's notice of each accepted share (sharing/notices.py), written in the share's own
# transaction, before its delivery can go: what, to whom, why, on which basis. No personal data:
# the contact email stays with the consent service and is asked for (sealed) when the notice is
# sent; a withholding's words are sealed with the pupil's key.
family_notices = Table(
    "sharing_family_notices", metadata,
    Column("notice_id", UUID(as_uuid=True), primary_key=True),
    Column("trust_id", UUID(as_uuid=True), nullable=False),
    Column("academy_id", UUID(as_uuid=True), nullable=False),
    Column("pupil_id", UUID(as_uuid=True), nullable=False),
    # No foreign key: an erasure may delete the share's row and this one in either order.
    Column("share_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("agency_id", UUID(as_uuid=True), nullable=False),
    Column("agency_organisation", String(200), nullable=False),
    Column("agency_category", String(40), nullable=False),
    Column("document_kind", String(40), nullable=False),
    Column("purpose", String(60), nullable=False),
    Column("lawful_basis", String(40)),
    Column("consent_obtained", Boolean, nullable=False),
    Column("policy_reference", String(200)),
    Column("shared_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False),  # queued | sent | letter_only | withheld | cancelled
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("withheld_reason", String(64)),
    Column("withheld_reason_sealed", Text),
    Column("withheld_by", String(200)),
    info=per_trust(),
)
Index("sharing_family_notices_due", family_notices.c.next_attempt_at,
      postgresql_where=family_notices.c.status == "queued")

__all__ = ["agencies", "attempts", "deliveries", "family_notices", "metadata", "shares"]
