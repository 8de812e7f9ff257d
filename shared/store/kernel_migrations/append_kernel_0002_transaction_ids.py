"""Issue 18 item 1, appends that do not serialise: every event row carries the id of the
transaction that appended it, and readers of the whole store read by (transaction id, position).

Appends no longer take the schema's append lock, so global positions are insert order, not commit
order: a transaction that appends first and commits last leaves a position below events already
committed. A reader that orders by (transaction_id, global_position) and stops below the oldest
transaction still running never skips such an event (shared/store/event_store.py, read_all).

Events already stored get transaction id 0: they were appended under the lock, so their positions
are their commit order, and they all precede every event appended from now on (ALTER TABLE waits
for every transaction that appended to finish). A constant default first (no table rewrite),
then the default every new row takes.

Revision ID: kernel_0002
Revises: kernel_0001
Create Date: 2026-12-05
"""

from alembic import op

from shared.store.migrations import service_schema

revision = "kernel_0002"
down_revision = "kernel_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = service_schema()
    op.execute(f'ALTER TABLE "{schema}".events ADD COLUMN transaction_id xid8 NOT NULL DEFAULT \'0\'')
    op.execute(f'ALTER TABLE "{schema}".events ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id()')
    op.execute(f'CREATE INDEX events_transaction_order ON "{schema}".events (transaction_id, global_position)')


def downgrade() -> None:
    schema = service_schema()
    op.execute(f'DROP INDEX "{schema}".events_transaction_order')
    op.execute(f'ALTER TABLE "{schema}".events DROP COLUMN transaction_id')
