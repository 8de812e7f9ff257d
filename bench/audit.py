"""The audit ledger: append rate, verify rate (online and from an export), and the "who shared
what with which agency" query over a million entries, each beside a raw-asyncpg baseline.

* ``audit.ledger.append``: ReportShared events recorded as the ledger's consumer records them
  (fact, canonical JSON, SHA-256, chain-head lock, insert into the ledger with its generated
  columns and indexes), 100 per transaction. Baseline ``asyncpg.executemany.plain``: the same
  bodies inserted with ``executemany`` into a plain (id, body) table, no chain, no indexes.
* ``audit.verify.online``: ``flourish audit verify``'s database path over one trust's chain of
  ENTRIES entries with a signed checkpoint every 500 (two halves at once, in one snapshot: the
  second read and hashed by a forked second process, as the CLI does on a machine with two
  cores), witness check included: every checkpoint is also in a directory witness, which verify
  reads and checks the chain against, with the ledger's own defences. Baseline
  ``asyncpg.cursor.read``: reading the same rows as two halves at once in this one process,
  20,000 a fetch, verifying nothing. Goal ≥ 200,000 entries/s.
* ``audit.verify.offline``: the same chain from an export file, against the same witness.
  Baseline ``orjson.loads.lines``: parsing the file's lines, verifying nothing.
* ``audit.query.who_shared.p95``: ``GET /audit/shares`` over HTTP (a real socket, uvicorn, the
  reporting service's app and middleware): the DPO's bearer token verified, the request's
  transaction scoped to the caller's trust so row-level security (FORCE, the tenant policy) filters
  every row, then the page (50 shares of last term with their basis, agency, document, every
  consent decision each rested on, delivery outcomes and deletion notices; by period alone or with
  an agency, category, staff member, pupil or academy) and the AuditQueried fact recorded in the
  same transaction, the JSON answer read by the client; over a ledger of ENTRIES entries.
  Baseline ``asyncpg.select.p95``: the plain page query (no consent, no audit record, no HTTP, no
  token) on a raw connection. Goal ≤ 20 ms. The same page called in-process (no HTTP, no token) is
  printed too, to show where the time goes.

The million entries are made by one ``INSERT ... SELECT`` (a recursive CTE chains their hashes in
PostgreSQL itself: no Python loop), then indexed and vacuumed, as a restored ledger would be.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import HIGHER_IS_BETTER, LOWER_IS_BETTER, Figure, fresh_schema, info, own_database, percentile, unique
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.queries import AuditQueries, EntryFilter, Period
from services.reporting.audit.signing import CheckpointSigner
from services.reporting.audit.tables import (
    ENTRIES,
    PER_TRUST_TABLES,
    create_statements,
    index_statements,
    table_statements,
)
from services.reporting.audit.verification import (
    SecondProcess,
    WitnessCheck,
    export_chain,
    verify_database,
    verify_export_file,
)
from services.reporting.audit.witness import DirectoryWitness
from shared.audit import record_audit_query
from shared.events.consent import AgencyCategory
from shared.events.envelope import Envelope
from shared.events.reporting import ReportShared
from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.event_store import EventStore
from shared.tenancy import row_level_security

ENTRIES_DEFAULT = 1_000_000
TRUST = uuid.UUID("00000000-0000-4000-8000-00000000a0d1")
CHECKPOINT_EVERY = 500
QUERIES_PER_SHAPE = 50
TERM = Period(date(2026, 9, 1), date(2026, 12, 18))
AGENCIES, PUPILS, STAFF, ACADEMIES, CONSENTS = 200, 20_000, 300, 20, 40_000
TWO_YEARS_S = 2 * 365 * 86_400


async def run(scale: float = 1.0) -> list[dict[str, Any]]:
    """Every audit figure, as the JSON-line dicts bench/__main__.py prints."""
    from flourish.local.stack import ensure_stack

    endpoints = ensure_stack()
    async with own_database(endpoints.database_url, "audit") as database_url:  # never the live database
        settings = Settings(database_url=database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers)
        return await _run(settings, scale)


async def _run(settings: Settings, scale: float) -> list[dict[str, Any]]:
    entries = max(10_000, int(ENTRIES_DEFAULT * scale))
    engine = create_engine(settings, pool_size=2)
    figures: list[Figure] = []
    try:
        figures.append(await append_rate(engine, settings, events=max(500, int(3000 * scale))))
        with tempfile.TemporaryDirectory() as witness_root:
            async with ledger_of(engine, settings, entries, Path(witness_root)) as (ledger, signer):
                figures += await verify_rates(settings, ledger, signer, entries, Path(witness_root))
                figures.append(await query_p95(engine, settings, ledger, entries))
    finally:
        await engine.dispose()
    return [json.loads(figure.json_line()) for figure in figures]


# --- Append ---------------------------------------------------------------------------------------


def _share(n: int) -> Envelope:
    data = ReportShared(
        share_id=uuid.uuid4(), pupil_id=uuid.uuid4(), agency_id=uuid.uuid4(), agency_category="camhs",
        document_kind="report", consent_id=uuid.uuid4(), shared_by=f"staff-{n % STAFF}",
        shared_at=datetime.now(UTC),
    )
    return Envelope(data=data, trust_id=TRUST if n % 2 else uuid.UUID(int=n % 8 + 1), academy_id=uuid.uuid4(),
                    source="/flourish/reporting")


async def append_rate(engine: AsyncEngine, settings: Settings, events: int, per_transaction: int = 100) -> Figure:
    schema = unique("bench_audit_append_")
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        for statement in create_statements(schema):
            await conn.execute(text(statement))
    ledger = Ledger(schema)
    try:
        envelopes = [_share(n) for n in range(events + per_transaction)]
        batches = [envelopes[i:i + per_transaction] for i in range(0, len(envelopes), per_transaction)]
        info(f"audit append: {events} shares over 5 trusts, {per_transaction} per transaction (+1 warm-up batch)")

        async def record(batch: list[Envelope]) -> None:
            async with engine.begin() as conn:
                for envelope in batch:
                    await ledger.append(conn, envelope.trust_id, fact_from(envelope))

        await record(batches[0])
        t0 = time.perf_counter()
        for batch in batches[1:]:
            await record(batch)
        ours = events / (time.perf_counter() - t0)
        info(f"audit append: ledger {ours:,.0f} entries/s")

        async with engine.connect() as conn:
            bodies = [(uuid.uuid4(), body) for (body,) in await conn.execute(text(f'SELECT body FROM "{schema}".{ENTRIES}'))]
        raw_conn = await asyncpg.connect(settings.sync_database_url)
        try:
            await raw_conn.execute(f'CREATE TABLE "{schema}".plain (id uuid PRIMARY KEY, body text NOT NULL)')
            sql = f'INSERT INTO "{schema}".plain (id, body) VALUES ($1, $2)'
            plain = [bodies[i:i + per_transaction] for i in range(0, len(bodies), per_transaction)]
            async with raw_conn.transaction():
                await raw_conn.executemany(sql, plain[0])
            t0 = time.perf_counter()
            for rows in plain[1:]:
                async with raw_conn.transaction():
                    await raw_conn.executemany(sql, rows)
            raw = sum(len(rows) for rows in plain[1:]) / (time.perf_counter() - t0)
        finally:
            await raw_conn.close()
        info(f"audit append: raw asyncpg executemany {raw:,.0f} rows/s")
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return Figure("audit.ledger.append", ours, "entries/s", "asyncpg.executemany.plain", raw, HIGHER_IS_BETTER)


# --- A million entries ----------------------------------------------------------------------------

# One trust's chain: every fifth entry a consent decision, two in five shares with the consent
# they rested on, the rest reads of pupils' data; 200 agencies, 20,000 pupils, 300 staff, 20
# academies, two years of history (a million entries: one every 63 s). Each body is the entry's canonical
# JSON (sorted keys, no whitespace), its hash chained to the one before by the recursive CTE.
_FACT_SQL = """
CASE WHEN g % 5 = 1 THEN format(
  '{"academy_id":"%s","action":"consent_granted","actor":"office-%s","consent_id":"%s","details":{"covers":["report"],"method":"paper","record_version":1},"event_id":"%s","event_type":"flourish.consent.ConsentGranted.v1","kind":"consent","occurred_at":"%s","pupil_id":"%s","purpose":"share_camhs","recorded_at":"%s","source":"/flourish/consent"}',
  academy, g % 40, consent, event, at, pupil, at)
WHEN g % 5 IN (2, 3) THEN format(
  '{"academy_id":"%s","action":"share","actor":"staff-%s","agency_category":"%s","agency_id":"%s","consent_id":"%s","details":{"agency_name":"Agency-%s","basis_id":"%s","basis_stream_id":"consent-%s-share_camhs","consent_obtained":true,"delivery_id":"%s","document_id":"%s","document_kind":"report","document_sha256":"%s","lawful_basis":"consent","record_version":1},"event_id":"%s","event_type":"flourish.reporting.ReportShared.v1","kind":"disclosure","occurred_at":"%s","pupil_id":"%s","recorded_at":"%s","share_id":"%s","source":"/flourish/reporting"}',
  academy, g % {staff}, category, agency, consent, g % {agencies}, consent, pupil, md5('delivery' || g)::uuid,
  md5('document' || g)::uuid, encode(sha256(convert_to('document' || g, 'UTF8')), 'hex'), event, at, pupil, at,
  md5('share' || g)::uuid)
ELSE format(
  '{"academy_id":"%s","action":"personal_data_read","actor":"staff-%s","details":{"data_categories":["profile"],"route":"/pupils/{pupil_id}/profile"},"event_id":"%s","event_type":"flourish.audit.PersonalDataRead.v1","kind":"access","occurred_at":"%s","pupil_id":"%s","recorded_at":"%s","source":"/flourish/assessment"}',
  academy, g % {staff}, event, at, pupil, at)
END
"""

_CATEGORIES = "ARRAY[" + ",".join(f"'{c.value}'" for c in AgencyCategory) + "]"


def _generate_sql(schema: str, count: int) -> str:
    fact = _FACT_SQL.replace("{staff}", str(STAFF)).replace("{agencies}", str(AGENCIES))
    step_s = round(TWO_YEARS_S / count, 3)  # two years of history whatever the count: last term is in it
    return f"""
    INSERT INTO "{schema}".{ENTRIES} (trust_id, seq, prev_hash, entry_hash, body)
    WITH RECURSIVE chain(seq, prev_hash, entry_hash, body) AS (
      SELECT 0::bigint, NULL::text, repeat('0', 64), NULL::text
      UNION ALL
      SELECT n.seq, c.entry_hash, encode(sha256(convert_to(n.body, 'UTF8')), 'hex'), n.body
      FROM chain c CROSS JOIN LATERAL (
        SELECT g AS seq,
               format('{{"chain":{{"prev_hash":"%s","seq":%s,"trust_id":"{TRUST}"}},"fact":%s}}', c.entry_hash, g, {fact}) AS body
        FROM (SELECT c.seq + 1 AS g) s,
        LATERAL (SELECT md5('academy' || (g % {ACADEMIES}))::uuid AS academy,
                        md5('consent' || ((g / 5) % {CONSENTS}))::uuid AS consent,
                        md5('event' || g)::uuid AS event,
                        md5('pupil' || (g % {PUPILS}))::uuid AS pupil,
                        md5('agency' || (g % {AGENCIES}))::uuid AS agency,
                        ({_CATEGORIES})[1 + (g % {AGENCIES}) % 6] AS category,
                        to_char((timestamptz '2025-09-01 00:00:00+00' + g * interval '{step_s} seconds') AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at) v
      ) n
      WHERE c.seq < {count}
    )
    SELECT '{TRUST}', seq, prev_hash, entry_hash, body FROM chain WHERE seq > 0
    """


@asynccontextmanager
async def ledger_of(
    engine: AsyncEngine, settings: Settings, count: int, witness_root: Path | None = None
) -> AsyncIterator[tuple[Ledger, CheckpointSigner]]:
    schema = unique("bench_audit_")
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        for statement in table_statements(schema):
            await conn.execute(text(statement))
    try:
        t0 = time.perf_counter()
        raw = await asyncpg.connect(settings.sync_database_url)  # plain SQL: no bind-parameter parsing
        try:
            await raw.execute(_generate_sql(schema, count))
        finally:
            await raw.close()
        info(f"audit ledger: {count:,} chained entries generated in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        async with engine.begin() as conn:
            for statement in index_statements(schema):
                await conn.execute(text(statement))
            for table in PER_TRUST_TABLES:  # under the tenant policy, as the reporting schema's ledger
                for statement in row_level_security(schema, table):
                    await conn.execute(text(statement))
        # VACUUM, not only ANALYZE: a ledger's entries were committed long ago and read since, so
        # their rows' commit hints are set; rows fresh from the INSERT would have the first read
        # (the verify figure, timed first) write every page to set them.
        raw = await asyncpg.connect(settings.sync_database_url)
        try:
            await raw.execute(f'VACUUM (ANALYZE) "{schema}".{ENTRIES}')
        finally:
            await raw.close()
        info(f"audit ledger: indexed and vacuumed in {time.perf_counter() - t0:.0f}s")
        ledger = Ledger(schema)
        async with engine.begin() as conn:
            rows = await conn.execute(text(
                f'SELECT seq, entry_hash FROM "{schema}".{ENTRIES} WHERE trust_id = :t AND seq % :n = 0 ORDER BY seq'
            ), {"t": TRUST, "n": CHECKPOINT_EVERY})
            signed_at = datetime.now(UTC) - timedelta(days=30)
            witness = DirectoryWitness(witness_root, schema) if witness_root else None
            for seq, entry_hash in rows.all():
                checkpoint = signer.sign(TRUST, seq, entry_hash, signed_at + timedelta(milliseconds=seq))
                await ledger.add_checkpoint(conn, checkpoint)
                if witness is not None:
                    await witness.append(checkpoint)
            await conn.execute(text(
                f"""INSERT INTO "{schema}".audit_chain_heads (trust_id, head_seq, head_hash)
                    SELECT trust_id, seq, entry_hash FROM "{schema}".{ENTRIES} WHERE trust_id = :t ORDER BY seq DESC LIMIT 1
                    ON CONFLICT (trust_id) DO UPDATE SET head_seq = EXCLUDED.head_seq, head_hash = EXCLUDED.head_hash"""
            ), {"t": TRUST})
        yield ledger, signer
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


# --- Verify ---------------------------------------------------------------------------------------


async def verify_rates(
    settings: Settings, ledger: Ledger, signer: CheckpointSigner, count: int, witness_root: Path
) -> list[Figure]:
    keys = {signer.key_id: signer.public_key}
    check = WitnessCheck(DirectoryWitness(witness_root, ledger.schema), unwitnessed_limit_s=3600.0)
    processes = "two processes" if SecondProcess.possible() else "one process"
    t0 = time.perf_counter()  # as `flourish audit verify --trust`: defences, witness, chain
    result = await verify_database(settings.sync_database_url, ledger.schema, keys, [TRUST], witness=check)
    online = result.entries / (time.perf_counter() - t0)
    [report] = result.reports
    if not result.ok or report.entries != count or report.witnessed != count // CHECKPOINT_EVERY:
        raise RuntimeError(f"the bench chain did not verify: {report.mismatch} {result.defences}")
    info(f"audit verify online: {report.entries:,} entries, {report.checkpoints} checkpoints "
         f"({report.witnessed} witnessed), {online:,.0f} entries/s ({processes})")
    conn, helper = await asyncpg.connect(settings.sync_database_url), await asyncpg.connect(settings.sync_database_url)
    try:

        async def read(connection: asyncpg.Connection, after: int, upto: int) -> int:
            read = 0
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                cursor = await connection.cursor(
                    f"""SELECT seq, prev_hash, entry_hash, body FROM {ledger.entries_table}
                        WHERE trust_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq""", TRUST, after, upto
                )
                while batch := await cursor.fetch(20_000):
                    read += len(batch)
            return read

        t0 = time.perf_counter()  # the same two halves, read at once, verifying nothing
        halves = await asyncio.gather(read(conn, 0, count // 2), read(helper, count // 2, count))
        raw_read = sum(halves) / (time.perf_counter() - t0)
        info(f"audit verify online: raw cursor read {raw_read:,.0f} rows/s")
    finally:
        await conn.close()
        await helper.close()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.jsonl"
        with path.open("wb") as out:
            await export_chain(settings.sync_database_url, ledger.schema, TRUST, out)
        info(f"audit verify offline: export of {path.stat().st_size / 1e6:.0f} MB")
        t0 = time.perf_counter()
        witnessed = await check.checkpoints(TRUST)
        offline_report = verify_export_file(path, keys, witnessed=witnessed, witness=check)
        offline = offline_report.entries / (time.perf_counter() - t0)
        if not offline_report.ok or offline_report.witnessed != count // CHECKPOINT_EVERY:
            raise RuntimeError(f"the bench export did not verify: {offline_report.mismatch}")
        t0 = time.perf_counter()
        with path.open("rb") as lines:
            parsed = sum(1 for line in lines if orjson.loads(line) is not None)
        parse = parsed / (time.perf_counter() - t0)
    info(f"audit verify offline: {offline:,.0f} entries/s; reading and parsing the lines alone {parse:,.0f} lines/s")
    return [
        Figure("audit.verify.online", online, "entries/s", "asyncpg.cursor.read", raw_read, HIGHER_IS_BETTER),
        Figure("audit.verify.offline", offline, "entries/s", "orjson.loads.lines", parse, HIGHER_IS_BETTER),
    ]


# --- Query ----------------------------------------------------------------------------------------


def _query_shapes(rng: random.Random) -> list[EntryFilter]:
    def md5_uuid(text_value: str) -> uuid.UUID:
        return uuid.UUID(hashlib.md5(text_value.encode()).hexdigest())

    shapes = []
    for _ in range(QUERIES_PER_SHAPE):
        base = {"trust_id": TRUST, "period": TERM, "actions": ("share",)}
        shapes += [
            EntryFilter(**base),
            EntryFilter(**base, agency_id=md5_uuid(f"agency{rng.randrange(AGENCIES)}")),
            EntryFilter(**base, agency_category=rng.choice(list(AgencyCategory))),
            EntryFilter(**base, staff_id=f"staff-{rng.randrange(STAFF)}"),
            EntryFilter(**base, pupil_id=md5_uuid(f"pupil{rng.randrange(PUPILS)}")),
            EntryFilter(**base, academy_id=md5_uuid(f"academy{rng.randrange(ACADEMIES)}")),
        ]
    rng.shuffle(shapes)
    return shapes


def _plain_page(ledger: Ledger, flt: EntryFilter) -> tuple[str, list[Any]]:
    """The baseline: the same page of shares as plain SQL, no consent, nothing recorded."""
    args: list[Any] = [flt.trust_id, flt.period.lower, flt.period.upper, "share"]
    clauses = ["trust_id = $1", "occurred_at >= $2", "occurred_at < $3", "action = $4"]
    for column, value in (("agency_id", flt.agency_id), ("agency_category", flt.agency_category),
                          ("actor", flt.staff_id), ("pupil_id", flt.pupil_id), ("academy_id", flt.academy_id)):
        if value is not None:
            args.append(value.value if isinstance(value, AgencyCategory) else value)
            clauses.append(f"{column} = ${len(args)}")
    sql = f"SELECT seq, body FROM {ledger.entries_table} WHERE {' AND '.join(clauses)} ORDER BY occurred_at, seq LIMIT 51"
    return sql, args


def _http_params(flt: EntryFilter) -> dict[str, str]:
    """The same question as `flt`, as GET /audit/shares's query string."""
    params = {"from": TERM.start.isoformat(), "to": TERM.end.isoformat()}  # type: ignore[union-attr]
    for name, value in (("agency_id", flt.agency_id), ("agency_category", flt.agency_category),
                        ("staff_id", flt.staff_id), ("pupil_id", flt.pupil_id), ("academy_id", flt.academy_id)):
        if value is not None:
            params[name] = value.value if isinstance(value, AgencyCategory) else str(value)
    return params


@asynccontextmanager
async def _serving_audit(settings: Settings, schema: str, kernel: Any) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The reporting service's app (its middleware, auth and audit routes) serving the ledger in
    `schema` on a real socket; yields its URL and a DPO's Authorization header. API role: no
    consumers or background tasks; its outbox (the AuditQueried facts) is `kernel`'s, dropped after."""
    import socket

    import uvicorn

    from services.reporting.app import SPEC
    from services.reporting.audit import Audit, AuditSettings, audit_router
    from shared.auth import DevIssuer, Role
    from shared.service import create_app

    state = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    app_settings = settings.model_copy(update={
        "role": "api", "topic_prefix": f"bench.{uuid.uuid4().hex[:10]}.", "state_dir": state,
        "jwks_path": state / "dev-issuer" / "jwks.json", "log_level": "WARNING",
    })
    token = DevIssuer(app_settings).issue("dpo-bench", [Role.dpo], TRUST)
    from flourish.kafka_acls import provision

    await provision(app_settings)  # the prefix's topics and the services' ACLs, as Kafka's admin

    @asynccontextmanager
    async def build(runtime: Any) -> AsyncIterator[Any]:
        yield type("BenchReporting", (), {"audit": Audit.of(AuditSettings(), schema)})()

    spec = replace(SPEC, tables=kernel, routers=[audit_router()], consumers=(), background_tasks=(), bootstrap=build,
                   keyring=None)  # the audit API seals nothing
    app = create_app(spec, app_settings)
    # IPPROTO_TCP, as uvicorn's own --host/--port socket is: asyncio sets TCP_NODELAY only on such
    # sockets' connections; on a bare socket() each answer would wait out a 40 ms delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(600):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if not server.started:
            raise RuntimeError("the audit API did not start")
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    finally:
        server.should_exit = True
        await task
        sock.close()
        from flourish.kafka_acls import deprovision

        await deprovision(app_settings, app_settings.topic_prefix)  # its topics and ACLs


async def query_p95(engine: AsyncEngine, settings: Settings, ledger: Ledger, count: int) -> Figure:
    import httpx

    queries = AuditQueries(ledger.schema)
    shapes = _query_shapes(random.Random(7))
    info(f"audit query: {len(shapes)} 'who shared what with which agency' pages over {count:,} entries")
    async with fresh_schema(engine, "audit_query") as kernel:
        # In process (no HTTP, no token): where the time goes.
        store = EventStore(kernel)
        timings = []
        for n, flt in enumerate(shapes[:20] + shapes):  # the first 20 warm the caches, untimed
            t0 = time.perf_counter()
            async with engine.begin() as conn:
                rows = await queries.shares_page(conn, flt, None, 51)
                await record_audit_query(conn, store, "dpo-bench", "shares", trust_id=TRUST, filters=flt.described(),
                                         result_count=min(len(rows), 50))
            if n >= 20:
                timings.append(time.perf_counter() - t0)
        info(f"audit query in process: p50 {percentile(timings, 50) * 1000:.2f} ms, "
             f"p95 {percentile(timings, 95) * 1000:.2f} ms")

        # Through HTTP, as a DPO asks: token, tenant scope (row-level security), page, audit record.
        http_timings, found = [], 0
        async with (_serving_audit(settings, ledger.schema, kernel) as (url, auth),
                    httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client):
            for n, flt in enumerate(shapes[:20] + shapes):
                t0 = time.perf_counter()
                response = await client.get("/audit/shares", params=_http_params(flt))
                items = response.json()["items"] if response.status_code == 200 else None
                took = time.perf_counter() - t0
                if items is None:
                    raise RuntimeError(f"GET /audit/shares answered {response.status_code}: {response.text[:300]}")
                if n >= 20:
                    http_timings.append(took)
                    found += len(items)
        ours = percentile(http_timings, 95) * 1000
        info(f"audit query over HTTP (auth, RLS): p50 {percentile(http_timings, 50) * 1000:.2f} ms, p95 {ours:.2f} ms, "
             f"{found / len(http_timings):.0f} shares per page on average")

    conn = await asyncpg.connect(settings.sync_database_url)
    try:
        raw_timings = []
        for n, flt in enumerate(shapes[:20] + shapes):
            sql, args = _plain_page(ledger, flt)
            t0 = time.perf_counter()
            await conn.fetch(sql, *args)
            if n >= 20:
                raw_timings.append(time.perf_counter() - t0)
        raw = percentile(raw_timings, 95) * 1000
        info(f"audit query: raw asyncpg plain page p95 {raw:.2f} ms")
    finally:
        await conn.close()
    return Figure("audit.query.who_shared.p95", ours, "ms", "asyncpg.select.p95", raw, LOWER_IS_BETTER)


if __name__ == "__main__":  # python -m bench.audit [scale]
    import sys

    for line in asyncio.run(run(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)):
        print(json.dumps(line), flush=True)
