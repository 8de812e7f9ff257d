"""The kernel's tables, in each service's own schema: events, outbox, inbox, idempotency keys.

What the code reads and writes. What the database holds comes from the kernel's migration branch
(shared/store/kernel_migrations), which every service's migrations build on; a change here comes
with a new revision there (tests/integration/schema compares the two)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType

from shared.store import privileges
from shared.tenancy import per_trust, read_across_trusts


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (asyncpg reads and writes it as an int)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


# Reflection (alembic's comparison of tables.py with the database) knows the type by its name.
ischema_names.setdefault("xid8", Xid8)


@dataclass(frozen=True)
class KernelTables:
    schema: str
    events: Table
    outbox: Table
    inbox: Table
    idempotency: Table

    @property
    def notify_channel(self) -> str:
        """The LISTEN/NOTIFY channel that wakes this schema's outbox relay."""
        return f"flourish_outbox_{self.schema}"


def kernel_tables(metadata: MetaData) -> KernelTables:
    """Add the kernel's tables to a service's metadata (whose ``schema`` names the service)."""
    if not metadata.schema:
        raise ValueError("a service's MetaData must name its schema")
    events = Table(
        "events",
        metadata,
        # The global position: insert order. Appends take no schema-wide lock, so a transaction
        # that commits late may hold a position below one already read: readers of the whole
        # store go by (transaction_id, global_position) and stop below the oldest transaction
        # still running (shared/store/event_store.py, read_all).
        Column("global_position", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", Uuid, nullable=False),
        Column("stream_id", Text, nullable=False),
        Column("stream_version", Integer, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("trust_id", Uuid, nullable=False),
        Column("academy_id", Uuid, nullable=False),
        Column("data", JSONB, nullable=False),
        Column("metadata", JSONB, nullable=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # The appending transaction's id (events migrated from before it existed have 0).
        Column("transaction_id", Xid8, nullable=False, server_default=func.pg_current_xact_id()),
        UniqueConstraint("event_id", name="events_event_id_key"),
        # Optimistic concurrency: two writers at the same version cannot both commit.
        UniqueConstraint("stream_id", "stream_version", name="events_stream_version_key"),
        # The order readers of the whole store read in (read_all, the rebuilds).
        Index("events_transaction_order", "transaction_id", "global_position"),
        # No tenant index: the store is read by stream and by position; queries by tenant go to
        # read models, and every index here slows every append.
        info=read_across_trusts("read by stream and by global position (the relay, replays, the append locks), "
                                "never by tenant; aggregates check their trust (docs/security.md)"),
    )
    outbox = Table(
        "outbox",
        metadata,
        # An event waiting to be published, by position; the event row holds the payload.
        Column("global_position", BigInteger, primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    inbox = Table(
        "inbox",
        metadata,
        # Events a consumer has applied, written in the same transaction as their effect.
        Column("consumer", Text, nullable=False),
        Column("event_id", Uuid, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id", name="inbox_pkey"),
        # Only ever inserted (ON CONFLICT DO NOTHING skips a redelivery): the service role gets no
        # UPDATE or DELETE on it (shared/store/privileges.py).
        info={privileges.INFO_KEY: privileges.APPEND_ONLY},
    )
    idempotency = Table(
        "idempotency_keys",
        metadata,
        # A command's Idempotency-Key and the response it produced, written in the command's own
        # transaction: a retried request gets the same answer and has no second effect.
        Column("trust_id", Uuid, nullable=False),
        Column("subject", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("request_hash", Text, nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("response", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("trust_id", "subject", "key", name="idempotency_keys_pkey"),
        # Commands' responses are tenant data; only run_command touches them, in the caller's scope.
        info=per_trust(),
    )
    return KernelTables(schema=metadata.schema, events=events, outbox=outbox, inbox=inbox, idempotency=idempotency)
