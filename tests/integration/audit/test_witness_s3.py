"""The S3 witness against a real S3 API: versitygw, an S3-compatible gateway built from the Go
module proxy by deploy/tools/install-versitygw.sh on first use, serving a folder of this test's
own. A checkpoint written there is under COMPLIANCE Object Lock: it cannot be deleted, and an
overwrite only adds a newer version, which the witness never takes for the original."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from services.reporting.audit.checkpoints import ChainDoesNotExtendWitness, checkpoint_chain
from services.reporting.audit.cli import app as audit_cli
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.settings import AuditSettings
from services.reporting.audit.witness import WitnessConflict, WitnessUnavailable, configured_witness, ledger_name
from services.reporting.audit.witness_s3 import S3Witness
from tests.integration.audit.conftest import share

ROOT = Path(__file__).resolve().parents[3]
INSTALLER = ROOT / "deploy" / "tools" / "install-versitygw.sh"
ACCESS, SECRET = "flourish-test", "flourish-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=ACCESS,
                            aws_secret_access_key=SECRET)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    result = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"deploy/tools/install-versitygw.sh failed:\n{result.stderr}", pytrace=False)
    binary = result.stdout.strip().splitlines()[-1]
    data, versions = tmp_path_factory.mktemp("s3-data"), tmp_path_factory.mktemp("s3-versions")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path_factory.mktemp("s3-log") / "versitygw.log").open("w")
    server = subprocess.Popen(
        [binary, "--access", ACCESS, "--secret", SECRET, "--port", f"127.0.0.1:{port}",
         "posix", "--versioning-dir", str(versions), str(data)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"versitygw did not start (see {log.name})", pytrace=False)
                time.sleep(0.2)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def s3_witness(s3_server, bucket, ledger, signer, stack_settings, superuser, monkeypatch) -> S3Witness:  # type: ignore[no-untyped-def]
    """The S3 witness configured through the environment only, as in production."""
    for name, value in {
        "FLOURISH_AUDIT_WITNESS": "s3", "FLOURISH_AUDIT_S3_BUCKET": bucket,
        "FLOURISH_AUDIT_S3_ENDPOINT_URL": s3_server.endpoint, "FLOURISH_AUDIT_S3_REGION": "us-east-1",
        "FLOURISH_AUDIT_S3_ACCESS_KEY_ID": ACCESS, "FLOURISH_AUDIT_S3_SECRET_ACCESS_KEY": SECRET,
        "FLOURISH_AUDIT_S3_RETENTION_DAYS": "1", "DATABASE_URL": stack_settings.database_url,
        "FLOURISH_AUDIT_SIGNING_KEY": signer.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
    }.items():
        monkeypatch.setenv(name, value)
    witness = configured_witness(AuditSettings(), ledger_name(stack_settings.database_url, ledger.schema))
    assert isinstance(witness, S3Witness)
    return witness


async def test_a_checkpoint_in_the_bucket_is_under_compliance_lock_and_cannot_be_deleted_or_replaced(
    engine, ledger, signer, s3_witness, s3_server, bucket
):  # type: ignore[no-untyped-def]
    trust_id = uuid.uuid4()
    async with engine.begin() as conn:
        await ledger.append(conn, trust_id, fact_from(share(trust_id, 1)))
        checkpoint = await checkpoint_chain(conn, ledger, signer, trust_id, s3_witness)
    assert await s3_witness.checkpoints(trust_id) == [checkpoint]
    assert await s3_witness.trusts() == [trust_id]

    client, key = s3_server.client(), f"{s3_witness.ledger}/{trust_id}/00000000000000000001.json"
    [version] = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    retention = client.get_object_retention(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] > datetime.now(UTC) + timedelta(hours=23)

    # Deleting the version, even asking to bypass governance retention, is refused.
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"],
                                 BypassGovernanceRetention=bypass)
        assert refused.value.response["Error"]["Code"] in ("AccessDenied", "ObjectLocked", "InvalidRequest")
    # Shortening the retention is refused too.
    with pytest.raises(ClientError):
        client.put_object_retention(Bucket=bucket, Key=key, VersionId=version["VersionId"],
                                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC)})
    # Writing the key again, as the witness would: refused (If-None-Match), or a conflict.
    forged = signer.sign(trust_id, 1, "f" * 64, checkpoint.signed_at)
    with pytest.raises(WitnessConflict):
        await s3_witness.append(forged)
    # A plain overwrite by someone with write credentials adds a newer version at most; the
    # locked original stays, and it is what the witness reads and verify checks against.
    with contextlib.suppress(ClientError):
        client.put_object(Bucket=bucket, Key=key, Body=b'{"forged": true}')
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert version["VersionId"] in {v["VersionId"] for v in versions}
    original = client.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
    assert b"forged" not in original
    assert await s3_witness.checkpoints(trust_id) == [checkpoint]
    # A delete without a version id leaves a delete marker at most: the locked version survives.
    client.delete_object(Bucket=bucket, Key=key)
    assert await s3_witness.checkpoints(trust_id) == [checkpoint]


async def test_verify_and_the_checkpointer_use_the_s3_witness_against_a_rewritten_chain(
    engine, ledger, signer, s3_witness, superuser
):  # type: ignore[no-untyped-def]
    trust_id = uuid.uuid4()
    for n in range(1, 6):
        async with engine.begin() as conn:
            await ledger.append(conn, trust_id, fact_from(share(trust_id, n)))
            if n in (2, 4):
                await checkpoint_chain(conn, ledger, signer, trust_id, s3_witness)
    clean = await asyncio.to_thread(CliRunner().invoke, audit_cli, ["verify", "--schema", ledger.schema])
    assert clean.exit_code == 0 and "last witnessed at entry 4" in clean.output, clean.output
    async with superuser.transaction():  # the tail truncated to entry 3, the checkpoint at 4 deleted
        await superuser.execute("SET LOCAL session_replication_role = replica")
        await superuser.execute(f"DELETE FROM {ledger.entries_table} WHERE trust_id = $1 AND seq > 3", trust_id)
        await superuser.execute(f'DELETE FROM "{ledger.schema}".audit_checkpoints WHERE trust_id = $1 AND seq > 3', trust_id)
        head = await superuser.fetchval(f"SELECT entry_hash FROM {ledger.entries_table} WHERE trust_id = $1 AND seq = 3",
                                        trust_id)
        await superuser.execute(f'UPDATE "{ledger.schema}".audit_chain_heads SET head_seq = 3, head_hash = $2, '
                                "checkpoint_seq = 2 WHERE trust_id = $1", trust_id, head)
    result = await asyncio.to_thread(CliRunner().invoke, audit_cli, ["verify", "--schema", ledger.schema])
    assert result.exit_code == 1, result.output
    assert f"FAILED  trust {trust_id}: entry 4: missing: the witness holds a checkpoint at entry 4" in result.output
    with pytest.raises(ChainDoesNotExtendWitness):
        async with engine.begin() as conn:
            await checkpoint_chain(conn, ledger, signer, trust_id, s3_witness)


async def test_an_unreachable_bucket_fails_verify(engine, ledger, signer, s3_witness, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLOURISH_AUDIT_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(WitnessUnavailable):
        await configured_witness(AuditSettings(), "any.ledger").trusts()
    result = await asyncio.to_thread(CliRunner().invoke, audit_cli, ["verify", "--schema", ledger.schema])
    assert result.exit_code == 1 and "witness unreachable" in result.output, result.output
