"""The assessment service's tables, all in its own PostgreSQL schema `assessment`."""

from sqlalchemy import MetaData

from shared.store.tables import kernel_tables

SCHEMA = "assessment"

metadata = MetaData(schema=SCHEMA)
kernel = kernel_tables(metadata)
