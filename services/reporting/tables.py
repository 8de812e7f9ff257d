"""The reporting service's tables, all in its own PostgreSQL schema `reporting`: the kernel's here,
the audit ledger's in services/reporting/audit/tables.py (plain SQL, for its triggers)."""

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, Table, Uuid

from shared.store.tables import kernel_tables
from shared.tenancy import per_trust

SCHEMA = "reporting"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)

# Processing by the online tool (consent's `online_processing`, opt-out): while `opted_out`, the
# child is left out of the dashboards, and their profile and intervention report are refused
# (services/reporting/readmodels/opt_outs.py). Ids and dates only.
processing_opt_outs = Table(
    "processing_opt_outs",
    metadata,
    Column("pupil_id", Uuid, primary_key=True),
    Column("trust_id", Uuid, nullable=False),
    Column("academy_id", Uuid, nullable=False),
    Column("opted_out", Boolean, nullable=False),
    Column("record_version", Integer, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    info=per_trust(),
)
