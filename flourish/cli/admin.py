"""`flourish admin rotate-kek | reapply-erasures`: the key-encryption keyring and restores.

Both run as the owner (DATABASE_URL the migration role's, like `flourish migrate`), with the same
FLOURISH_TOPIC_PREFIX and Kafka as the services; rotate-kek with the keyring the services have
(FLOURISH_DATA_KEK, the active KEK; FLOURISH_DATA_KEK_RETIRED, the ones being retired). Each
records what it did in the audit ledger (an admin action per trust it changed something for).
docs/deployment.md has the runbooks: "Rotating the KEK" and "Restoring consent from a backup".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from shared.events.audit import AdminAction
from shared.messaging.clients import ADMIN, kafka_options
from shared.settings import Settings

app = typer.Typer(help="Rotate the key-encryption key; put erasures back in force after a restore.",
                  no_args_is_help=True)

KEK_ROTATED = AdminAction.KEK_ROTATED  # recorded per trust and kind of secret
Actor = Annotated[str, typer.Option("--actor", help="Your pseudonymous staff id, for the audit record.")]


@app.command("rotate-kek")
def rotate_kek(
    actor: Actor = "operator",
    batch: Annotated[int, typer.Option(help="Secrets rewrapped per transaction.", min=1, max=10_000)] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Rewrap every KEK-wrapped secret (pupils' data keys, agencies' signing secrets) under the
    active KEK, in the database DATABASE_URL names (production: once against consent's, once
    against reporting's). Idempotent and resumable: run it again until it reports nothing left under a
    retired KEK; then the retired KEKs may be removed from the keyring and destroyed. Exit status 1
    if a secret names a KEK the keyring does not hold, or does not unwrap under the one it names."""
    from shared.datakeys import DataKeySettings, KekKeyring

    settings = Settings()
    keyring = KekKeyring.from_settings(DataKeySettings(), settings.state_dir,
                                       production=settings.environment == "production")
    results = asyncio.run(rotate(settings, keyring, actor=actor, batch=batch))
    report = {"active_kek_id": keyring.active_id, "tables": [r.as_json() for r in results]}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(f"active KEK {keyring.active_id}")
        for r in results:
            typer.echo(f"{r.secrets}: before {_counts(r.before)}; rewrapped now {_counts(r.rewrapped)}; "
                       f"under the active KEK now {r.under_active}")
            if r.unknown or r.unreadable:
                typer.echo(f"  REFUSED: under a KEK not in the keyring {_counts(r.unknown)}; "
                           f"not unwrapping under the KEK they name {_counts(r.unreadable)}")
    if not all(r.done for r in results):
        raise typer.Exit(1)


@dataclass
class Rotation:
    secrets: str
    before: dict[str, int]
    rewrapped: dict[str, int]
    unknown: dict[str, int]
    unreadable: dict[str, int]
    under_active: int

    @property
    def done(self) -> bool:
        return not self.unknown and not self.unreadable

    def as_json(self) -> dict[str, Any]:
        return {"secrets": self.secrets, "before": self.before, "rewrapped": self.rewrapped, "unknown": self.unknown,
                "unreadable": self.unreadable, "under_active_kek": self.under_active}


async def rotate(settings: Settings, keyring: Any, *, actor: str, batch: int = 500) -> list[Rotation]:
    """Both kinds of wrapped secret, each recorded in its own service's audit stream; a kind whose
    table is not in this database (production: a database per service) is left for the run
    against that service's database."""
    from sqlalchemy import func, select, text

    from services.consent.tables import data_keys
    from services.consent.tables import kernel as consent_kernel
    from services.reporting.sharing.core import secret_aad
    from services.reporting.sharing.tables import agencies
    from services.reporting.tables import kernel as reporting_kernel
    from shared.audit import record_admin_action
    from shared.datakeys import key_aad, rewrap_table
    from shared.store.db import create_engine
    from shared.store.event_store import EventStore

    kinds = [
        ("data_keys", data_keys, "pupil_id", "wrapped_key", lambda row: key_aad(row.trust_id, row.pupil_id),
         consent_kernel),
        ("agency_signing_secrets", agencies, "agency_id", "secret_wrapped",
         lambda row: secret_aad(row.trust_id, row.agency_id), reporting_kernel),
    ]
    engine = create_engine(settings, pool_size=1)
    results = []
    try:
        for secrets, table, key, wrapped, aad, kernel in kinds:
            async with engine.connect() as conn:
                if await conn.scalar(text("SELECT to_regclass(:t)"), {"t": f"{table.schema}.{table.name}"}) is None:
                    continue  # another service's database (production: one per service): rotate it there
            done = await rewrap_table(engine, table, keyring, key=key, wrapped=wrapped, aad=aad, batch=batch)
            store = EventStore(kernel)
            for trust_id, count in done.by_trust.items():
                async with engine.begin() as conn:
                    await record_admin_action(conn, store, actor, KEK_ROTATED, trust_id=trust_id, target_kind="kek",
                                              target_id=keyring.active_id,
                                              details={"secrets": secrets, "rewrapped": str(count)})
            async with engine.connect() as conn:
                under_active = await conn.scalar(select(func.count()).where(table.c.kek_id == keyring.active_id))
            results.append(Rotation(secrets, done.before, done.rewrapped, done.unknown, done.unreadable,
                                    int(under_active or 0)))
    finally:
        await engine.dispose()
    return results


@app.command("reapply-erasures")
def reapply_erasures(
    actor: Actor = "operator",
    ledger_database_url: Annotated[str | None, typer.Option(
        "--ledger-database-url", envvar="FLOURISH_LEDGER_DATABASE_URL",
        help="The reporting database, which holds the audit ledger (default: DATABASE_URL).")] = None,
    ledger_schema: Annotated[str, typer.Option("--ledger-schema", help="The schema of the audit ledger.",
                                               hidden=True)] = "reporting",
    without_ledger: Annotated[bool, typer.Option(
        "--without-ledger", help="Replay the consent topic alone (no audit ledger reachable).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """After restoring the consent database from a backup: replay the erasure register (every
    PupilErased and RetentionExpired on the consent topic, and every erasure the audit ledger
    recorded), destroy every data key the restore brought back, re-record the erasures and
    expiries, and let the consent service start again. Idempotent. Exit status 1 if afterwards an
    erased pupil still has a key (it never should)."""
    settings = Settings()
    try:
        report = asyncio.run(reapply_all(settings, actor=actor, ledger_schema=ledger_schema,
                                         ledger_database_url=ledger_database_url, without_ledger=without_ledger))
    except RegisterUnreadable as error:
        typer.echo(f"FAILED: {error}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(", ".join(f"{name.replace('_', ' ')} {value}" for name, value in report.items()
                             if not isinstance(value, list | dict)))
    if report["keys_still_back"]:
        raise typer.Exit(1)


class RegisterUnreadable(Exception):
    """Part of the erasure register could not be read: nothing is marked as checked."""


async def ledger_erasures(engine: Any, schema: str) -> list[Any] | None:
    """The erasures and expiries the audit ledger recorded (every trust); None if the database
    holds no ledger."""
    from sqlalchemy import text

    from services.consent.restore import entry_of_ledger

    if not schema.replace("_", "").isalnum():
        raise ValueError(f"{schema!r} is not a schema name")
    async with engine.connect() as conn:
        present = await conn.scalar(text("SELECT to_regclass(:t)"), {"t": f"{schema}.audit_entries"})
        if present is None:
            return None
        rows = await conn.execute(text(
            f"SELECT trust_id, body::jsonb -> 'fact' AS fact FROM \"{schema}\".audit_entries "
            "WHERE kind = 'erasure' ORDER BY trust_id, seq"))
        entries = [entry_of_ledger(row.trust_id, row.fact) for row in rows]
    return [entry for entry in entries if entry is not None]


async def reapply_all(settings: Settings, *, actor: str, ledger_schema: str = "reporting",
                      ledger_database_url: str | None = None, without_ledger: bool = False) -> dict[str, Any]:
    from services.consent.restore import keys_back, mark_checked, read_kafka_register, reapply
    from services.consent.tables import kernel
    from shared.events.envelope import topic_for
    from shared.store.db import create_engine
    from shared.store.event_store import EventStore

    topic = topic_for("consent", settings.topic_prefix)
    try:
        register = await read_kafka_register(kafka_options(settings, ADMIN), topic)
    except Exception as error:  # noqa: BLE001 - Kafka away: replay nothing half, say why
        raise RegisterUnreadable(f"the consent topic {topic} could not be read ({type(error).__name__})") from None
    engine = create_engine(settings, pool_size=1)
    ledger_engine = engine if ledger_database_url is None else create_engine(
        settings.model_copy(update={"database_url": ledger_database_url}), pool_size=1)
    try:
        found = await ledger_erasures(ledger_engine, ledger_schema)
        if found is None and not without_ledger:
            raise RegisterUnreadable("no audit ledger in this database: give the reporting database's URL "
                                     "(--ledger-database-url), or --without-ledger to replay Kafka alone")
        if found is None and register.truncated:
            raise RegisterUnreadable(f"the consent topic {topic} no longer holds its oldest records "
                                     f"(partitions {register.truncated}) and no audit ledger was given to replay")
        ledger = found or []
        entries = register.entries + ledger
        done = await reapply(engine, EventStore(kernel), entries, actor=actor)
        async with engine.begin() as conn:
            still = await keys_back(conn, entries)
            if not still:
                await mark_checked(conn, topic, register.ends)
    finally:
        await engine.dispose()
        if ledger_engine is not engine:
            await ledger_engine.dispose()
    return {"register_entries_on_kafka": len(register.entries), "register_entries_in_ledger": len(ledger),
            "ledger_replayed": found is not None,
            "undecodable_records": register.undecodable, "keys_destroyed_again": done.keys_destroyed,
            "tombstones_made": done.tombstones_made, "erasures_recorded_again": done.erasures_recorded,
            "expiries_recorded_again": done.expiries_recorded, "keys_still_back": len(still),
            "trusts": sorted(str(t) for t in done.by_trust)}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kek_id}: {n}" for kek_id, n in sorted(counts.items())) or "none"
