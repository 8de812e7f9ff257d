"""The audit ledger's settings (environment variables FLOURISH_AUDIT_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import STATE_DIR


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOURISH_AUDIT_", extra="ignore")

    # The Ed25519 key that signs checkpoints: PEM (PKCS#8) text, or a file holding it. With
    # neither, a development key is made once at dev_key_path (never rely on it in production: a
    # checkpoint is only worth the secrecy of the key that signed it). Every local process — the
    # platform, the tests, the CLI — shares that one file, as they share the local database, so
    # the local ledger always verifies with the local key.
    signing_key: SecretStr | None = None
    signing_key_path: Path | None = None
    dev_key_path: Path = STATE_DIR / "audit" / "checkpoint-signing-key.pem"

    # A chain gets a signed checkpoint every this many entries, or this many seconds after its
    # last one if anything was added since, whichever comes first.
    checkpoint_every_entries: int = Field(default=500, ge=1)
    checkpoint_every_s: float = Field(default=60.0, gt=0)
    checkpoint_poll_s: float = Field(default=1.0, gt=0)

    # Public keys that signed earlier checkpoints (after a key rotation): files with a PEM, a JWK
    # or GET /audit/public-key's document. The current key is always trusted.
    previous_public_keys: list[Path] = Field(default_factory=list)

    # The service re-verifies every chain from its first entry this often (the first time a few
    # minutes after it starts); a failure raises flourish_audit_verification_failures_total.
    verify_every_s: float = Field(default=6 * 3600.0, gt=0)
    verify_first_after_s: float = Field(default=300.0, ge=0)

    # Where every signed checkpoint is also kept, out of the database's reach (witness.py): an
    # append-only directory (the default in development, one file per checkpoint) or an S3 bucket
    # with Object Lock (production). The checkpointer will not sign a chain that does not extend
    # the witness's last checkpoint, and `flourish audit verify` reads the witness by default.
    witness: Literal["dir", "s3"] = "dir"
    witness_dir: Path = STATE_DIR / "audit" / "witness"
    # The S3 witness (witness_s3.py): a bucket created with Object Lock enabled; each checkpoint is
    # kept under COMPLIANCE retention for this many days. Credentials: these, or boto3's usual
    # chain (environment, instance or pod identity) when unset.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "eu-west-2"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_retention_days: int = Field(default=3650, ge=1)
    # Every checkpoint is also published on Kafka (<prefix>audit.checkpoints, kept forever), and
    # verify cross-checks the entries no witnessed checkpoint covers yet against the events on the
    # topics the ledger records from: an event published this long ago must be in the ledger.
    witness_topic: bool = True
    topic_lag_grace_s: float = Field(default=120.0, ge=0)

    # Entries this much older than the checkpoint interval and still not witnessed fail verify
    # (a chain whose checkpoints were deleted, or a checkpointer stopped for that long).
    unwitnessed_grace_s: float = Field(default=300.0, ge=0)

    # The largest CSV export one request may stream.
    csv_max_rows: int = Field(default=1_000_000, ge=1)
