"""The reporting service's tables, all in its own PostgreSQL schema `reporting`: the kernel's here,
the audit ledger's in services/reporting/audit/tables.py (plain SQL, for its triggers)."""

from sqlalchemy import MetaData

from shared.store.tables import kernel_tables

SCHEMA = "reporting"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)
