"""The planning service's tables, all in its own PostgreSQL schema `planning`."""

from sqlalchemy import MetaData

from shared.store.tables import kernel_tables

SCHEMA = "planning"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)
