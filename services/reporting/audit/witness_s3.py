"""The S3 witness: every checkpoint an object in a bucket with Object Lock, in COMPLIANCE mode.

<bucket>/<ledger>/<trust_id>/<seq>.json, written once (If-None-Match: *) with a COMPLIANCE
retention: until it expires nobody — not the bucket's owner, not the account's root — can delete
that object version or shorten its retention. A later PUT to the same key (by someone holding
write credentials) only adds a newer version; the witness always reads the OLDEST version of each
key, the one under retention, and reports a conflict if a newer one differs.

The bucket must have been created with Object Lock enabled (and so versioning); what S3 does
not protect against is in docs/audit.md ("Witnesses"). boto3, the AWS SDK for Python, speaks to
AWS S3 or any S3-compatible server (tests: versitygw); its blocking calls run in a thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from services.reporting.audit.domain.chain import Checkpoint
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.witness import (
    WitnessConflict,
    WitnessUnavailable,
    checkpoint_document,
    checkpoint_name,
    parse_checkpoint,
)


@dataclass
class S3Witness:
    client: Any
    bucket: str
    ledger: str
    retention: timedelta
    # Checkpoints already read, by key and version: a locked version never changes, so each is
    # fetched once per process (the checkpointer reads a trust's witness every round).
    _read: dict[tuple[str, str], Checkpoint] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.ledger}"

    @classmethod
    def from_settings(cls, settings: AuditSettings, ledger: str) -> S3Witness:
        if not settings.s3_bucket:
            raise WitnessUnavailable("FLOURISH_AUDIT_WITNESS=s3 needs FLOURISH_AUDIT_S3_BUCKET")
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=15,
                          s3={"addressing_style": "path"}),
        )
        return cls(client, settings.s3_bucket, ledger, timedelta(days=settings.s3_retention_days))

    def _key(self, trust_id: UUID, name: str = "") -> str:
        return f"{self.ledger}/{trust_id}/{name}"

    async def append(self, checkpoint: Checkpoint) -> None:
        await asyncio.to_thread(self._append, checkpoint)

    def _append(self, checkpoint: Checkpoint) -> None:
        key = self._key(checkpoint.trust_id, checkpoint_name(checkpoint))
        try:
            existing = self._oldest(key)
            if existing is None:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=checkpoint_document(checkpoint), ContentType="application/json",
                    IfNoneMatch="*", ObjectLockMode="COMPLIANCE",
                    ObjectLockRetainUntilDate=datetime.now(UTC) + self.retention,
                )
                return
        except ClientError as error:
            if _code(error) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise WitnessUnavailable(f"{self.name}: cannot write {key}: {_code(error)}") from None
            existing = self._oldest(key)
        except BotoCoreError as error:
            raise WitnessUnavailable(f"{self.name}: cannot write {key}: {type(error).__name__}") from None
        if existing != checkpoint:
            raise WitnessConflict(f"{self.name} already holds a different checkpoint at entry {checkpoint.seq} "
                                  f"of trust {checkpoint.trust_id}")

    def _oldest(self, key: str) -> Checkpoint | None:
        """The first version ever written at this key (the one under retention), or None."""
        versions = [v for v in self._versions(key) if v["Key"] == key]
        if not versions:
            return None
        # S3 lists a key's versions newest first; LastModified has only second resolution, so the
        # order is what tells the first version written from one put within the same second.
        first = min(reversed(versions), key=lambda v: v["LastModified"])
        cached = (key, first["VersionId"])
        if cached not in self._read:
            body = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=first["VersionId"])["Body"].read()
            self._read[cached] = parse_checkpoint(body, f"{self.name}/{key}")
        return self._read[cached]

    def _versions(self, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
            found += page.get("Versions", [])
        return found

    async def checkpoints(self, trust_id: UUID) -> list[Checkpoint]:
        return await asyncio.to_thread(self._checkpoints, trust_id)

    def _checkpoints(self, trust_id: UUID) -> list[Checkpoint]:
        try:
            keys = sorted({v["Key"] for v in self._versions(self._key(trust_id))})
            found = []
            for key in keys:
                checkpoint = self._oldest(key)
                if checkpoint is None or checkpoint.trust_id != trust_id or not key.endswith(checkpoint_name(checkpoint)):
                    raise WitnessUnavailable(f"{self.name}: {key} does not hold the checkpoint its name says")
                found.append(checkpoint)
            return found
        except (ClientError, BotoCoreError) as error:
            raise WitnessUnavailable(f"{self.name}: cannot read trust {trust_id}: {_describe(error)}") from None

    async def trusts(self) -> list[UUID]:
        return await asyncio.to_thread(self._trusts)

    def _trusts(self) -> list[UUID]:
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.ledger}/", Delimiter="/"
            ):
                for prefix in page.get("CommonPrefixes", []):
                    try:
                        found.append(UUID(prefix["Prefix"].rstrip("/").rsplit("/", 1)[-1]))
                    except ValueError:
                        continue
        except (ClientError, BotoCoreError) as error:
            raise WitnessUnavailable(f"{self.name}: cannot list: {_describe(error)}") from None
        return sorted(found)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "error"))


def _describe(error: Exception) -> str:
    return _code(error) if isinstance(error, ClientError) else type(error).__name__
