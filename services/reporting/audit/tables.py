"""The audit ledger's tables, in the reporting service's schema, as plain SQL.

Plain SQL rather than SQLAlchemy models because what matters here is what SQLAlchemy does not
model: generated columns, the triggers that refuse change and the privileges that do too. These
statements make the throw-away ledgers of tests and benchmarks; migration reporting_0001 froze the
same SQL for the real ledger, and tests/integration/schema checks the two make the same ledger, so
what is tested is what runs (a change here comes with a new revision).

audit_entries      one row per entry: its canonical JSON (`body`), its hash, its predecessor's hash.
                   The query columns are *generated* by PostgreSQL from the body: no one can write
                   a column that disagrees with the hashed record.
audit_checkpoints  signed statements of a chain's head.
audit_chain_heads  per trust, the last entry and the last checkpoint: the row the writer locks, so
                   that one trust's entries are chained one at a time. Derived state, mutable.

Append-only: BEFORE UPDATE/DELETE/TRUNCATE triggers raise for everyone, the table's owner and
superusers included, and UPDATE, DELETE and TRUNCATE are revoked from the role that runs the
migration (the schema's owner). The reporting service connects as `flourish_reporting`, which owns
nothing and is granted PRIVILEGES only (the migration step applies them,
shared/store/privileges.py): it can neither change an entry nor disable the triggers nor grant
itself more (only an owner can); tests/integration/roles shows PostgreSQL refusing each.
"""

from __future__ import annotations

ENTRIES = "audit_entries"
CHECKPOINTS = "audit_checkpoints"
HEADS = "audit_chain_heads"
IMMUTABLE_TABLES = (ENTRIES, CHECKPOINTS)
# The reporting service role's privileges on the ledger (the rest of its tables: its MetaData).
PRIVILEGES = {
    ENTRIES: frozenset({"SELECT", "INSERT"}),
    CHECKPOINTS: frozenset({"SELECT", "INSERT"}),
    HEADS: frozenset({"SELECT", "INSERT", "UPDATE"}),
}
# Their tenancy, declared here because they are plain SQL: each row is one trust's, under the
# tenant policy (shared/tenancy.py).
PER_TRUST_TABLES = (ENTRIES, CHECKPOINTS, HEADS)

# The columns PostgreSQL derives from an entry's body: (name, type, path in the body).
GENERATED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("event_id", "uuid", "event_id"),
    ("kind", "text", "kind"),
    ("action", "text", "action"),
    ("occurred_at", "timestamptz", "occurred_at"),
    ("academy_id", "uuid", "academy_id"),
    ("actor", "text", "actor"),
    ("pupil_id", "uuid", "pupil_id"),
    ("agency_id", "uuid", "agency_id"),
    ("agency_category", "text", "agency_category"),
    ("share_id", "uuid", "share_id"),
    ("consent_id", "uuid", "consent_id"),
)

# Every audit query filters on the trust, usually an action (shares, reads) and a date range,
# ordered by time; one index per way a data-protection officer asks (by pupil, agency, category,
# staff member, academy). With the action in the key a page of 50 shares reads 50 rows, not
# every read and consent decision of that staff member or academy in between.
_QUERY_INDEXES = (
    ("by_pupil", "pupil_id"),
    ("by_agency", "agency_id"),
    ("by_category", "agency_category"),
    ("by_actor", "actor"),
    ("by_academy", "academy_id"),
)


def _q(schema: str) -> str:
    if not schema.replace("_", "").isalnum() or not schema[0].isalpha():
        raise ValueError(f"{schema!r} is not a safe schema name")
    return f'"{schema}"'


def _generated(schema: str, name: str, sql_type: str, path: str) -> str:
    value = f"(body::jsonb #>> '{{fact,{path}}}')"
    if sql_type == "uuid":
        value = f"{value}::uuid"
    elif sql_type == "timestamptz":
        value = f"{_q(schema)}.audit_instant{value}"
    return f"{name} {sql_type} GENERATED ALWAYS AS ({value}) STORED"


def table_statements(schema: str) -> list[str]:
    """The ledger's function, tables and immutability, without the query indexes."""
    s = _q(schema)
    generated = ",\n  ".join(_generated(schema, *column) for column in GENERATED_COLUMNS)
    return [
        # Generated columns need an immutable expression; text to timestamptz is only stable (it
        # reads DateStyle and TimeZone), but the ledger's timestamps are always ISO 8601 in UTC
        # with a Z, which parse the same under every setting.
        f"""CREATE FUNCTION {s}.audit_instant(text) RETURNS timestamptz
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT $1::timestamptz $$""",
        f"""CREATE TABLE {s}.{ENTRIES} (
  trust_id uuid NOT NULL,
  seq bigint NOT NULL CHECK (seq > 0),
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{{64}}$'),
  entry_hash text NOT NULL CHECK (entry_hash ~ '^[0-9a-f]{{64}}$'),
  body text NOT NULL,
  {generated},
  CONSTRAINT {ENTRIES}_pkey PRIMARY KEY (trust_id, seq),
  CONSTRAINT {ENTRIES}_event_id_key UNIQUE (event_id)
)""",
        f"""CREATE TABLE {s}.{CHECKPOINTS} (
  trust_id uuid NOT NULL,
  seq bigint NOT NULL,
  entry_hash text NOT NULL,
  signed_at timestamptz NOT NULL,
  key_id text NOT NULL,
  signature text NOT NULL,
  CONSTRAINT {CHECKPOINTS}_pkey PRIMARY KEY (trust_id, seq)
)""",
        f"""CREATE TABLE {s}.{HEADS} (
  trust_id uuid PRIMARY KEY,
  head_seq bigint NOT NULL,
  head_hash text NOT NULL,
  checkpoint_seq bigint NOT NULL DEFAULT 0,
  checkpoint_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
)""",
        f"""CREATE FUNCTION {s}.audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit ledger is append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$""",
        *[
            statement
            for table in IMMUTABLE_TABLES
            for statement in (
                f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {s}.{table}
                    FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_refuse_change()""",
                f"REVOKE UPDATE, DELETE, TRUNCATE ON {s}.{table} FROM PUBLIC, CURRENT_USER",
            )
        ],
    ]


def index_statements(schema: str) -> list[str]:
    s = _q(schema)
    statements = [f"CREATE INDEX {ENTRIES}_by_action ON {s}.{ENTRIES} (trust_id, action, occurred_at, seq)"]
    statements += [
        f"CREATE INDEX {ENTRIES}_{name} ON {s}.{ENTRIES} (trust_id, {column}, action, occurred_at, seq)"
        + (f" WHERE {column} IS NOT NULL" if column != "actor" else "")
        for name, column in _QUERY_INDEXES
    ]
    statements += [
        f"CREATE INDEX {ENTRIES}_by_consent ON {s}.{ENTRIES} (trust_id, consent_id, seq) WHERE consent_id IS NOT NULL",
        f"CREATE INDEX {ENTRIES}_by_share ON {s}.{ENTRIES} (trust_id, share_id, seq) WHERE share_id IS NOT NULL",
    ]
    return statements


def create_statements(schema: str) -> list[str]:
    return [*table_statements(schema), *index_statements(schema)]


def drop_statements(schema: str) -> list[str]:
    s = _q(schema)
    return [
        f"DROP TABLE IF EXISTS {s}.{HEADS}, {s}.{CHECKPOINTS}, {s}.{ENTRIES}",
        f"DROP FUNCTION IF EXISTS {s}.audit_refuse_change(), {s}.audit_instant(text)",
    ]
