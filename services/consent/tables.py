"""The consent service's tables, all in its own PostgreSQL schema `consent`."""

from sqlalchemy import MetaData

from shared.store.tables import kernel_tables

SCHEMA = "consent"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)
