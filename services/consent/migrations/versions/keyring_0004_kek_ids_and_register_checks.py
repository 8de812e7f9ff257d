"""The key-encryption keyring and the restore check (issue 15, item 3).

* `data_keys`: every wrapped key names the KEK it was wrapped under (the check constraint: a
  wrapped key without a kek_id, or a kek_id without a wrapped key, is refused). Every row written
  since revision 1 already carries its KEK's id (`local:<fingerprint>` for the KEK of
  FLOURISH_DATA_KEK or the dev KEK), so the existing rows are marked as they are: the fingerprint
  of the single KEK is its id in the keyring, and nothing needs rewriting.
* `erasure_register_checks`: per partition of the consent topic, the offset up to which the
  service has checked, at start, that every erasure published there has its key tombstone here.
  A restore rolls this back with the rest, so the next start reads the erasures published since
  the backup and refuses to start until `flourish admin reapply-erasures` has run.

Revision ID: consent_0004_keyring
Revises: consent_0003_idempotency_rls
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "consent_0004_keyring"
down_revision = "consent_0003_idempotency_rls"
branch_labels = None
depends_on = None

SCHEMA = "consent"


def upgrade() -> None:
    op.create_check_constraint("data_keys_kek_id_names_the_wrapping", "data_keys",
                               "(wrapped_key IS NULL) = (kek_id IS NULL)", schema=SCHEMA)
    op.create_table(
        "erasure_register_checks",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name="erasure_register_checks_pkey"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("erasure_register_checks", schema=SCHEMA)
    op.drop_constraint("data_keys_kek_id_names_the_wrapping", "data_keys", schema=SCHEMA, type_="check")
