"""The reporting service's tables, all in its own PostgreSQL schema `reporting`."""

from sqlalchemy import MetaData

from shared.store.tables import kernel_tables

SCHEMA = "reporting"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)
