"""Verifying the ledger where it lives (PostgreSQL) or from an export file, and writing exports.

Online verification reads each trust's chain in one consistent snapshot straight through asyncpg
(millions of rows: no ORM in the way), and also checks the ledger's own defences: the append-only
triggers are there and enabled, and the query columns are still generated from the hashed body.
A long chain is verified as two halves at once, the second by a forked process (`SecondProcess`)
when the machine has a second core: reading rows and SHA-256 are CPU-bound and hold the GIL.

An export is JSON lines, one trust per file:

    {"format": "flourish.audit.export.v1", "trust_id": ..., "exported_at": ...}
    [seq, prev_hash, entry_hash, body]                    one line per entry, in order
    {"checkpoint": {...}}                                 right after the entry it covers
    {"end": {"entries": n, "head": {"seq": ..., "entry_hash": ...}}}

The last line's absence means the file was cut short, and verification says so.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast
from uuid import UUID

import asyncpg
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.reporting.audit.domain.canonical import instant
from services.reporting.audit.domain.chain import (
    ChainHead,
    ChainReport,
    ChainVerifier,
    Checkpoint,
    EntryRow,
    Mismatch,
    event_id_in,
)
from services.reporting.audit.tables import CHECKPOINTS, ENTRIES, GENERATED_COLUMNS, HEADS, IMMUTABLE_TABLES
from services.reporting.audit.witness import Witness, WitnessConflict, WitnessUnavailable

if TYPE_CHECKING:
    from services.reporting.audit.audit_topic import Published

EXPORT_FORMAT = "flourish.audit.export.v1"
EVENT_ID_KEY = '"event_id":"'  # how an entry's canonical JSON records its event id
BATCH = 20_000
READ_BATCH = 2_000  # rows per fetch when verifying: a batch sits in the socket's buffers while the last is hashed

Progress = Callable[[UUID, int], None]


@dataclass
class Verification:
    """The outcome for every chain checked, and the ledger's own defences."""

    reports: list[ChainReport] = field(default_factory=list)
    defences: list[str] = field(default_factory=list)  # problems found with the triggers and columns

    @property
    def ok(self) -> bool:
        return not self.defences and all(report.ok for report in self.reports)

    @property
    def entries(self) -> int:
        return sum(report.entries for report in self.reports)


def _tables(schema: str) -> tuple[str, str, str]:
    return tuple(f'"{schema}".{name}' for name in (ENTRIES, CHECKPOINTS, HEADS))  # type: ignore[return-value]


@dataclass(frozen=True)
class WitnessCheck:
    """Verify against a witness: every checkpoint it holds must be in the chain, and entries older
    than `unwitnessed_limit_s` must be covered by one of them."""

    witness: Witness
    unwitnessed_limit_s: float | None = None
    now: datetime | None = None
    also: Sequence[Witness] = ()  # further witnesses (the Kafka topic): their checkpoints count too
    # The events the ledger should hold, per trust (audit_topic.ledger_events): those published
    # more than `lag_grace_s` ago and no longer than `cover_s` before the last witnessed
    # checkpoint must be in the chain, so the entries no checkpoint covers yet are checked too.
    events: Mapping[UUID, Mapping[UUID, Published]] | None = None
    lag_grace_s: float = 120.0
    cover_s: float = 3600.0

    def too_old(self, recorded_at: datetime) -> bool:
        if self.unwitnessed_limit_s is None:
            return False
        return recorded_at < (self.now or datetime.now(UTC)) - timedelta(seconds=self.unwitnessed_limit_s)

    @property
    def names(self) -> str:
        return ", ".join(w.name for w in (self.witness, *self.also))

    async def trusts(self) -> set[UUID]:
        found: set[UUID] = set()
        for witness in (self.witness, *self.also):
            found.update(await witness.trusts())
        return found

    async def checkpoints(self, trust_id: UUID) -> list[Checkpoint]:
        """What every witness holds for the trust, as one list (WitnessConflict if two differ)."""
        merged: dict[int, Checkpoint] = {}
        for witness in (self.witness, *self.also):
            for checkpoint in await witness.checkpoints(trust_id):
                if merged.setdefault(checkpoint.seq, checkpoint) != checkpoint:
                    raise WitnessConflict(f"{witness.name} and another witness hold different checkpoints at "
                                          f"entry {checkpoint.seq} of trust {trust_id}")
        return [merged[seq] for seq in sorted(merged)]

    def expected_events(self, report: ChainReport) -> list[Published]:
        """The trust's events that must be in its chain, oldest first."""
        if self.events is None:
            return []
        now = self.now or datetime.now(UTC)
        newest = now - timedelta(seconds=self.lag_grace_s)
        oldest = report.last_witnessed.signed_at - timedelta(seconds=self.cover_s) if report.last_witnessed else None
        return sorted((e for e in self.events.get(report.trust_id, {}).values()
                       if e.published_at <= newest and (oldest is None or e.published_at >= oldest)),
                      key=lambda e: e.published_at)


def missing_event(report: ChainReport, event: Published) -> None:
    since = f"after the last witnessed checkpoint (entry {report.last_witnessed.seq})" if report.last_witnessed \
        else "with no witnessed checkpoint"
    report.mismatch = Mismatch(
        report.last_seq + 1,
        f"missing: event {event.event_id} ({event.event_type}), published on {event.topic} at "
        f"{instant(event.published_at)}, is not in the chain: entries {since} were removed, or never recorded "
        "(see the audit-ledger consumer's dead letters)", str(event.event_id))


async def verify_database(
    dsn: str,
    schema: str,
    public_keys: Mapping[str, Ed25519PublicKey],
    trust_ids: Iterable[UUID] | None = None,
    progress: Progress | None = None,
    witness: WitnessCheck | None = None,
    *,
    processes: bool = True,
) -> Verification:
    """Every chain in the database (and, with a witness, every chain the witness knows of: a trust
    whose entries were all deleted is still checked against its witnessed checkpoints).

    `processes`: verify the second half of long chains in a forked process when that is safe
    (`SecondProcess.if_possible`); else both halves are read at once in this process."""
    second = SecondProcess.if_possible(dsn) if processes else None
    conn = await asyncpg.connect(dsn)
    helper = await asyncpg.connect(dsn)
    try:
        entries, _, heads = _tables(schema)
        result = Verification(defences=await check_defences(conn, schema))
        if trust_ids is None:
            rows = await conn.fetch(f"SELECT trust_id FROM {heads} UNION SELECT DISTINCT trust_id FROM {entries} ORDER BY 1")
            trust_ids = [row["trust_id"] for row in rows]
            if witness is not None:
                try:
                    trust_ids = sorted(set(trust_ids) | await witness.trusts())
                except (WitnessUnavailable, WitnessConflict) as error:
                    result.defences.append(f"witness unreachable: {error}")
                    return result
        for trust_id in trust_ids:
            witnessed: list[Checkpoint] = []
            if witness is not None:
                try:
                    witnessed = await witness.checkpoints(trust_id)
                except (WitnessUnavailable, WitnessConflict) as error:
                    result.defences.append(f"witness unreachable: {error}")
                    return result
            report = await verify_chain(conn, schema, trust_id, public_keys, progress, helper=helper, witnessed=witnessed,
                                        second=second)
            if witness is not None and report.ok:
                await _check_unwitnessed(conn, entries, report, witness)
            if witness is not None and report.ok:
                await _check_events(conn, entries, report, witness)
            result.reports.append(report)
        return result
    finally:
        await helper.close()
        await conn.close()
        if second is not None:
            second.close()


async def _check_unwitnessed(conn: asyncpg.Connection, entries: str, report: ChainReport, witness: WitnessCheck) -> None:
    first = (report.last_witnessed.seq if report.last_witnessed else 0) + 1
    if first > report.last_seq:
        return
    body = await conn.fetchval(f"SELECT body FROM {entries} WHERE trust_id = $1 AND seq = $2", report.trust_id, first)
    unwitnessed_too_long(report, first, body, witness)


async def _check_events(conn: asyncpg.Connection, entries: str, report: ChainReport, witness: WitnessCheck) -> None:
    expected = witness.expected_events(report)
    if not expected:
        return
    present = {row["event_id"] for row in await conn.fetch(
        f"SELECT event_id FROM {entries} WHERE trust_id = $1 AND event_id = ANY($2::uuid[])",
        report.trust_id, [e.event_id for e in expected])}
    for event in expected:
        if event.event_id not in present:
            missing_event(report, event)
            return


def unwitnessed_too_long(report: ChainReport, seq: int, body: str | None, witness: WitnessCheck) -> None:
    """Fail the report if entry `seq`, the first no witnessed checkpoint covers, is older than the
    checkpoint interval allows (its checkpoints deleted, or the checkpointer or witness stopped)."""
    recorded = recorded_at_in(body or "")
    if recorded is not None and witness.too_old(recorded):
        since = "no witnessed checkpoint" if report.last_witnessed is None else \
            f"the last witnessed checkpoint (entry {report.last_witnessed.seq})"
        report.mismatch = Mismatch(seq, f"not witnessed: recorded at {instant(recorded)}, longer ago than the "
                                        f"checkpoint interval allows, and {since} covers it", event_id_in(body or ""))


def recorded_at_in(body: str) -> datetime | None:
    try:
        return datetime.fromisoformat(orjson.loads(body)["fact"]["recorded_at"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


async def verify_chain(
    conn: asyncpg.Connection,
    schema: str,
    trust_id: UUID,
    public_keys: Mapping[str, Ed25519PublicKey],
    progress: Progress | None = None,
    helper: asyncpg.Connection | None = None,
    *,
    batch: int = READ_BATCH,
    split_from: int = 4 * BATCH,
    witnessed: Sequence[Checkpoint] = (),
    second: SecondProcess | None = None,
) -> ChainReport:
    """One trust's chain, its checkpoints and its head, all read in one snapshot.

    With a `helper` connection or a `second` process a long chain is verified as two halves at
    once, in the same snapshot: on `helper`, PostgreSQL reads one half while this process hashes
    the other; in `second`, another process reads and hashes the second half on its own
    connection while this one does the first. The second half starts from the stored hash of the
    entry before it, and the first half must end on exactly that hash, so the halves verify as
    one chain.
    """
    entries, checkpoints, heads = _tables(schema)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow(f"SELECT head_seq, head_hash FROM {heads} WHERE trust_id = $1", trust_id)
        end = ChainHead(head["head_seq"], head["head_hash"]) if head else None
        signed = [_checkpoint(row) for row in await conn.fetch(
            f"SELECT trust_id, seq, entry_hash, signed_at, key_id, signature FROM {checkpoints} WHERE trust_id = $1 ORDER BY seq",
            trust_id,
        )]
        boundary = None
        if (helper is not None or second is not None) and end is not None and end.seq >= split_from:
            row = await conn.fetchrow(
                f"SELECT seq, entry_hash FROM {entries} WHERE trust_id = $1 AND seq >= $2 ORDER BY seq LIMIT 1",
                trust_id, end.seq // 2,
            )
            boundary = ChainHead(row["seq"], row["entry_hash"]) if row else None
        if boundary is None:
            verifier = ChainVerifier(trust_id, public_keys)
            verifier.expect_checkpoints(signed)
            verifier.expect_checkpoints(witnessed, witnessed=True)
            await _read_into(conn, entries, trust_id, verifier, 0, None, batch, progress)
            return verifier.finish(end)
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        first = ChainVerifier(trust_id, public_keys)
        first.expect_checkpoints(c for c in signed if c.seq <= boundary.seq)
        first.expect_checkpoints((c for c in witnessed if c.seq <= boundary.seq), witnessed=True)
        later = _Half(schema, trust_id, _raw_keys(public_keys), snapshot, boundary, end, batch,
                      [c for c in signed if c.seq > boundary.seq], [c for c in witnessed if c.seq > boundary.seq])
        if second is not None:
            _, second_report = await asyncio.gather(
                _read_into(conn, entries, trust_id, first, 0, boundary.seq, batch, progress),
                second.verify(later),
            )
            return _joined(first.finish(boundary), second_report)
        assert helper is not None
        _, second_report = await asyncio.gather(
            _read_into(conn, entries, trust_id, first, 0, boundary.seq, batch, progress),
            _verify_half(helper, later),
        )
        return _joined(first.finish(boundary), second_report)


@dataclass(frozen=True)
class _Half:
    """The second half of a chain, as another connection or process verifies it: everything it
    needs is in here (picklable: the public keys as raw bytes)."""

    schema: str
    trust_id: UUID
    keys: dict[str, bytes]
    snapshot: str  # pg_export_snapshot() of the transaction that read the head and checkpoints
    start: ChainHead  # the entry before the half: its stored hash is where the half's chain starts
    end: ChainHead | None  # the chain head, which the half must end on
    batch: int
    signed: list[Checkpoint]
    witnessed: list[Checkpoint]


async def _verify_half(conn: asyncpg.Connection, half: _Half) -> ChainReport:
    entries = _tables(half.schema)[0]
    keys = {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in half.keys.items()}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{half.snapshot}'")
        verifier = ChainVerifier(half.trust_id, keys, start=half.start)
        verifier.expect_checkpoints(half.signed)
        verifier.expect_checkpoints(half.witnessed, witnessed=True)
        await _read_into(conn, entries, half.trust_id, verifier, half.start.seq, None, half.batch, None)
        return verifier.finish(half.end)


def _raw_keys(public_keys: Mapping[str, Ed25519PublicKey]) -> dict[str, bytes]:
    return {key_id: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            for key_id, key in public_keys.items()}


class SecondProcess:
    """A second process that verifies the second half of long chains while this one does the
    first: reading rows and hashing them are CPU-bound and hold the GIL (hashlib releases it only
    for inputs over 2 KiB), so a second thread would not help, a second core does.

    The process is forked (it needs nothing imported or sent but the half's bounds, snapshot and
    keys), once per verification, and connects on its own with the same DSN. Forking is only done
    from a process with no other thread running (a lock another thread held would stay held in the
    child), on a machine with two cores or more, where fork exists; elsewhere `if_possible` says
    None and both halves are read at once in this process, as before.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))

    @staticmethod
    def possible() -> bool:
        return ((os.cpu_count() or 1) >= 2 and "fork" in multiprocessing.get_all_start_methods()
                and threading.active_count() == 1)

    @classmethod
    def if_possible(cls, dsn: str) -> SecondProcess | None:
        return cls(dsn) if cls.possible() else None

    async def verify(self, half: _Half) -> ChainReport:
        return await asyncio.wrap_future(self._pool.submit(_verify_half_in_process, self.dsn, half))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _verify_half_in_process(dsn: str, half: _Half) -> ChainReport:
    """In the second process: its own event loop and connection, the half's report back."""

    async def verify() -> ChainReport:
        conn = await asyncpg.connect(dsn)
        try:
            return await _verify_half(conn, half)
        finally:
            await conn.close()

    return asyncio.run(verify())


async def _read_into(
    conn: asyncpg.Connection, entries: str, trust_id: UUID, verifier: ChainVerifier,
    after: int, upto: int | None, batch: int, progress: Progress | None,
) -> None:
    cursor = await conn.cursor(
        f"""SELECT seq, prev_hash, entry_hash, body FROM {entries}
            WHERE trust_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq""",
        trust_id, after, upto if upto is not None else 2**62,
    )
    # The next batch is asked for before this one is hashed: PostgreSQL reads and sends it (into
    # the socket's buffers) while this process hashes, instead of each waiting on the other.
    pending = asyncio.ensure_future(cursor.fetch(batch))
    try:
        while rows := await pending:
            pending = asyncio.ensure_future(cursor.fetch(batch))
            await asyncio.sleep(0)  # lets the fetch send its request before the CPU-bound work
            # A Record unpacks like the (seq, prev_hash, entry_hash, body) tuple the verifier reads.
            if not verifier.feed(cast("list[EntryRow]", rows)):
                return
            if progress:
                progress(trust_id, verifier.report.entries)
    finally:
        if not pending.done():
            await asyncio.wait([pending])  # never leave a query running on the connection
        if not pending.cancelled():
            pending.exception()  # retrieved: a read that fails after the verdict changes nothing


def _joined(first: ChainReport, second: ChainReport) -> ChainReport:
    """Two halves' reports as one: the first mismatch in chain order wins. When the first half
    fails, the report is the first half's alone, as a straight read that stopped there says."""
    if first.mismatch is not None:
        return first
    joined = ChainReport(
        trust_id=first.trust_id, entries=first.entries + second.entries,
        checkpoints=first.checkpoints + second.checkpoints, last_seq=second.last_seq, last_hash=second.last_hash,
        last_checkpoint=second.last_checkpoint or first.last_checkpoint, mismatch=second.mismatch,
        witnessed=first.witnessed + second.witnessed, last_witnessed=second.last_witnessed or first.last_witnessed,
    )
    return joined


async def check_defences(conn: asyncpg.Connection, schema: str) -> list[str]:
    """What is wrong with the ledger's protections (an empty list when nothing is)."""
    problems = []
    for table in IMMUTABLE_TABLES:
        trigger = await conn.fetchrow(
            """SELECT t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3""",
            schema, table, f"{table}_append_only",
        )
        if trigger is None:
            problems.append(f"{schema}.{table}: its append-only trigger has been removed")
        elif trigger["tgenabled"] != b"O" and trigger["tgenabled"] != "O":
            problems.append(f"{schema}.{table}: its append-only trigger is disabled")
    generated = await conn.fetch(
        """SELECT a.attname, a.attgenerated, pg_get_expr(d.adbin, d.adrelid) AS expression
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped""",
        schema, ENTRIES,
    )
    by_name = {row["attname"]: row for row in generated}
    for name, _, path in GENERATED_COLUMNS:
        row = by_name.get(name)
        attgenerated = row["attgenerated"] if row else None
        if row is None or attgenerated not in (b"s", "s") or f"{{fact,{path}}}" not in (row["expression"] or ""):
            problems.append(f"{schema}.{ENTRIES}.{name}: no longer generated from the hashed body")
    return problems


def _checkpoint(row: asyncpg.Record) -> Checkpoint:
    return Checkpoint(trust_id=row["trust_id"], seq=row["seq"], entry_hash=row["entry_hash"],
                      signed_at=row["signed_at"], key_id=row["key_id"], signature=row["signature"])


# --- Exports ----------------------------------------------------------------------------------


async def export_chain(dsn: str, schema: str, trust_id: UUID, out: IO[bytes], progress: Progress | None = None) -> int:
    """Write one trust's chain as an export (one snapshot); returns the number of entries."""
    entries, checkpoints, heads = _tables(schema)
    conn = await asyncpg.connect(dsn)
    count = 0
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow(f"SELECT head_seq, head_hash FROM {heads} WHERE trust_id = $1", trust_id)
            signed = {row["seq"]: _checkpoint(row) for row in await conn.fetch(
                f"SELECT trust_id, seq, entry_hash, signed_at, key_id, signature FROM {checkpoints} WHERE trust_id = $1",
                trust_id,
            )}
            out.write(orjson.dumps({"format": EXPORT_FORMAT, "trust_id": str(trust_id),
                                    "exported_at": instant(datetime.now(UTC))}) + b"\n")
            cursor = await conn.cursor(
                f"SELECT seq, prev_hash, entry_hash, body FROM {entries} WHERE trust_id = $1 ORDER BY seq", trust_id
            )
            while batch := await cursor.fetch(BATCH):
                lines = []
                for seq, prev_hash, entry_hash, body in batch:
                    lines.append(orjson.dumps([seq, prev_hash, entry_hash, body]))
                    if seq in signed:
                        lines.append(orjson.dumps({"checkpoint": signed.pop(seq).as_json()}))
                out.write(b"\n".join(lines) + b"\n")
                count += len(batch)
                if progress:
                    progress(trust_id, count)
            # Checkpoints beyond the last entry (rows deleted since they were signed) stay in the
            # export, so that an offline check sees what an online one would.
            for seq in sorted(signed):
                out.write(orjson.dumps({"checkpoint": signed[seq].as_json()}) + b"\n")
            end_head = {"seq": head["head_seq"], "entry_hash": head["head_hash"]} if head else None
            out.write(orjson.dumps({"end": {"entries": count, "head": end_head}}) + b"\n")
    finally:
        await conn.close()
    return count


class NotAnExport(Exception):
    pass


def export_trust(path: Path) -> UUID:
    """The trust an export file holds (its header), to fetch its witnessed checkpoints."""
    with path.open("rb") as file:
        try:
            header = orjson.loads(file.readline())
            return UUID(header["trust_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise NotAnExport("the first line is not an export's header") from None


def verify_export(
    lines: Iterable[bytes], public_keys: Mapping[str, Ed25519PublicKey], progress: Progress | None = None,
    witnessed: Sequence[Checkpoint] = (), witness: WitnessCheck | None = None,
) -> ChainReport:
    """Verify an export file's chain offline (no database, nothing but the file, the keys and the
    witnessed checkpoints)."""
    iterator = iter(lines)
    try:
        header = orjson.loads(next(iterator))
    except (StopIteration, orjson.JSONDecodeError):
        raise NotAnExport("the file is empty or its first line is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise NotAnExport(f"the first line does not say format {EXPORT_FORMAT}")
    trust_id = UUID(header["trust_id"])
    # The export is checked as of when it was taken: checkpoints witnessed since, events published
    # since, are not expected in it.
    exported_at = datetime.fromisoformat(header["exported_at"])
    witnessed = [c for c in witnessed if c.signed_at <= exported_at]
    if witness is not None:
        witness = replace(witness, now=exported_at)
    verifier = ChainVerifier(trust_id, public_keys)
    verifier.expect_checkpoints(witnessed, witnessed=True)
    # The first entry no witnessed checkpoint covers (if the chain holds them all): kept to check its age.
    first = (max((c.seq for c in witnessed), default=0)) + 1
    kept: list[str] = []
    # The events that must be in the chain (those the last witnessed checkpoint may not cover).
    last = max(witnessed, key=lambda c: c.seq) if witnessed else None
    expected = witness.expected_events(ChainReport(trust_id, last_witnessed=last)) if witness else []
    sought = {str(e.event_id) for e in expected}
    report = _verify_export_lines(iterator, verifier, trust_id, progress, first, kept, sought)
    if witness is not None and report.ok and first <= report.last_seq:
        unwitnessed_too_long(report, first, kept[0] if kept else None, witness)
    if report.ok and sought:
        missing_event(report, next(e for e in expected if str(e.event_id) in sought))
    return report


def _verify_export_lines(
    iterator: Iterator[bytes], verifier: ChainVerifier, trust_id: UUID, progress: Progress | None,
    keep_seq: int, kept: list[str], sought: set[str],
) -> ChainReport:
    """`sought`: event ids the chain must hold; each found is removed from the set."""
    loads = orjson.loads
    batch: list[Any] = []
    end: dict[str, Any] | None = None
    for number, line in enumerate(iterator, start=2):
        if line[:1] == b"[":
            row = loads(line)
            batch.append(row)
            if row[0] == keep_seq:
                kept.append(row[3])
            if sought:
                at = row[3].find(EVENT_ID_KEY)
                if at >= 0:
                    sought.discard(row[3][at + len(EVENT_ID_KEY):at + len(EVENT_ID_KEY) + 36])
            if len(batch) >= BATCH:
                if not verifier.feed(batch):
                    return verifier.report
                batch = []
                if progress:
                    progress(trust_id, verifier.report.entries)
            continue
        if batch and not verifier.feed(batch):
            return verifier.report
        batch = []
        record = loads(line) if line.strip() else {}
        if "checkpoint" in record:
            verifier.checkpoint(Checkpoint.from_json(record["checkpoint"]))
        elif "end" in record:
            end = record["end"]
            break
        elif record:
            raise NotAnExport(f"line {number} is neither an entry, a checkpoint nor the end")
        if verifier.failed:
            return verifier.report
    if batch and not verifier.feed(batch):
        return verifier.report
    if end is None:
        verifier.report.mismatch = Mismatch(
            verifier.report.last_seq + 1, "the export ends here without its end line: the file was cut short"
        )
        return verifier.report
    head = ChainHead(end["head"]["seq"], end["head"]["entry_hash"]) if end.get("head") else None
    return verifier.finish(head)


def verify_export_file(
    path: Path, public_keys: Mapping[str, Ed25519PublicKey], progress: Progress | None = None,
    witnessed: Sequence[Checkpoint] = (), witness: WitnessCheck | None = None,
) -> ChainReport:
    with path.open("rb") as file:
        return verify_export(file, public_keys, progress, witnessed, witness)


def report_json(report: ChainReport) -> dict[str, Any]:
    return {
        "trust_id": str(report.trust_id),
        "ok": report.ok,
        "entries": report.entries,
        "checkpoints": report.checkpoints,
        "last_seq": report.last_seq,
        "last_checkpoint_seq": report.last_checkpoint.seq if report.last_checkpoint else None,
        "witnessed_checkpoints": report.witnessed,
        "last_witnessed_seq": report.last_witnessed.seq if report.last_witnessed else None,
        "unsigned_entries": report.unsigned_entries,
        "first_mismatch": None if report.mismatch is None else {
            "seq": report.mismatch.seq, "event_id": report.mismatch.event_id, "reason": report.mismatch.reason,
        },
    }
