"""Alembic environment of the reporting service (its schema only): the kernel's tables, the read
models and sharing (the audit ledger is plain SQL, outside any metadata). The read models belong
to the rebuild role (`flourish_reporting_rebuild`), which swaps in rebuilt copies at run time."""

from services.reporting.audit.tables import PRIVILEGES as LEDGER
from services.reporting.readmodels.tables import LIVE, NAMES
from services.reporting.sharing.tables import metadata as sharing
from services.reporting.tables import metadata
from shared.store.migrations import run_env

run_env(metadata, LIVE.metadata, sharing, plain_privileges=LEDGER, rebuildable=NAMES)
