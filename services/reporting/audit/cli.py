"""`flourish audit verify | export | check-proof | public-key`: prove nobody altered the audit ledger.

    flourish audit verify                              every trust's chain, in the database
    flourish audit verify --trust <uuid>               one trust's
    flourish audit export --trust <uuid> -o t.jsonl    one trust's chain, for an offline check
    flourish audit verify --export t.jsonl --public-key key.pem     offline: the file and the key only
    flourish audit check-proof proof.json --public-key key.pem      a proof from GET /audit/.../proof

Checkpoint signatures are checked against public keys you supply (--public-key: PEM, JWK, or the
document GET /audit/public-key serves); online, without --public-key, against this installation's
own configured key. Never against a key read from the ledger. Exit status 1 names the first entry
that does not match.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from shared.messaging.clients import kafka_options
from shared.settings import Settings

app = typer.Typer(help="Verify and export the audit ledger (offline too).", no_args_is_help=True)

PublicKeys = Annotated[
    list[Path] | None,
    typer.Option("--public-key", help="A public key to check checkpoints with (PEM, JWK or /audit/public-key JSON); repeatable."),
]
Schema = Annotated[str, typer.Option("--schema", help="The schema holding the ledger.", hidden=True)]


@app.command()
def verify(
    trust: Annotated[list[UUID] | None, typer.Option("--trust", help="Only this trust's chain; repeatable.")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Verify this export file instead of the database.")] = None,
    public_key: PublicKeys = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    schema: Schema = "reporting",
) -> None:
    """Recompute every hash and link, check every checkpoint signature, name the first entry that
    does not match. Online it also checks the ledger's append-only triggers and generated columns.

    Always against the configured witness (FLOURISH_AUDIT_WITNESS*) too: the chain must contain
    every checkpoint the witness holds, and entries older than the checkpoint interval must be
    covered by one. A witness that cannot be read fails verification."""
    from services.reporting.audit.settings import AuditSettings
    from services.reporting.audit.verification import (
        NotAnExport,
        Verification,
        export_trust,
        report_json,
        verify_database,
        verify_export_file,
    )
    from services.reporting.audit.witness import WitnessConflict, WitnessUnavailable

    keys = _public_keys(public_key, online=export is None)
    audit, settings = AuditSettings(), Settings()
    try:
        witness = asyncio.run(_witness_check(audit, settings, schema))
    except WitnessUnavailable as error:
        typer.echo(f"FAILED: the witness cannot be read: {error}")
        raise typer.Exit(1) from None
    if export is not None:
        try:
            witnessed = asyncio.run(witness.checkpoints(export_trust(export)))
            result = Verification(reports=[verify_export_file(export, keys, _progress, witnessed, witness)])
        except (OSError, NotAnExport) as error:
            typer.echo(f"cannot read {export}: {error}", err=True)
            raise typer.Exit(2) from None
        except (WitnessUnavailable, WitnessConflict) as error:
            result = Verification(defences=[f"witness unreachable: {error}"])
    else:
        result = asyncio.run(verify_database(settings.sync_database_url, schema, keys, trust or None, _progress,
                                             witness=witness))
    _clear_progress()
    if as_json:
        typer.echo(json.dumps({"ok": result.ok, "defences": result.defences,
                               "chains": [report_json(r) for r in result.reports]}, indent=2))
    else:
        for problem in result.defences:
            typer.echo(f"LEDGER  {problem}")
        typer.echo(f"witness {witness.names}")
        for report in result.reports:
            typer.echo(_describe(report))
        verdict = "OK" if result.ok else "FAILED"
        typer.echo(f"{verdict}: {len(result.reports)} chain(s), {result.entries} entries verified")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def export(
    trust: Annotated[UUID, typer.Option("--trust", help="The trust whose chain to export.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (JSON lines).")],
    actor: Annotated[
        str, typer.Option("--actor", help="Your pseudonymous staff id, for the audit record of this export.")
    ] = "operator",
    schema: Schema = "reporting",
) -> None:
    """Write one trust's chain, checkpoints and head to a file that `verify --export` checks
    offline. The export itself is recorded in the ledger (an admin action)."""
    from services.reporting.audit.verification import export_chain

    settings = Settings()
    with output.open("wb") as out:
        count = asyncio.run(export_chain(settings.sync_database_url, schema, trust, out, _progress))
    _clear_progress()
    if schema == "reporting":
        asyncio.run(_record_export(settings, trust, actor, count))
    typer.echo(f"exported {count} entries of trust {trust} to {output}")


@app.command()
def recover(
    trust: Annotated[UUID, typer.Option("--trust", help="The trust whose chain to bring back to its witness.")],
    schema: Schema = "reporting",
) -> None:
    """After restoring the reporting database from an older backup: re-record, from Kafka, the
    entries the backup lacks, exactly as they were (each must hash to what the witnessed
    checkpoints signed, or nothing is written), then the events published since. Run
    `flourish audit verify` afterwards."""
    from services.reporting.audit.audit_topic import CHECKPOINTS_CONTEXT, KafkaTopicWitness
    from services.reporting.audit.ledger import Ledger
    from services.reporting.audit.recover import RecoveryRefused, recover_chain
    from services.reporting.audit.witness import ledger_name
    from shared.events.envelope import topic_for
    from shared.store.db import create_engine

    settings = Settings()
    kafka = kafka_options(settings, "reporting")
    topic = KafkaTopicWitness(kafka, topic_for(CHECKPOINTS_CONTEXT, settings.topic_prefix),
                              ledger_name(settings.database_url, schema))

    async def run() -> Any:
        engine = create_engine(settings, pool_size=1)
        try:
            return await recover_chain(engine, Ledger(schema), trust, topic, kafka,
                                       settings.topic_prefix)
        finally:
            await engine.dispose()

    try:
        done = asyncio.run(run())
    except RecoveryRefused as error:
        typer.echo(f"FAILED: {error}")
        raise typer.Exit(1) from None
    typer.echo(f"recovered trust {trust}: {done.rebuilt} entries re-recorded as witnessed, {done.recorded} "
               f"recorded afresh; the chain ends at entry {done.head_seq}")


@app.command("check-proof")
def check_proof(
    proof: Annotated[Path, typer.Argument(help="A proof from GET /audit/shares/<id>/proof or /audit/entries/<seq>/proof.")],
    public_key: PublicKeys = None,
) -> None:
    """Check a proof for one entry: its hash, the chain to a checkpoint, the signature."""
    from services.reporting.audit.proofs import check_proof as check

    document = json.loads(proof.read_text())
    keys = _public_keys(public_key, online=True)
    problems = [check(document, key) for key in keys.values()]
    if any(problem is None for problem in problems):
        entry = document["entry"]
        typer.echo(f"OK: entry {entry['seq']} is covered by checkpoint {document['checkpoint']['seq']}, "
                   f"signed with key {document['checkpoint']['key_id']}")
        return
    typer.echo(f"FAILED: {problems[0]}")
    raise typer.Exit(1)


@app.command("public-key")
def public_key_command() -> None:
    """Print this installation's checkpoint public key (the document GET /audit/public-key serves)."""
    from services.reporting.audit.settings import AuditSettings
    from services.reporting.audit.signing import configured_public_key, public_key_document

    key = configured_public_key(AuditSettings())
    if key is None:
        typer.echo("no checkpoint signing key is configured here", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(public_key_document(key), indent=2))


async def _witness_check(audit: Any, settings: Settings, schema: str) -> Any:
    """The configured witnesses, and the events on Kafka the ledger should hold (read once)."""
    from services.reporting.audit.audit_topic import CHECKPOINTS_CONTEXT, KafkaTopicWitness, ledger_events
    from services.reporting.audit.verification import WitnessCheck
    from services.reporting.audit.witness import WitnessUnavailable, configured_witness, ledger_name
    from shared.events.envelope import topic_for

    name = ledger_name(settings.database_url, schema)
    also, events = [], None
    if audit.witness_topic:
        kafka = kafka_options(settings, "reporting")
        also.append(KafkaTopicWitness(kafka,
                                      topic_for(CHECKPOINTS_CONTEXT, settings.topic_prefix), name))
        try:
            events = await asyncio.wait_for(ledger_events(kafka, settings.topic_prefix), 120)
        except Exception as error:  # noqa: BLE001 - Kafka away: the cross-check cannot be made, which fails verify
            raise WitnessUnavailable(f"kafka {settings.kafka_bootstrap_servers}: {type(error).__name__}") from None
    return WitnessCheck(configured_witness(audit, name), also=also, events=events,
                        unwitnessed_limit_s=audit.checkpoint_every_s + audit.unwitnessed_grace_s,
                        lag_grace_s=audit.topic_lag_grace_s)


def _public_keys(paths: list[Path] | None, online: bool) -> dict[str, Any]:
    from services.reporting.audit.domain.chain import key_id_of
    from services.reporting.audit.settings import AuditSettings
    from services.reporting.audit.signing import configured_public_key, load_public_key

    keys = []
    for path in paths or []:
        try:
            keys.append(load_public_key(path.read_text()))
        except (OSError, ValueError, KeyError) as error:
            typer.echo(f"cannot use {path} as a public key: {error}", err=True)
            raise typer.Exit(2) from None
    if not keys and online:
        settings = AuditSettings()
        configured = configured_public_key(settings)
        if configured is not None:
            keys.append(configured)
            # Keys it replaced (FLOURISH_AUDIT_PREVIOUS_PUBLIC_KEYS): older checkpoints still verify.
            for path in settings.previous_public_keys:
                try:
                    keys.append(load_public_key(path.read_text()))
                except (OSError, ValueError, KeyError) as error:
                    typer.echo(f"cannot use previous public key {path}: {error}", err=True)
                    raise typer.Exit(2) from None
    if not keys:
        typer.echo("no public key to check checkpoints with: pass --public-key (from GET /audit/public-key)", err=True)
        raise typer.Exit(2)
    return {key_id_of(key): key for key in keys}


def _describe(report: Any) -> str:
    if report.mismatch is not None:
        return f"FAILED  trust {report.trust_id}: {report.mismatch.describe()}"
    signed = f"last checkpoint at entry {report.last_checkpoint.seq}" if report.last_checkpoint else "no checkpoint yet"
    witnessed = f"last witnessed at entry {report.last_witnessed.seq}" if report.last_witnessed else "none witnessed yet"
    return (f"ok      trust {report.trust_id}: {report.entries} entries, {report.checkpoints} checkpoints, "
            f"{signed}, {witnessed}, {report.unsigned_entries} not yet signed")


def _progress(trust_id: UUID, entries: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  trust {trust_id}: {entries:,} entries", end="", file=sys.stderr, flush=True)


def _clear_progress() -> None:
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)


async def _record_export(settings: Settings, trust: UUID, actor: str, count: int) -> None:
    from services.reporting.tables import kernel
    from shared.audit import AdminAction, record_admin_action
    from shared.store.db import create_engine
    from shared.store.event_store import EventStore

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            await record_admin_action(conn, EventStore(kernel), actor, AdminAction.AUDIT_EXPORTED, trust_id=trust,
                                      target_kind="audit_ledger", target_id=str(trust), details={"entries": str(count)})
    finally:
        await engine.dispose()


if __name__ == "__main__":
    app()
