"""Sharing with agencies: registering recipients, asking consent for a share, the webhook
delivery worker over the durable deliveries table, and deletion notices on withdrawal, erasure
and retention expiry.

Just over 500 lines: one share's life, from the consent asked at share time to the consent asked
again at delivery and the notice on withdrawal or erasure, reads as one story in one class; the pure parts
(endpoints, signing, consent client, metrics) are already modules of their own."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import orjson
from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.readmodels.tables import ERASURES
from services.reporting.sharing import metrics
from services.reporting.sharing.consent import ConsentClient, Decision, Unavailable, UnknownPupil
from services.reporting.sharing.documents import DOCUMENT_FIELD, DocumentNotFound, assemble
from services.reporting.sharing.endpoints import EndpointRefused, check_endpoint, networks, pinned_transport
from services.reporting.sharing.metrics import Outcome
from services.reporting.sharing.notices import Notices, Withhold
from services.reporting.sharing.settings import SharingSettings
from services.reporting.sharing.signing import headers as signed_headers
from services.reporting.sharing.signing import new_secret, secret_text
from services.reporting.sharing.tables import agencies, attempts, deliveries, family_notices, shares
from services.reporting.tables import kernel
from shared.api import forget_stored_answers
from shared.auth import Principal, ensure_scope
from shared.datakeys import DataKeyDestroyed, DataKeyError, KekKeyring, PupilKeyring
from shared.events.consent import ConsentWithdrawn, Purpose
from shared.events.envelope import Envelope
from shared.events.registry import Event
from shared.events.reporting import ReportShared, ShareBlocked, ShareDelivered, ShareDeliveryFailed
from shared.problems import Conflict, NotFound, ServiceUnavailable, UnprocessableEntity
from shared.store.emission import Emission, emit
from shared.store.event_store import ANY_VERSION, EventStore, PendingAppend

log = logging.getLogger(__name__)

TRUST_LEVEL = UUID(int=0)
SHARE_EVENT = "share.created"
DELETION_EVENT = "share.deletion_requested"
VERIFICATION_EVENT = "endpoint.verification"


def now() -> datetime:
    return datetime.now(UTC)


def webhook_client(config: SharingSettings) -> httpx.AsyncClient:
    """The client webhooks are sent with. Never follows redirects: a redirect could lead past the
    endpoint checks. Its transport connects only to addresses it vetted itself (endpoints.py)."""
    return httpx.AsyncClient(
        timeout=config.request_timeout_s, follow_redirects=False,
        transport=pinned_transport(networks(config.allowed_private_networks),
                                   limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)),
    )


class Sharing:
    """One per running reporting service (its bootstrap builds it and closes it): the settings,
    the consent client, the KEK that wraps agencies' signing secrets, the webhook client, and the
    event that wakes the delivery worker."""

    def __init__(self, config: SharingSettings, consent: ConsentClient, kek: Callable[[], KekKeyring],
                 http: httpx.AsyncClient, notices: Notices | None = None,
                 keyring: PupilKeyring | None = None) -> None:
        self.config = config
        self.notices = notices  # the family's notices (notices.py); None: none are queued
        # Pupils' data keys: a share's frozen document is sealed with its pupil's (documents.py).
        self.keyring = keyring if keyring is not None or notices is None else notices.keyring
        self.store = EventStore(kernel)
        self.consent = consent
        # Made on first use, as before: a deployment that registers no agency needs no KEK.
        self.kek = functools.cache(kek)
        self.http = http
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """The delivery worker looks for due deliveries now rather than at its next poll."""
        self._wake.set()

    async def close(self) -> None:
        await self.consent.close()
        await self.http.aclose()

    # --- agencies ------------------------------------------------------------------------------

    async def register_agency(self, conn: AsyncConnection, runtime: Any, principal: Principal, category: str,
                              organisation: str, endpoint_url: str) -> dict[str, Any]:
        """Registers the agency, unverified: nothing is shared with it until its endpoint answered
        the signed `endpoint.verification` event (verify_agency) with a 2xx."""
        await self._check(runtime, endpoint_url)
        agency_id = uuid.uuid4()
        secret = new_secret()
        kek = self.kek()
        wrapped = await kek.wrap(secret, secret_aad(principal.trust_id, agency_id))
        registered_at = now()
        await conn.execute(insert(agencies).values(
            agency_id=agency_id, trust_id=principal.trust_id, category=category, organisation=organisation,
            endpoint_url=endpoint_url, secret_wrapped=wrapped.blob, kek_id=wrapped.kek_id, registered_by=principal.subject,
            registered_at=registered_at, active=True, verified_at=None,
        ))
        return {**_agency_body(agency_id, category, organisation, endpoint_url, registered_at, True),
                "signing_secret": secret_text(secret)}

    async def agency(self, conn: AsyncConnection, trust_id: UUID, agency_id: UUID) -> Any:
        return (await conn.execute(select(agencies).where(
            agencies.c.trust_id == trust_id, agencies.c.agency_id == agency_id))).first()

    async def _check(self, runtime: Any, endpoint_url: str) -> None:
        try:
            await check_endpoint(endpoint_url, environment=runtime.settings.environment,
                                 allowed=networks(self.config.allowed_private_networks))
        except EndpointRefused as error:
            raise UnprocessableEntity(str(error)) from None

    async def _held(self, conn: AsyncConnection, principal: Principal, agency_id: UUID) -> Any:
        """The agency's row, locked for a lifecycle change (404: not this trust's)."""
        row = (await conn.execute(select(agencies).where(
            agencies.c.trust_id == principal.trust_id, agencies.c.agency_id == agency_id).with_for_update())).first()
        if row is None:
            raise NotFound("no such agency")
        return row

    async def verify_agency(self, runtime: Any, principal: Principal, agency_id: UUID) -> dict[str, Any]:
        """POSTs a signed `endpoint.verification` event (no personal data: the agency's id and a
        random challenge) to the endpoint; a 2xx answer verifies it. Not in a transaction while
        the endpoint answers; the row is re-read before it is marked, so a verification of an
        endpoint changed meanwhile does not count."""
        async with runtime.engine.connect() as conn:
            row = await self.agency(conn, principal.trust_id, agency_id)
        if row is None:
            raise NotFound("no such agency")
        if not row.active:
            raise Conflict("the agency is deactivated")
        try:
            await check_endpoint(row.endpoint_url, environment=runtime.settings.environment,
                                 allowed=networks(self.config.allowed_private_networks))
        except EndpointRefused:
            # Not raised: at registration the answer must still carry the secret (shown once).
            return {"agency_id": agency_id, "verified": False, "verified_at": None, "status_code": None,
                    "error": "endpoint_refused"}
        at = now()
        body = orjson.dumps({"type": VERIFICATION_EVENT, "timestamp": at.isoformat(),
                             "data": {"agency_id": str(agency_id), "trust_id": str(row.trust_id),
                                      "challenge": secrets.token_urlsafe(24)}})
        keys = await self._keys(row, at)
        try:
            response = await self.http.post(row.endpoint_url, content=body,
                                            headers=signed_headers(keys, f"msg_{uuid.uuid4()}", int(at.timestamp()), body),
                                            timeout=self.config.verification_timeout_s)
            status: int | None = response.status_code
            error = None if 200 <= response.status_code < 300 else f"http_{response.status_code}"
        except httpx.HTTPError as exc:
            status, error = None, _code(type(exc).__name__)
        verified_at = None
        if error is None:
            verified_at = now()
            async with runtime.engine.begin() as conn:
                done = await conn.execute(update(agencies).where(
                    agencies.c.trust_id == principal.trust_id, agencies.c.agency_id == agency_id,
                    agencies.c.endpoint_url == row.endpoint_url, agencies.c.active.is_(True)).values(verified_at=verified_at))
                if done.rowcount != 1:
                    verified_at = None
                    error = "agency_changed"
        return {"agency_id": agency_id, "verified": verified_at is not None, "verified_at": verified_at,
                "status_code": status, "error": error}

    async def change_endpoint(self, conn: AsyncConnection, runtime: Any, principal: Principal, agency_id: UUID,
                              endpoint_url: str) -> dict[str, Any]:
        """A new endpoint is unverified again: nothing goes to it until it answers verification."""
        row = await self._held(conn, principal, agency_id)
        if not row.active:
            raise Conflict("the agency is deactivated")
        await self._check(runtime, endpoint_url)
        await conn.execute(update(agencies).where(agencies.c.agency_id == agency_id).values(
            endpoint_url=endpoint_url, verified_at=None))
        return {**_agency_body(agency_id, row.category, row.organisation, endpoint_url, row.registered_at, True),
                "verified": False}

    async def rotate_secret(self, conn: AsyncConnection, principal: Principal, agency_id: UUID) -> dict[str, Any]:
        """A new signing secret (shown this once); the current one still signs beside it for
        `rotation_overlap_s`, then is dropped. A rotation during an overlap ends the older one."""
        row = await self._held(conn, principal, agency_id)
        if not row.active:
            raise Conflict("the agency is deactivated")
        secret = new_secret()
        wrapped = await self.kek().wrap(secret, secret_aad(row.trust_id, agency_id))
        until = now() + timedelta(seconds=self.config.rotation_overlap_s)
        await conn.execute(update(agencies).where(agencies.c.agency_id == agency_id).values(
            secret_wrapped=wrapped.blob, kek_id=wrapped.kek_id, previous_secret_wrapped=row.secret_wrapped,
            previous_kek_id=row.kek_id, previous_secret_until=until))
        return {"agency_id": agency_id, "signing_secret": secret_text(secret), "rotation_overlap_until": until}

    async def deactivate_agency(self, conn: AsyncConnection, principal: Principal, agency_id: UUID) -> dict[str, Any]:
        """Nothing further is shared with or delivered to the agency: its pending and dead-lettered
        shares are stopped (ShareBlocked, `agency_deactivated`). Deletion notices for what it
        already holds are still sent (the worker sends them to a deactivated agency)."""
        row = await self._held(conn, principal, agency_id)
        at = now()
        if row.active:
            await conn.execute(update(agencies).where(agencies.c.agency_id == agency_id).values(
                active=False, deactivated_at=at))
        stopped = (await conn.execute(
            update(deliveries).where(deliveries.c.trust_id == principal.trust_id, deliveries.c.agency_id == agency_id,
                                     deliveries.c.kind == "share", deliveries.c.status.in_(("pending", "failed")))
            .values(status="blocked", payload=None, finished_at=at, last_error="agency_deactivated")
            .returning(deliveries))).all()
        for stopped_row in stopped:
            await self._blocked(conn, stopped_row, "agency_deactivated", at, None, await self._cause(conn, stopped_row))
        if stopped:
            metrics.record(Outcome.BLOCKED, len(stopped))
        return {"agency_id": agency_id, "active": False, "deactivated_at": row.deactivated_at or at,
                "shares_stopped": len(stopped)}

    async def _keys(self, row: Any, at: datetime) -> list[bytes]:
        """The secrets that sign for an agency now, newest first: its secret, and during a
        rotation's overlap the previous one."""
        kek = self.kek()
        aad = secret_aad(row.trust_id, row.agency_id)
        keys = [await kek.unwrap(row.kek_id, row.secret_wrapped, aad)]
        if row.previous_secret_wrapped is not None and row.previous_secret_until is not None \
                and at < row.previous_secret_until:
            try:
                keys.append(await kek.unwrap(row.previous_kek_id, row.previous_secret_wrapped, aad))
            except DataKeyError:
                # `flourish admin rotate-kek` rewraps the current secret only: once the KEK the
                # previous one is under is retired, the overlap ends early (the new one still signs).
                log.warning("previous webhook secret no longer unwraps; overlap ended",
                            extra={"agency_id": str(row.agency_id)})
        return keys

    # --- shares --------------------------------------------------------------------------------

    async def share(self, conn: AsyncConnection, runtime: Any, principal: Principal, agency_id: UUID,
                    pupil_id: UUID, document_kind: str, document_id: UUID,
                    withhold: Withhold | None = None) -> tuple[int, dict[str, Any]]:
        """The platform assembles the document itself, for this pupil (documents.py): the caller
        names its kind and id, never its content. It is frozen now, sealed with the pupil's key."""
        agency = await self.agency(conn, principal.trust_id, agency_id)
        if agency is None or not agency.active:
            raise UnprocessableEntity("agency_id names no registered agency of this trust")
        if agency.verified_at is None:
            raise Conflict("the agency's endpoint is not verified yet: nothing is shared with it until it answers "
                           "the signed endpoint.verification event (POST /sharing/agencies/{id}/verification)")
        try:
            decision = await self.consent.decide(principal.trust_id, pupil_id, agency.category, document_kind)
        except UnknownPupil:
            raise NotFound("no such pupil in this trust") from None
        except Unavailable:
            # Fail closed, and record nothing: the caller may retry with the same Idempotency-Key.
            raise ServiceUnavailable("consent cannot be established now, so nothing is shared; try again later",
                                     retry_after_s=30) from None
        ensure_scope(principal, principal.trust_id, decision.academy_id)  # 403: another academy's pupil
        try:
            document = await assemble(conn, principal.trust_id, pupil_id, document_kind, document_id)
        except DocumentNotFound:
            # The same answer for an unknown id and another pupil's: nothing tells one from the other.
            raise NotFound(f"no {document_kind} with this document_id for this pupil") from None
        share_id, at = uuid.uuid4(), now()
        basis = _basis(decision)
        row = dict(share_id=share_id, trust_id=principal.trust_id, academy_id=decision.academy_id, pupil_id=pupil_id,
                   agency_id=agency_id, document_kind=document_kind, document_id=document_id,
                   reason=decision.reason, decision=decision.raw, shared_by=principal.subject, shared_at=at)
        body: dict[str, Any] = {"share_id": share_id, "agency_id": agency_id, "pupil_id": pupil_id,
                                "document_kind": document_kind, "document_id": document_id, "reason": decision.reason,
                                "lawful_basis": decision.lawful_basis, "consent_obtained": decision.consent_obtained,
                                "record": decision.raw.get("record")}
        if not decision.allow:
            await conn.execute(insert(shares).values(**row, status="blocked"))
            event: Event = ShareBlocked(
                share_id=share_id, pupil_id=pupil_id, agency_id=agency_id, agency_category=agency.category,
                reason=_code(decision.reason), blocked_at=at, document_kind=document_kind, shared_by=principal.subject,
                outcome="share", agency_name=agency.organisation, document_id=document_id, **basis)
            await self._append(conn, principal.trust_id, decision.academy_id, f"share-{share_id}", event)
            metrics.record(Outcome.BLOCKED)
            return 201, {**body, "status": "blocked", "delivery_id": None}
        delivery_id = uuid.uuid4()
        if self.keyring is None:
            raise ServiceUnavailable("no data keys: a document cannot be kept sealed, so nothing is shared",
                                     retry_after_s=30)
        try:
            key = await self.keyring.key_for(principal.trust_id, pupil_id)
        except DataKeyDestroyed:
            raise NotFound("no such pupil in this trust") from None  # erased: nothing of theirs goes
        except DataKeyError:
            raise ServiceUnavailable("the pupil's data key cannot be had now, so nothing is shared; try again later",
                                     retry_after_s=30) from None
        digest = document_hash(document)
        await conn.execute(insert(shares).values(**row, status="accepted", document_sha256=digest,
                                                 document_sealed=key.seal_json(document, DOCUMENT_FIELD)))
        # The family's notice, in this transaction, before the delivery is queued (notices.py).
        notice = None if self.notices is None else await self.notices.queue(
            conn, principal, share_id=share_id, academy_id=decision.academy_id, pupil_id=pupil_id, agency=agency,
            document_kind=document_kind, lawful_basis=decision.lawful_basis,
            consent_obtained=decision.consent_obtained, policy_reference=decision.policy_reference, shared_at=at,
            withhold=withhold)
        payload = {"share_id": str(share_id), "pupil_id": str(pupil_id), "academy_id": str(decision.academy_id),
                   "agency_category": agency.category, "document_kind": document_kind,
                   "document_id": str(document_id),
                   "lawful_basis": decision.lawful_basis, "shared_at": at.isoformat()}
        await conn.execute(insert(deliveries).values(
            delivery_id=delivery_id, trust_id=principal.trust_id, academy_id=decision.academy_id, pupil_id=pupil_id,
            agency_id=agency_id, agency_category=agency.category, share_id=share_id, kind="share",
            document_kind=document_kind, event_type=SHARE_EVENT, payload=payload, status="pending",
            next_attempt_at=at, created_at=at))
        await self._append(conn, principal.trust_id, decision.academy_id, f"share-{share_id}", ReportShared(
            share_id=share_id, pupil_id=pupil_id, agency_id=agency_id, agency_category=agency.category,
            document_kind=document_kind, consent_id=decision.consent_id, shared_by=principal.subject, shared_at=at,
            document_id=document_id, delivery_id=delivery_id, agency_name=agency.organisation,
            document_sha256=digest, **basis))
        self.wake()
        return 201, {**body, "document_sha256": digest, "status": "accepted",
                     "delivery_id": delivery_id, "family_notice": notice}

    async def _drop_document(self, conn: AsyncConnection, row: Any) -> None:
        """A share's sealed document is kept until delivered (or stopped): then only its hash."""
        if row.kind == "share" and row.share_id is not None:
            await conn.execute(update(shares).where(shares.c.share_id == row.share_id).values(document_sealed=None))

    async def _append(self, conn: AsyncConnection, trust_id: UUID, academy_id: UUID, stream: str, data: Event,
                      cause: Envelope[Event] | None = None) -> None:
        await emit(conn, self.store, stream, [data], trust_id=trust_id, academy_id=academy_id, cause=cause)

    async def _causes(self, conn: AsyncConnection, rows: list[Any]) -> dict[str, Envelope[Event]]:
        """`_cause` of many deliveries in one query: by stream, the share's ReportShared."""
        streams = [_stream(row) for row in rows if row.share_id is not None]
        if not streams:
            return {}
        events = self.store.tables.events
        found = await conn.execute(select(events).where(events.c.stream_id.in_(streams), events.c.stream_version == 1))
        opened = await self.store._opened(found.mappings())  # noqa: SLF001 - the store's own decoding
        return {recorded.stream_id: recorded.envelope for recorded in opened}

    async def _cause(self, conn: AsyncConnection, row: Any) -> Envelope[Event] | None:
        """What a delivery's outcome is caused by: the share that queued it (its ReportShared, the
        first event of the share's stream), so the outcome joins the trace of the request that
        shared. A deletion notice's withdrawal is not kept with it: its outcome starts a trace."""
        if row.share_id is None:
            return None
        recorded = await self.store.read_stream(conn, _stream(row))
        return recorded[0].envelope if recorded else None

    # --- delivery ------------------------------------------------------------------------------

    def backoff(self, tries: int) -> timedelta:
        """The wait after the `tries`-th failed try: the Standard Webhooks schedule's step, plus up to
        `jitter` of it."""
        delay = self.config.delay_after(tries)
        return timedelta(seconds=delay * (1 + random.uniform(0, self.config.jitter)))  # noqa: S311 - not a secret

    async def worker(self, runtime: Any, stop: asyncio.Event) -> None:
        """Background task: deliver what is due until the service stops."""
        metrics.initialise()
        while not stop.is_set():
            try:
                done = await self.deliver_due(runtime)
            except Exception:  # logged below; the worker outlives a failed pass
                log.exception("webhook delivery pass failed")
                done = 0
            try:
                await self.notify_expired(runtime)
            except Exception:  # logged below; the worker outlives a failed pass
                log.exception("consent expiry pass failed")
            if done:
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.config.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def deliver_due(self, runtime: Any) -> int:
        """One pass: claim due deliveries (row locks held while sending, so no other worker or
        replica sends them too), ask consent again, send, record. Returns how many it took."""
        async with runtime.engine.begin() as conn:
            rows = (await conn.execute(
                select(deliveries, agencies.c.endpoint_url, agencies.c.secret_wrapped, agencies.c.kek_id, agencies.c.active,
                       agencies.c.verified_at, agencies.c.previous_secret_wrapped, agencies.c.previous_kek_id,
                       agencies.c.previous_secret_until,
                       agencies.c.disabled_at, agencies.c.failing_since)
                .join(agencies, agencies.c.agency_id == deliveries.c.agency_id)
                .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now())
                .order_by(deliveries.c.next_attempt_at).limit(self.config.batch_size)
                .with_for_update(of=deliveries, skip_locked=True)
            )).all()
            if not rows:
                return 0
            claimed = len(rows)
            rows = await self._stop_erased(conn, rows)
            if not rows:
                return claimed
            decisions = await self._decisions(runtime, rows)
            secrets_ = await self._secrets(runtime, rows)
            # An agency whose secret this keyring cannot unwrap (another deployment's KEK, a retired
            # one) waits, pending, without stopping everyone else's deliveries.
            rows = [row for row in rows if row.agency_id in secrets_]
            if not rows:
                return 0
            endpoints_ok = await self._endpoints(runtime, rows)
            documents = await self._documents(conn, rows)
            results = await asyncio.gather(*(
                self._deliver(runtime, conn, row, decisions.get(_question(row)), secrets_[row.agency_id],
                              endpoints_ok[row.agency_id], documents.get(row.share_id)) for row in rows))
            await self._record(conn, rows, results)
        return claimed

    async def _decisions(self, runtime: Any, rows: list[Any]) -> dict[tuple[Any, ...], Decision | str]:
        questions = {_question(row) for row in rows if row.kind == "share"}
        client = self.consent

        async def ask(q: tuple[Any, ...]) -> Decision | str:
            try:
                return await client.decide(*q)
            except UnknownPupil:
                return "pupil_unknown_to_consent"
            except Unavailable:
                return "consent_unavailable"

        answers = await asyncio.gather(*(ask(q) for q in questions))
        return dict(zip(questions, answers, strict=True))

    async def _secrets(self, runtime: Any, rows: list[Any]) -> dict[UUID, list[bytes]]:
        at, found, unreadable = now(), {}, set()
        for row in rows:
            if row.agency_id not in found and row.agency_id not in unreadable:
                try:
                    found[row.agency_id] = await self._keys(row, at)
                except DataKeyError:
                    unreadable.add(row.agency_id)
                    log.warning("an agency's webhook secret does not unwrap here; its deliveries wait",
                                extra={"agency_id": str(row.agency_id)})
        return found

    async def _documents(self, conn: AsyncConnection, rows: list[Any]) -> dict[UUID, dict[str, Any] | str]:
        """Each share's frozen document, opened with its pupil's key; or why it cannot be
        (`pupil_erased`: the key is gone; `data_key_unavailable`: try again later)."""
        ids = [row.share_id for row in rows if row.kind == "share"]
        if not ids:
            return {}
        found: dict[UUID, dict[str, Any] | str] = {}
        for share in (await conn.execute(select(shares.c.share_id, shares.c.trust_id, shares.c.pupil_id,
                                                shares.c.document_sealed).where(shares.c.share_id.in_(ids)))).all():
            if share.document_sealed is None or self.keyring is None:
                found[share.share_id] = "document_unavailable"
                continue
            try:
                key = await self.keyring.key_for(share.trust_id, share.pupil_id)
                found[share.share_id] = key.open_json(share.document_sealed, DOCUMENT_FIELD)
            except DataKeyDestroyed:
                found[share.share_id] = "pupil_erased"
            except DataKeyError:
                found[share.share_id] = "data_key_unavailable"
        return found

    async def _endpoints(self, runtime: Any, rows: list[Any]) -> dict[UUID, str | None]:
        """Each endpoint checked again (a host name may now resolve inside the network)."""
        allowed = networks(self.config.allowed_private_networks)
        found: dict[UUID, str | None] = {}
        for row in rows:
            if row.agency_id not in found:
                try:
                    await check_endpoint(row.endpoint_url, environment=runtime.settings.environment, allowed=allowed)
                    found[row.agency_id] = None
                except EndpointRefused as error:
                    found[row.agency_id] = _code(str(error))[:60] or "endpoint_refused"
        return found

    async def _deliver(self, runtime: Any, conn: AsyncConnection, row: Any, decision: Decision | str | None,
                       secret: list[bytes], endpoint_refused: str | None,
                       document: dict[str, Any] | str | None = None) -> Attempt:
        at = now()
        data = row.payload
        if row.kind == "share":
            if isinstance(decision, str) or decision is None:
                return Attempt(at, "unavailable", None, decision or "consent_unavailable", None, 0)
            if not decision.allow:
                return Attempt(at, "blocked", None, _code(decision.reason), decision, 0)
            if document == "data_key_unavailable":
                return Attempt(at, "unavailable", None, document, None, 0)
            if not isinstance(document, dict):
                return Attempt(at, "blocked", None, document or "document_unavailable", None, 0)
            data = {**row.payload, "document": document}
        # A deactivated agency gets nothing further, except the deletion notices for what it holds.
        if row.kind == "share" and not row.active:
            return Attempt(at, "blocked", None, "agency_deactivated", None, 0)
        if row.disabled_at is not None:
            return Attempt(at, "disabled", None, "endpoint_disabled", None, 0)
        if row.kind == "share" and row.verified_at is None:
            # Its endpoint changed since the share was queued and has not answered verification yet.
            return Attempt(at, "error", None, "endpoint_unverified", None, 0)
        if endpoint_refused:
            return Attempt(at, "error", None, "endpoint_refused", None, 0)
        body = orjson.dumps({"type": row.event_type, "timestamp": at.isoformat(),
                             "data": {**data, "trust_id": str(row.trust_id), "academy_id": str(row.academy_id)}})
        sent_hash = hashlib.sha256(body).hexdigest()
        started = time.perf_counter()
        try:
            response = await self.http.post(
                row.endpoint_url, content=body, headers=signed_headers(secret, str(row.delivery_id), int(at.timestamp()), body))
            status, error = response.status_code, None if 200 <= response.status_code < 300 else f"http_{response.status_code}"
        except httpx.HTTPError as exc:
            status, error = None, _code(type(exc).__name__)
        took = int((time.perf_counter() - started) * 1000)
        return Attempt(at, "sent" if error is None else "error", status, error,
                       decision if isinstance(decision, Decision) else None, took, sent_hash)

    async def _health(self, conn: AsyncConnection, rows: list[Any], results: list[Attempt]) -> set[UUID]:
        """Each endpoint's health after this pass: a 2xx clears its failing streak; `410 Gone`
        disables it at once; a failure starts (or continues) the streak, and a streak of
        `disable_after_failing_s` (five days) disables it. Returns the endpoints disabled now."""
        seen: dict[UUID, tuple[Any, list[Attempt]]] = {}
        for row, result in zip(rows, results, strict=True):
            if row.disabled_at is None and result.kind in ("sent", "error"):
                seen.setdefault(row.agency_id, (row, []))[1].append(result)
        disabled: set[UUID] = set()
        a = agencies.c
        for agency_id, (row, tried) in seen.items():
            at = max(t.at for t in tried)
            reason: str | None
            if any(t.status_code == 410 for t in tried):
                reason = "gone"
            elif any(t.kind == "sent" for t in tried):
                if row.failing_since is not None:
                    await conn.execute(update(agencies).where(a.agency_id == agency_id).values(failing_since=None))
                continue
            else:
                since = row.failing_since or min(t.at for t in tried)
                reason = "failing" if (at - since).total_seconds() >= self.config.disable_after_failing_s else None
                if reason is None:
                    if row.failing_since is None:
                        await conn.execute(update(agencies).where(a.agency_id == agency_id, a.failing_since.is_(None))
                                           .values(failing_since=since))
                    continue
            done = (await conn.execute(update(agencies).where(a.agency_id == agency_id, a.disabled_at.is_(None))
                                       .values(disabled_at=at, disabled_reason=reason,
                                               failing_since=func.coalesce(a.failing_since, at))
                                       .returning(a.agency_id))).first()
            if done is not None and reason is not None:
                disabled.add(agency_id)
                metrics.endpoint_disabled(reason)
                log.warning("webhook endpoint disabled", extra={"agency_id": str(agency_id), "reason": reason})
        return disabled

    async def _record(self, conn: AsyncConnection, rows: list[Any], results: list[Attempt]) -> None:
        log_rows, counts = [], dict.fromkeys(Outcome, 0)
        delivered: list[tuple[Any, Event]] = []
        changes: list[dict[str, Any]] = []
        disabled = await self._health(conn, rows, results)
        for row, result in zip(rows, results, strict=True):
            tries = row.attempts + 1
            outcome: Outcome
            values: dict[str, Any] = {"attempts": tries, "last_status_code": result.status_code,
                                      "last_error": result.error}
            if result.kind != "sent" and (result.kind == "disabled" or row.agency_id in disabled):
                # Nothing more goes to this endpoint: a share is dead-lettered (replayable), a
                # deletion notice is kept as undeliverable, for the DPO to send another way.
                outcome = Outcome.FAILED
                values |= {"status": "undeliverable" if row.kind == "deletion_notice" else "failed",
                           "finished_at": result.at, "last_error": result.error or "endpoint_disabled"}
                if result.kind == "disabled":
                    values["attempts"] = row.attempts  # not a try: nothing was sent
                await self._append(conn, row.trust_id, row.academy_id, _stream(row), ShareDeliveryFailed(
                    share_id=row.share_id, delivery_id=row.delivery_id, pupil_id=_pupil_of(row), agency_id=row.agency_id,
                    agency_category=row.agency_category, outcome=row.kind, attempt=tries, status_code=result.status_code,
                    reason="endpoint_disabled", failed_at=result.at, share_ids=_notice_shares(row)),
                    await self._cause(conn, row))
            elif result.kind == "sent":
                outcome = Outcome.DELIVERED
                values |= {"status": "delivered", "payload": None, "finished_at": result.at}
                await self._drop_document(conn, row)
                delivered.append((row, ShareDelivered(
                    share_id=row.share_id, delivery_id=row.delivery_id, pupil_id=_pupil_of(row), agency_id=row.agency_id,
                    agency_category=row.agency_category, outcome=row.kind, attempt=tries,
                    status_code=result.status_code or 0, delivered_at=result.at, share_ids=_notice_shares(row))))
            elif result.kind == "blocked" or (result.kind == "unavailable" and tries >= self.config.tries):
                outcome = Outcome.BLOCKED
                values |= {"status": "blocked", "payload": None, "finished_at": result.at}
                await self._drop_document(conn, row)
                await self._blocked(conn, row, result.error or "blocked", result.at, result.decision,
                                    await self._cause(conn, row))
            elif tries >= self.config.tries:
                outcome = Outcome.FAILED
                values |= {"status": "failed", "finished_at": result.at}
                await self._append(conn, row.trust_id, row.academy_id, _stream(row), ShareDeliveryFailed(
                    share_id=row.share_id, delivery_id=row.delivery_id, pupil_id=_pupil_of(row), agency_id=row.agency_id,
                    agency_category=row.agency_category, outcome=row.kind, attempt=tries, status_code=result.status_code,
                    reason=result.error or "failed", failed_at=result.at, share_ids=_notice_shares(row)),
                    await self._cause(conn, row))
            else:
                outcome = Outcome.RETRIED
                values |= {"next_attempt_at": result.at + self.backoff(tries)}
            counts[outcome] += 1
            change = {"status": row.status, "payload": row.payload, "finished_at": row.finished_at,
                      "next_attempt_at": row.next_attempt_at, **values, "delivery_id": row.delivery_id}
            changes.append({f"b_{name}": value for name, value in change.items()})
            log_rows.append(dict(delivery_id=row.delivery_id, trust_id=row.trust_id, agency_id=row.agency_id,
                                 attempt=tries, scheduled_for=row.next_attempt_at, attempted_at=result.at,
                                 outcome=outcome.value, status_code=result.status_code, error=result.error,
                                 duration_ms=result.duration_ms, body_sha256=result.body_sha256))
        # The delivered ones' events in one statement (each caused by its share's ReportShared), and
        # every row's outcome in one executemany.
        if delivered:
            causes = await self._causes(conn, [row for row, _ in delivered])
            appends = []
            for row, event in delivered:
                emission = Emission(self.store, row.trust_id, cause=causes.get(_stream(row)))
                emission.add(_stream(row), row.academy_id, event)
                appends += [PendingAppend(stream, envelopes, ANY_VERSION) for stream, envelopes in emission.by_stream.items()]
            await self.store.append_batch(conn, appends)
        d = deliveries.c
        await conn.execute(update(deliveries).where(d.delivery_id == bindparam("b_delivery_id")).values(
            {name: bindparam(f"b_{name}") for name in ("status", "payload", "finished_at", "next_attempt_at", "attempts",
                                                "last_status_code", "last_error")}), changes)
        await conn.execute(insert(attempts), log_rows)
        if disabled:
            await self._park(conn, disabled)
        for outcome, count in counts.items():
            if count:
                metrics.record(outcome, count)

    async def _park(self, conn: AsyncConnection, agency_ids: set[UUID]) -> None:
        """What is still pending for endpoints disabled now: shares dead-lettered, deletion notices
        marked undeliverable (never dropped: GET /sharing/undeliverable lists them)."""
        d, at = deliveries.c, now()
        for kind, status in (("share", "failed"), ("deletion_notice", "undeliverable")):
            await conn.execute(update(deliveries).where(
                d.agency_id.in_(agency_ids), d.status == "pending", d.kind == kind,
            ).values(status=status, finished_at=at, last_error="endpoint_disabled"))

    async def undeliverable(self, conn: AsyncConnection, principal: Principal) -> list[dict[str, Any]]:
        """Deletion notices the trust owes agencies whose endpoint cannot take them (disabled, or
        dead-lettered after every try): to be sent another way. Newest first."""
        d, a = deliveries.c, agencies.c
        found = (await conn.execute(
            select(d.delivery_id, d.agency_id, d.academy_id, d.status, d.attempts, d.last_status_code, d.last_error,
                   d.created_at, d.finished_at, d.payload, a.organisation, a.category, a.disabled_at, a.disabled_reason)
            .join(agencies, a.agency_id == d.agency_id)
            .where(d.trust_id == principal.trust_id, d.kind == "deletion_notice", d.status.in_(("undeliverable", "failed")))
            .order_by(d.created_at.desc()))).all()
        out = []
        for row in found:
            if principal.can_access(principal.trust_id, row.academy_id):
                payload = row.payload or {}
                out.append({
                    "delivery_id": row.delivery_id, "agency_id": row.agency_id, "organisation": row.organisation,
                    "agency_category": row.category, "academy_id": row.academy_id, "status": row.status,
                    "attempts": row.attempts, "last_status_code": row.last_status_code, "last_error": row.last_error,
                    "endpoint_disabled_at": row.disabled_at, "endpoint_disabled_reason": row.disabled_reason,
                    "queued_at": row.created_at, "finished_at": row.finished_at,
                    "pupil_id": payload.get("pupil_id"), "share_ids": payload.get("share_ids", []),
                    "reason": payload.get("reason"), "instruction": payload.get("instruction")})
        return out

    async def _blocked(self, conn: AsyncConnection, row: Any, reason: str, at: datetime,
                       decision: Decision | None, cause: Envelope[Event] | None) -> None:
        if row.share_id is None:
            return
        await self._append(conn, row.trust_id, row.academy_id, _stream(row), ShareBlocked(
            share_id=row.share_id, pupil_id=row.pupil_id, agency_id=row.agency_id, agency_category=row.agency_category,
            reason=_code(reason), blocked_at=at, document_kind=row.document_kind, outcome="delivery",
            delivery_id=row.delivery_id, **(_basis(decision) if decision else {})), cause)

    # --- replay and withdrawal -----------------------------------------------------------------

    async def replay(self, conn: AsyncConnection, runtime: Any, principal: Principal, delivery_id: UUID) -> dict[str, Any]:
        row = (await conn.execute(select(deliveries).where(
            deliveries.c.trust_id == principal.trust_id, deliveries.c.delivery_id == delivery_id).with_for_update())).first()
        if row is None:
            raise NotFound("no such delivery")
        ensure_scope(principal, row.trust_id, row.academy_id)
        if row.status not in REPLAYABLE:
            raise Conflict(f"only a dead-lettered or undeliverable delivery can be replayed; this one is {row.status}")
        await requeue(conn, principal.trust_id, [delivery_id])
        self.wake()
        return {"delivery_id": delivery_id, "status": "pending"}

    async def on_consent_withdrawn(self, conn: AsyncConnection, envelope: Envelope[ConsentWithdrawn]) -> None:
        """Consumer: stop pending shares to that category's agencies, and send a deletion notice to
        every agency of the category that received the pupil's data."""
        data = envelope.data
        assert isinstance(data, ConsentWithdrawn)
        category = Purpose(data.purpose).agency_category
        if category is None:
            return
        trust_id, at = envelope.trust_id, now()
        mine = and_(deliveries.c.trust_id == trust_id, deliveries.c.pupil_id == data.pupil_id,
                    deliveries.c.agency_category == category.value, deliveries.c.kind == "share")
        # Waits for a delivery the worker holds (it re-reads the row after), so a share being sent
        # right now is either stopped here or counted as received below.
        stopped = (await conn.execute(
            update(deliveries).where(mine, deliveries.c.status.in_(("pending", "failed")))
            .values(status="blocked", payload=None, finished_at=at, last_error="consent_withdrawn")
            .returning(deliveries))).all()
        for row in stopped:
            await self._drop_document(conn, row)
            await self._blocked(conn, row, "consent_withdrawn", at, None, envelope)
        if stopped:
            metrics.record(Outcome.BLOCKED, len(stopped))
        received = (await conn.execute(
            select(deliveries.c.agency_id, deliveries.c.academy_id, func.array_agg(deliveries.c.share_id).label("share_ids"))
            .where(mine, deliveries.c.status == "delivered")
            .group_by(deliveries.c.agency_id, deliveries.c.academy_id))).all()
        for agency_id, academy_id, share_ids in received:
            delivery_id = uuid.uuid5(data.withdrawal_id, str(agency_id))
            payload = {"pupil_id": str(data.pupil_id), "academy_id": str(academy_id), "agency_category": category.value,
                       "share_ids": sorted(str(s) for s in share_ids), "reason": "consent_withdrawn",
                       "withdrawn_at": data.withdrawn_at.isoformat(),
                       "instruction": "delete every copy of the data these shares carried about this pupil"}
            await conn.execute(pg_insert(deliveries).values(
                delivery_id=delivery_id, trust_id=trust_id, academy_id=academy_id, pupil_id=data.pupil_id,
                agency_id=agency_id, agency_category=category.value, share_id=None, kind="deletion_notice",
                event_type=DELETION_EVENT, payload=payload, status="pending", next_attempt_at=at, created_at=at,
            ).on_conflict_do_nothing())
        if received:
            self.wake()  # the worker wakes now (before the commit it finds nothing, then polls)

    # --- erasure and retention expiry ------------------------------------------------------------

    async def on_erased(self, conn: AsyncConnection, envelope: Envelope[Event], pupil_id: UUID, reason: str,
                        at_event: datetime) -> None:
        """Consumer (beside the read models' erasure, services/reporting/readmodels/erasure.py): the
        pupil was erased (`pupil_erased`), or the retention of their shared reports (or of all their
        data) expired (`retention_expired`). Pending and dead-lettered shares are stopped, their
        documents with them; every agency that received the pupil's data is sent a signed deletion
        notice (UK GDPR Art. 19), as on withdrawal; then the pupil's shares, deliveries and delivery
        log go. The notice names the pupil in its payload only (its `pupil_id` column is NULL), and
        the payload is dropped once the agency has it."""
        trust_id, at = envelope.trust_id, now()
        d = deliveries.c
        # Waits for a delivery the worker holds (it keeps the row locked while sending), so a share
        # being sent right now is either stopped here or counted as received below.
        rows = (await conn.execute(select(deliveries).where(d.trust_id == trust_id, d.pupil_id == pupil_id)
                                   .order_by(d.created_at).with_for_update())).all()
        stopped = [row for row in rows if row.kind == "share" and row.status in ("pending", "failed")]
        for row in stopped:
            await self._blocked(conn, row, reason, at, None, envelope)
        if stopped:
            metrics.record(Outcome.BLOCKED, len(stopped))
        received: dict[tuple[UUID, UUID, str], list[UUID]] = {}
        for row in rows:
            if row.kind == "share" and row.status == "delivered":
                received.setdefault((row.agency_id, row.academy_id, row.agency_category), []).append(row.share_id)
        # An earlier notice (a withdrawal's) goes too: the one below covers every share the agency got.
        gone = [row.delivery_id for row in rows]
        if gone:
            await conn.execute(delete(attempts).where(attempts.c.trust_id == trust_id, attempts.c.delivery_id.in_(gone)))
            await conn.execute(delete(deliveries).where(d.trust_id == trust_id, d.delivery_id.in_(gone)))
        await conn.execute(delete(shares).where(shares.c.trust_id == trust_id, shares.c.pupil_id == pupil_id))
        # The family's notices of those shares: one not sent yet is never sent (the share is gone).
        await conn.execute(delete(family_notices).where(family_notices.c.trust_id == trust_id,
                                                        family_notices.c.pupil_id == pupil_id))
        # A share's stored answer (Idempotency-Key) names the pupil and the consent decision.
        await forget_stored_answers(conn, kernel.idempotency, trust_id, pupil_id)
        for (agency_id, academy_id, category), share_ids in received.items():
            payload = {"pupil_id": str(pupil_id), "academy_id": str(academy_id), "agency_category": category,
                       "share_ids": sorted(str(s) for s in share_ids), "reason": reason,
                       "erased_at": at_event.isoformat(),
                       "instruction": "delete every copy of the data these shares carried about this pupil"}
            await conn.execute(pg_insert(deliveries).values(
                delivery_id=uuid.uuid5(envelope.id, str(agency_id)), trust_id=trust_id, academy_id=academy_id,
                pupil_id=None, agency_id=agency_id, agency_category=category, share_id=None, kind="deletion_notice",
                event_type=DELETION_EVENT, payload=payload, status="pending", next_attempt_at=at, created_at=at,
            ).on_conflict_do_nothing())
        if received:
            self.wake()

    async def notify_expired(self, runtime: Any) -> int:
        """Deletion notices on consent expiry: every delivered share whose consent decision had a
        `valid_until` now past, and which consent no longer covers when asked again (a renewal
        keeps it), gets its agency one `share.deletion_requested` (reason `consent_expired`), once.
        Consent that cannot be asked now: asked again at the next pass. Returns notices queued."""
        s, d, at = shares.c, deliveries.c, now()
        valid_until = s.decision["valid_until"].astext
        async with runtime.engine.begin() as conn:
            due = (await conn.execute(
                select(s.share_id, s.trust_id, s.academy_id, s.pupil_id, s.agency_id, s.document_kind,
                       d.agency_category, valid_until.label("valid_until"))
                .join(deliveries, and_(d.share_id == s.share_id, d.kind == "share", d.status == "delivered"))
                .where(s.status == "accepted", s.expiry_notified_at.is_(None), valid_until.isnot(None),
                       func.cast(valid_until, deliveries.c.created_at.type) < at)
                .order_by(s.shared_at).limit(self.config.batch_size)
                .with_for_update(of=shares, skip_locked=True))).all()
            notices: dict[tuple[UUID, UUID, UUID, UUID, str], list[Any]] = {}
            for row in due:
                try:
                    decision = await self.consent.decide(row.trust_id, row.pupil_id, row.agency_category, row.document_kind)
                except UnknownPupil:
                    continue  # erased: the erasure's own notice covers it
                except Unavailable:
                    continue
                if decision.allow:  # renewed: nothing to delete; not asked again
                    await conn.execute(update(shares).where(s.share_id == row.share_id).values(expiry_notified_at=at))
                    continue
                key = (row.trust_id, row.academy_id, row.pupil_id, row.agency_id, row.agency_category)
                notices.setdefault(key, []).append(row)
            for (trust_id, academy_id, pupil_id, agency_id, category), rows in notices.items():
                share_ids = sorted(str(row.share_id) for row in rows)
                payload = {"pupil_id": str(pupil_id), "academy_id": str(academy_id), "agency_category": category,
                           "share_ids": share_ids, "reason": "consent_expired",
                           "expired_at": max(row.valid_until for row in rows),
                           "instruction": "delete every copy of the data these shares carried about this pupil"}
                await conn.execute(pg_insert(deliveries).values(
                    delivery_id=uuid.uuid5(agency_id, "consent_expired:" + ",".join(share_ids)), trust_id=trust_id,
                    academy_id=academy_id, pupil_id=pupil_id, agency_id=agency_id, agency_category=category, share_id=None,
                    kind="deletion_notice", event_type=DELETION_EVENT, payload=payload, status="pending",
                    next_attempt_at=at, created_at=at).on_conflict_do_nothing())
                await conn.execute(update(shares).where(s.share_id.in_([row.share_id for row in rows]))
                                   .values(expiry_notified_at=at))
        if notices:
            self.wake()
        return len(notices)

    async def _stop_erased(self, conn: AsyncConnection, rows: list[Any]) -> list[Any]:
        """Of the deliveries a pass claimed, the shares of a pupil erased (or whose shared reports
        expired) since they were queued (a share that raced the erasure) are stopped and deleted,
        never sent; the rest are returned."""
        pupils = {row.pupil_id for row in rows if row.kind == "share"}
        if not pupils:
            return rows
        e = ERASURES.c
        graves: dict[tuple[UUID, UUID], tuple[datetime, str]] = {}
        for grave in (await conn.execute(select(e.trust_id, e.pupil_id, e.erased_at, e.data_category).where(
                e.pupil_id.in_(pupils), e.data_category.in_(("all", "shared_reports"))))).all():
            if grave.data_category == "all":
                graves[(grave.trust_id, grave.pupil_id)] = (datetime.max.replace(tzinfo=UTC), "pupil_erased")
            else:
                graves.setdefault((grave.trust_id, grave.pupil_id), (grave.erased_at, "retention_expired"))
        never = (datetime.min.replace(tzinfo=UTC), "")
        stopped = [row for row in rows
                   if row.kind == "share" and row.created_at <= graves.get((row.trust_id, row.pupil_id), never)[0]]
        if not stopped:
            return rows
        at = now()
        for row in stopped:
            await self._blocked(conn, row, graves[(row.trust_id, row.pupil_id)][1], at, None, None)
        ids = [row.delivery_id for row in stopped]
        await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(ids)))
        await conn.execute(delete(deliveries).where(deliveries.c.delivery_id.in_(ids)))
        await conn.execute(delete(shares).where(shares.c.share_id.in_([row.share_id for row in stopped])))
        metrics.record(Outcome.BLOCKED, len(stopped))
        return [row for row in rows if row.delivery_id not in set(ids)]


REPLAYABLE = ("failed", "undeliverable")


async def requeue(conn: AsyncConnection, trust_id: UUID, delivery_ids: list[UUID]) -> list[UUID]:
    """Dead letters (and undeliverable notices) of `trust_id` due again now, from a fresh schedule.
    Consent is asked again when the worker picks a share up, as for any delivery; an endpoint
    still disabled parks it again. Returns the ids requeued."""
    d = deliveries.c
    done = (await conn.execute(update(deliveries).where(
        d.trust_id == trust_id, d.delivery_id.in_(delivery_ids), d.status.in_(REPLAYABLE),
    ).values(status="pending", attempts=0, next_attempt_at=now(), finished_at=None).returning(d.delivery_id))).all()
    return [row.delivery_id for row in done]


async def dead_letters(conn: AsyncConnection, trust_id: UUID, agency_id: UUID | None = None) -> list[Any]:
    """A trust's dead letters and undeliverable notices (of one agency), oldest first."""
    d = deliveries.c
    query = select(d.delivery_id, d.agency_id, d.kind, d.status, d.attempts, d.last_status_code, d.last_error,
                   d.created_at).where(d.trust_id == trust_id, d.status.in_(REPLAYABLE)).order_by(d.created_at)
    if agency_id is not None:
        query = query.where(d.agency_id == agency_id)
    return list((await conn.execute(query)).all())


@dataclass(frozen=True)
class Attempt:
    at: datetime
    kind: str  # sent | error | blocked | unavailable
    status_code: int | None
    error: str | None
    decision: Decision | None
    duration_ms: int
    body_sha256: str | None = None  # of the body sent (None: nothing was sent)


def payload_of(row: Any) -> dict[str, Any]:
    """What a webhook's `data` carries: the queued payload, with the trust and academy it is from."""
    return {**(row.payload or {}), "trust_id": str(row.trust_id), "academy_id": str(row.academy_id)}


def _question(row: Any) -> tuple[Any, ...]:
    return (row.trust_id, row.pupil_id, row.agency_category, row.document_kind)


def _pupil_of(row: Any) -> UUID:
    """The pupil a delivery is about: its column, or (a notice about an erased pupil) its payload."""
    return row.pupil_id if row.pupil_id is not None else UUID(row.payload["pupil_id"])


def _stream(row: Any) -> str:
    return f"share-{row.share_id}" if row.share_id else f"deletion-notice-{row.delivery_id}"


def secret_aad(trust_id: UUID, agency_id: UUID) -> bytes:
    """What an agency's wrapped signing secret is bound to (flourish admin rotate-kek rewraps it with the same)."""
    return f"flourish/webhook-secret/v1/{trust_id}/{agency_id}".encode()


def _basis(decision: Decision) -> dict[str, Any]:
    return {"lawful_basis": decision.lawful_basis, "consent_obtained": decision.consent_obtained,
            "basis_id": decision.decision_id, "basis_stream_id": decision.stream_id,
            "record_version": decision.record_version, "policy_reference": decision.policy_reference}


def document_hash(document: dict[str, Any] | None) -> str | None:
    """SHA-256 (hex) of the document's canonical JSON (sorted keys, no whitespace): what the
    agency received as `data.document`, so either side can recompute it."""
    if document is None:
        return None
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _notice_shares(row: Any) -> list[UUID] | None:
    """The shares a deletion notice covers (its payload names them), for the audit ledger."""
    if row.kind != "deletion_notice" or not row.payload:
        return None
    return [UUID(s) for s in row.payload.get("share_ids", [])]


def _code(reason: str) -> str:
    """A reason as a short code the audit ledger accepts (no quotes or control characters)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_.:-" else "_" for ch in reason.lower()).strip("_")
    return cleaned[:64] or "denied"


def _agency_body(agency_id: UUID, category: str, organisation: str, endpoint_url: str, registered_at: datetime,
                 active: bool) -> dict[str, Any]:
    return {"agency_id": agency_id, "category": category, "organisation": organisation, "endpoint_url": endpoint_url,
            "registered_at": registered_at, "active": active}
