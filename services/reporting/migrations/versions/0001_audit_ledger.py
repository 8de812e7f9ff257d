"""The audit ledger (services/reporting/audit/tables.py tells what each part is for): entries whose
query columns PostgreSQL generates from the hashed body, signed checkpoints and the chains' heads;
triggers and revoked privileges keep entries and checkpoints append-only for every role. Each
table is one trust's rows, under the tenant policy. The kernel's tables come from the kernel's
first revision (shared/store/kernel_migrations), which this one builds on.

Frozen SQL: the ledger as audit/tables.py wrote it at revision 1 (where tests and benchmarks still
make their throw-away ledgers); a change comes as a new revision, never as an edit here
(tests/integration/schema compares the two).

Revision ID: reporting_0001
Revises: kernel_0001
Create Date: 2026-11-26
"""

from alembic import op

from shared import tenancy

revision = "reporting_0001"
down_revision = "kernel_0001"
branch_labels = None
depends_on = None

SCHEMA = "reporting"


def _generated(name: str, sql_type: str) -> str:
    # Generated columns need an immutable expression; text to timestamptz is only stable, hence
    # audit_instant (the ledger's timestamps are always ISO 8601 in UTC with a Z).
    value = f"(body::jsonb #>> '{{fact,{name}}}')"
    if sql_type == "uuid":
        value = f"{value}::uuid"
    elif sql_type == "timestamptz":
        value = f"reporting.audit_instant{value}"
    return f"{name} {sql_type} GENERATED ALWAYS AS ({value}) STORED"


_GENERATED = ",\n  ".join(_generated(name, sql_type) for name, sql_type in (
    ("event_id", "uuid"), ("kind", "text"), ("action", "text"), ("occurred_at", "timestamptz"),
    ("academy_id", "uuid"), ("actor", "text"), ("pupil_id", "uuid"), ("agency_id", "uuid"),
    ("agency_category", "text"), ("share_id", "uuid"), ("consent_id", "uuid"),
))

STATEMENTS = [
    """CREATE FUNCTION reporting.audit_instant(text) RETURNS timestamptz
       LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT $1::timestamptz $$""",
    f"""CREATE TABLE reporting.audit_entries (
  trust_id uuid NOT NULL,
  seq bigint NOT NULL CHECK (seq > 0),
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{{64}}$'),
  entry_hash text NOT NULL CHECK (entry_hash ~ '^[0-9a-f]{{64}}$'),
  body text NOT NULL,
  {_GENERATED},
  CONSTRAINT audit_entries_pkey PRIMARY KEY (trust_id, seq),
  CONSTRAINT audit_entries_event_id_key UNIQUE (event_id)
)""",
    """CREATE TABLE reporting.audit_checkpoints (
  trust_id uuid NOT NULL,
  seq bigint NOT NULL,
  entry_hash text NOT NULL,
  signed_at timestamptz NOT NULL,
  key_id text NOT NULL,
  signature text NOT NULL,
  CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (trust_id, seq)
)""",
    """CREATE TABLE reporting.audit_chain_heads (
  trust_id uuid PRIMARY KEY,
  head_seq bigint NOT NULL,
  head_hash text NOT NULL,
  checkpoint_seq bigint NOT NULL DEFAULT 0,
  checkpoint_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
)""",
    """CREATE FUNCTION reporting.audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit ledger is append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$""",
    *[
        statement
        for table in ("audit_entries", "audit_checkpoints")
        for statement in (
            f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON reporting.{table}
                FOR EACH STATEMENT EXECUTE FUNCTION reporting.audit_refuse_change()""",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON reporting.{table} FROM PUBLIC, CURRENT_USER",
        )
    ],
    # One index per way a data-protection officer asks (audit/tables.py says why these columns).
    "CREATE INDEX audit_entries_by_action ON reporting.audit_entries (trust_id, action, occurred_at, seq)",
    *[
        f"CREATE INDEX audit_entries_by_{name} ON reporting.audit_entries"
        f" (trust_id, {column}, action, occurred_at, seq)"
        + (f" WHERE {column} IS NOT NULL" if column != "actor" else "")
        for name, column in (("pupil", "pupil_id"), ("agency", "agency_id"), ("category", "agency_category"),
                             ("actor", "actor"), ("academy", "academy_id"))
    ],
    *[
        f"CREATE INDEX audit_entries_by_{name} ON reporting.audit_entries (trust_id, {column}, seq)"
        f" WHERE {column} IS NOT NULL"
        for name, column in (("consent", "consent_id"), ("share", "share_id"))
    ],
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    # Plain SQL, so no op.create_table to declare on: the ledger's tables, named.
    tenancy.enable(SCHEMA, ("audit_entries", "audit_checkpoints", "audit_chain_heads"))


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS reporting.audit_chain_heads, reporting.audit_checkpoints, reporting.audit_entries")
    op.execute("DROP FUNCTION IF EXISTS reporting.audit_refuse_change(), reporting.audit_instant(text)")
