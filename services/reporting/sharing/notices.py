"""Telling the family before a share (the parents' letter: "We will always inform you ... prior to
information being shared"), docs/sharing.md "Telling the family".

Reporting owns the notices: a notice is a row of `sharing_family_notices` written in the very
transaction that accepts the share and queues its delivery, so no share is accepted without its
notice and no notice exists for a share that was not. The family's contact email stays with the
consent service (sealed with the pupil's key, erased with it); the sender asks for it, sealed, only
when it sends, opens it with the pupil's key (whose release consent audits), and never stores it.
The agency's delivery never waits for the email: the webhook worker and this sender are separate.

The sender (a background task) claims due notices (row locks, SKIP LOCKED: one sender per notice
across replicas), asks consent for the contact, sends through the configured SMTP server, and
records the outcome in the same transaction. SMTP or consent unreachable: the notice stays queued
and is tried again with exponential backoff and jitter; the ops page shows the queue. No contact
email: the notice becomes a printable letter only (GET /sharing/shares/{id}/notice). The pupil
erased: the notice is cancelled. Each email's Message-ID is the notice's id, so a receiver can tell
a resend (a crash between the SMTP server's acceptance and the commit) from a new notice.

A share resting on a lawful basis other than consent may be marked by the data-protection officer
as one the family must not be told of (telling them would put the child at risk): the notice is
recorded as withheld, never sent, and FamilyNoticeWithheld (reason code; the officer's words sealed
with the pupil's key) goes to the audit ledger in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import httpx
from opentelemetry import metrics as otel
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.sharing.tables import family_notices
from services.reporting.tables import kernel
from shared.auth import Principal, Role, ensure_scope
from shared.datakeys import DataKeyDestroyed, DataKeyError, PupilKeyring
from shared.events.consent import AgencyCategory, Purpose
from shared.events.reporting import FamilyNoticeWithheld
from shared.peers import ServiceTokens
from shared.problems import Conflict, Forbidden, NotFound, ServiceUnavailable, UnprocessableEntity
from shared.store.emission import emit
from shared.store.event_store import EventStore
from shared.telemetry import meter

log = logging.getLogger(__name__)

# The field the consent service seals the contact under (services/consent/handlers.CONTACT_EMAIL),
# and the one a withholding's words are sealed under here.
CONTACT_FIELD = "consent.family_contact_email"
WITHHELD_FIELD = "reporting.family_notice_withheld_reason"


class NoticeSettings(BaseSettings):
    """FLOURISH_NOTICES_*: the SMTP server notices are sent through, and the sender's schedule.
    No host: nothing is sent (notices queue, and show on the ops page, until one is configured)."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_NOTICES_", extra="ignore")

    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "Flourish <no-reply@flourish.invalid>"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    # Who the notice is from, as the family knows them (the letter's and the email's signature).
    sender_name: str = "Your child's school"
    # The wait before try n+1: base × factor^(n-1), at most backoff_max_s, plus up to `jitter` × that.
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    backoff_max_s: float = Field(default=900.0, gt=0)
    jitter: float = Field(default=0.1, ge=0, le=1)
    poll_interval_s: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=50, ge=1, le=500)
    consent_timeout_s: float = Field(default=5.0, gt=0)


class Status(StrEnum):
    QUEUED = "queued"  # to be sent (failing while attempts > 0)
    SENT = "sent"  # the SMTP server accepted it
    LETTER_ONLY = "letter_only"  # no contact email on record: the printable letter is the notice
    WITHHELD = "withheld"  # the DPO decided telling the family would put the child at risk
    CANCELLED = "cancelled"  # the pupil was erased before it went
    FAILED = "failed"  # the SMTP server refused the address for good: the letter is the notice


class WithholdReason(StrEnum):
    """Why the family is not told (codes the audit ledger records)."""

    RISK_OF_HARM_TO_CHILD = "risk_of_harm_to_child"
    RISK_OF_HARM_TO_OTHERS = "risk_of_harm_to_others"
    PREJUDICE_TO_INVESTIGATION = "prejudice_to_investigation"


@dataclass(frozen=True)
class Withhold:
    reason: WithholdReason
    text: str


def now() -> datetime:
    return datetime.now(UTC)


# --- what the family reads ------------------------------------------------------------------------

DOCUMENTS = {"profile": "your child's wellbeing profile", "action_plan": "your child's action plan",
             "report": "a report about your child's wellbeing"}
CATEGORIES = {
    AgencyCategory.SPEECH_AND_LANGUAGE.value: "speech and language therapy",
    AgencyCategory.CAMHS.value: "Child and Adolescent Mental Health Services (CAMHS)",
    AgencyCategory.SOCIAL_CARE.value: "children's social care",
    AgencyCategory.EDUCATIONAL_PSYCHOLOGY.value: "educational psychology",
    AgencyCategory.LOCAL_AUTHORITY.value: "the local authority",
    AgencyCategory.OTHER.value: "another agency supporting children",
}
BASES = {"consent": "the consent you gave",
         "public_task": "the school's public task (its safeguarding duty), not consent",
         "legal_obligation": "a legal obligation of the school, not consent",
         "vital_interests": "protecting your child's vital interests, not consent"}


@dataclass(frozen=True)
class NoticeView:
    """The notice as the family reads it (email and letter): plain values, escaped by the template."""

    notice_id: UUID
    share_id: UUID
    pupil_id: UUID
    status: str
    what: str
    to_whom: str
    agency_category: str
    why: str
    basis: str
    lawful_basis: str | None
    policy_reference: str | None
    shared_on: str
    sender_name: str
    sent_at: str | None

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, UUID) else v) for k, v in self.__dict__.items()}

    def text(self) -> str:
        """The email's body (plain text: nothing in it is markup)."""
        basis = self.basis + (f" ({self.policy_reference})" if self.policy_reference else "")
        return "\n".join([
            "Dear parent or carer,",
            "",
            "We promised to tell you before information about your child is shared. This is to let you",
            "know that the school is sharing the following:",
            "",
            f"What: {self.what}",
            f"With whom: {self.to_whom} ({self.agency_category})",
            f"Why: {self.why}",
            f"On which basis: {basis}",
            f"Date: {self.shared_on}",
            "",
            "If you have any questions, or wish to withdraw a consent you gave, please contact the",
            "school's data protection officer and quote the reference below.",
            "",
            f"Reference: {self.share_id}",
            "",
            self.sender_name,
            "",
        ])


def view(row: Any, sender_name: str) -> NoticeView:
    category = CATEGORIES.get(row.agency_category, row.agency_category)
    return NoticeView(
        notice_id=row.notice_id, share_id=row.share_id, pupil_id=row.pupil_id, status=row.status,
        what=DOCUMENTS.get(row.document_kind, row.document_kind), to_whom=row.agency_organisation,
        agency_category=category, why=f"so that {category} can support your child",
        basis=BASES.get(row.lawful_basis or "", row.lawful_basis or "not recorded"), lawful_basis=row.lawful_basis,
        policy_reference=row.policy_reference, shared_on=row.shared_at.strftime("%d %B %Y"), sender_name=sender_name,
        sent_at=row.finished_at.isoformat() if row.status == Status.SENT and row.finished_at else None,
    )


# --- the figures the ops page shows ---------------------------------------------------------------

_figures = {"queued": 0.0, "failing": 0.0, "failed": 0.0, "oldest_age_s": 0.0}


def _observe_counts(_: Any) -> Iterator[otel.Observation]:
    for state in ("queued", "failing", "failed"):
        yield otel.Observation(_figures[state], {"state": state})


def _observe_age(_: Any) -> Iterator[otel.Observation]:
    yield otel.Observation(_figures["oldest_age_s"])


meter.create_observable_gauge(
    "flourish_family_notices", callbacks=[_observe_counts], unit="{notice}",
    description="Notices to families of shares: queued (not yet sent), failing (queued, tried and failed), "
                "failed (refused for good; the letter is the notice)")
meter.create_observable_gauge(
    "flourish_family_notice_oldest_age", callbacks=[_observe_age], unit="s",
    description="Age of the oldest notice to a family still queued (0 when none is)")


def _may_withhold(principal: Principal, consent_obtained: bool, lawful_basis: str | None) -> None:
    if not principal.has_role(Role.dpo):
        raise Forbidden("only the data-protection officer may withhold the family's notice of a share")
    if consent_obtained or lawful_basis in (None, "consent"):
        raise UnprocessableEntity("a share resting on consent is always notified to the family; only a share "
                                  "under another lawful basis (safeguarding) may be withheld")


# --- the notices ------------------------------------------------------------------------------------


class ContactUnavailable(Exception):
    """The consent service (or the pupil's key) could not be reached: try again later."""


class Notices:
    """One per running reporting service (its bootstrap builds it): the settings, how consent is
    asked for the family's contact, and the pupil keys (to open it and to seal a withholding)."""

    def __init__(self, config: NoticeSettings, consent: httpx.AsyncClient, tokens: ServiceTokens,
                 keyring: PupilKeyring, clock: Callable[[], datetime] = now) -> None:
        self.config = config
        self.consent = consent
        self.tokens = tokens
        self.keyring = keyring
        self.clock = clock
        self.store = EventStore(kernel)
        self._wake = asyncio.Event()
        self._figures_at = 0.0

    def wake(self) -> None:
        self._wake.set()

    # --- in the share's transaction -----------------------------------------------------------

    async def queue(self, conn: AsyncConnection, principal: Principal, *, share_id: UUID, academy_id: UUID,
                    pupil_id: UUID, agency: Any, document_kind: str, lawful_basis: str | None,
                    consent_obtained: bool, policy_reference: str | None, shared_at: datetime,
                    withhold: Withhold | None) -> dict[str, Any]:
        """Record the family's notice of an accepted share (the caller's transaction), or its
        withholding. Raises (so nothing of the share is kept) when a withholding is not allowed."""
        notice_id = uuid.uuid4()
        values: dict[str, Any] = dict(
            notice_id=notice_id, trust_id=principal.trust_id, academy_id=academy_id, pupil_id=pupil_id,
            share_id=share_id, agency_id=agency.agency_id, agency_organisation=agency.organisation,
            agency_category=agency.category, document_kind=document_kind,
            purpose=Purpose.for_agency(AgencyCategory(agency.category)).value, lawful_basis=lawful_basis,
            consent_obtained=consent_obtained, policy_reference=policy_reference, shared_at=shared_at,
            status=Status.QUEUED.value, next_attempt_at=shared_at, created_at=shared_at)
        if withhold is None:
            await conn.execute(insert(family_notices).values(**values))
            self.wake()
            return {"notice_id": notice_id, "status": Status.QUEUED.value}
        _may_withhold(principal, consent_obtained, lawful_basis)
        await conn.execute(insert(family_notices).values(**values))
        notice = (await conn.execute(select(family_notices).where(family_notices.c.notice_id == notice_id))).one()
        return await self._withhold(conn, principal, notice, withhold, shared_at)

    async def withhold(self, conn: AsyncConnection, principal: Principal, share_id: UUID,
                       withhold: Withhold) -> dict[str, Any]:
        """The DPO withholds a notice not sent yet (queued, or waiting as a letter): it waits for a
        sender holding the notice, so a notice is either sent (409 here) or withheld, never both."""
        notice = (await conn.execute(select(family_notices).where(
            family_notices.c.trust_id == principal.trust_id, family_notices.c.share_id == share_id)
            .with_for_update())).first()
        if notice is None:
            raise NotFound("no notice for this share (it was not accepted, or is not this trust's)")
        ensure_scope(principal, notice.trust_id, notice.academy_id)
        _may_withhold(principal, notice.consent_obtained, notice.lawful_basis)
        if notice.status not in (Status.QUEUED, Status.LETTER_ONLY, Status.FAILED):
            raise Conflict(f"the family's notice of this share is {notice.status}: it can no longer be withheld")
        return await self._withhold(conn, principal, notice, withhold, self.clock())

    async def _withhold(self, conn: AsyncConnection, principal: Principal, notice: Any, withhold: Withhold,
                        at: datetime) -> dict[str, Any]:
        try:
            key = await self.keyring.key_for(notice.trust_id, notice.pupil_id)
        except DataKeyError:
            raise ServiceUnavailable("the pupil's key cannot be had now to seal the reason, so nothing is changed; "
                                     "try again later", retry_after_s=30) from None
        sealed = key.seal_text(withhold.text, WITHHELD_FIELD)
        await conn.execute(update(family_notices).where(family_notices.c.notice_id == notice.notice_id).values(
            status=Status.WITHHELD.value, finished_at=at, withheld_reason=withhold.reason.value,
            withheld_reason_sealed=sealed, withheld_by=principal.subject))
        # A stream of its own: the share's stream starts with its ReportShared (core._cause).
        await emit(conn, self.store, f"family-notice-{notice.share_id}", [FamilyNoticeWithheld(
            share_id=notice.share_id, pupil_id=notice.pupil_id, agency_id=notice.agency_id,
            agency_category=notice.agency_category, document_kind=notice.document_kind, reason=withhold.reason.value,
            reason_text=sealed, lawful_basis=notice.lawful_basis, policy_reference=notice.policy_reference,
            withheld_by=principal.subject, withheld_at=at)],
            trust_id=notice.trust_id, academy_id=notice.academy_id)
        # Plain strings: a row's ids are asyncpg's UUID subclass, which the JSON encoder refuses.
        return {"notice_id": str(notice.notice_id), "share_id": str(notice.share_id), "status": Status.WITHHELD.value,
                "withheld_reason": withhold.reason.value}

    # --- the letter -----------------------------------------------------------------------------

    async def notice_of(self, conn: AsyncConnection, trust_id: UUID, share_id: UUID) -> Any:
        return (await conn.execute(select(family_notices).where(
            family_notices.c.trust_id == trust_id, family_notices.c.share_id == share_id))).first()

    # --- the sender -----------------------------------------------------------------------------

    def backoff(self, tries: int) -> timedelta:
        c = self.config
        delay = min(c.backoff_max_s, c.backoff_base_s * c.backoff_factor ** (tries - 1))
        return timedelta(seconds=delay * (1 + random.uniform(0, c.jitter)))  # noqa: S311 - not a secret

    async def worker(self, runtime: Any, stop: asyncio.Event) -> None:
        """Background task: send what is due until the service stops."""
        if not self.config.smtp_host:
            log.warning("no SMTP server is configured (FLOURISH_NOTICES_SMTP_HOST): notices to families queue")
        while not stop.is_set():
            done = 0
            try:
                if self.config.smtp_host:
                    done = await self.send_due(runtime)
                await self.refresh_figures(runtime)
            except Exception:  # logged; the sender outlives a failed pass
                log.exception("family notice pass failed")
            if done:
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.config.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def refresh_figures(self, runtime: Any, *, force: bool = False) -> dict[str, float]:
        """The ops page's figures (every trust's, counts only), at most once a second."""
        if not force and time.monotonic() - self._figures_at < 1.0:
            return dict(_figures)
        t = family_notices
        async with runtime.engine.connect() as conn:
            row = (await conn.execute(select(
                func.count().filter(t.c.status == Status.QUEUED.value),
                func.count().filter(t.c.status == Status.QUEUED.value, t.c.attempts > 0),
                func.count().filter(t.c.status == Status.FAILED.value),
                func.min(t.c.created_at).filter(t.c.status == Status.QUEUED.value),
            ))).one()
        oldest = row[3]
        _figures.update(queued=float(row[0]), failing=float(row[1]), failed=float(row[2]),
                        oldest_age_s=max(0.0, (self.clock() - oldest).total_seconds()) if oldest else 0.0)
        self._figures_at = time.monotonic()
        return dict(_figures)

    async def send_due(self, runtime: Any) -> int:
        """One pass: claim due notices (locked while sending), find each family's email, send, record."""
        async with runtime.engine.begin() as conn:
            rows = (await conn.execute(
                select(family_notices)
                .where(family_notices.c.status == Status.QUEUED.value, family_notices.c.next_attempt_at <= self.clock())
                .order_by(family_notices.c.next_attempt_at).limit(self.config.batch_size)
                .with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            contacts = list(await asyncio.gather(*(self._contact(row) for row in rows)))
            messages: list[tuple[Any, EmailMessage]] = []
            for i, (row, contact) in enumerate(zip(rows, contacts, strict=True)):
                if "@" in contact:
                    try:
                        messages.append((row, self._message(row, contact)))
                    except Exception:  # noqa: BLE001 - one notice that cannot be written never blocks the rest
                        contacts[i] = "smtp_refused_unwritable"
            sent = await asyncio.to_thread(self._send, [m for _, m in messages]) if messages else []
            results = dict(zip((row.notice_id for row, _ in messages), sent, strict=True))
            at = self.clock()
            for row, contact in zip(rows, contacts, strict=True):
                outcome = results.get(row.notice_id, contact)
                await conn.execute(update(family_notices).where(family_notices.c.notice_id == row.notice_id)
                                   .values(**self._outcome(row, outcome, at)))
        return len(rows)

    def _outcome(self, row: Any, outcome: str | None, at: datetime) -> dict[str, Any]:
        """What a try's outcome makes of the notice: None sent; a code otherwise."""
        tries = row.attempts + 1
        if outcome is None:
            return {"status": Status.SENT.value, "attempts": tries, "finished_at": at, "last_error": None}
        if outcome == "no_contact_email":
            return {"status": Status.LETTER_ONLY.value, "attempts": tries, "finished_at": at, "last_error": outcome}
        if outcome == "pupil_erased":
            return {"status": Status.CANCELLED.value, "attempts": tries, "finished_at": at, "last_error": outcome}
        if outcome.startswith("smtp_refused_"):
            return {"status": Status.FAILED.value, "attempts": tries, "finished_at": at, "last_error": outcome}
        return {"attempts": tries, "last_error": outcome, "next_attempt_at": at + self.backoff(tries)}

    async def _contact(self, row: Any) -> str:
        """The family's email (opened), or the code of why there is none to send to now:
        no_contact_email, pupil_erased, or consent_unavailable / data_key_unavailable (tried again)."""
        try:
            token = await self.tokens.for_trust(row.trust_id)
            response = await self.consent.get(f"/pupils/{row.pupil_id}/family-contact",
                                              headers={"Authorization": f"Bearer {token}"})
        except Exception:  # noqa: BLE001 - any failure to ask is "try again later"
            return "consent_unavailable"
        if response.status_code == 404:
            return "no_contact_email"
        if response.status_code == 410:
            return "pupil_erased"
        if response.status_code != 200:
            return "consent_unavailable"
        try:
            body = response.json()
            sealed, field = body["email_sealed"], body["field"]
            if body["pupil_id"] != str(row.pupil_id) or field != CONTACT_FIELD:
                return "consent_unavailable"
        except (ValueError, KeyError, TypeError):
            return "consent_unavailable"
        try:
            key = await self.keyring.key_for(row.trust_id, row.pupil_id)
            email = key.open_text(sealed, CONTACT_FIELD)
        except DataKeyDestroyed:
            return "pupil_erased"
        except DataKeyError:
            return "data_key_unavailable"
        return email if "@" in email else "no_contact_email"

    def _message(self, row: Any, email: str) -> EmailMessage:
        notice = view(row, self.config.sender_name)
        message = EmailMessage()
        message["From"] = self.config.smtp_from
        message["To"] = email
        message["Subject"] = "Before we share information about your child"
        message["Date"] = format_datetime(self.clock())
        message["Message-ID"] = f"<notice-{row.notice_id}@flourish.invalid>"
        message["X-Flourish-Notice"] = str(row.notice_id)
        message.set_content(notice.text())
        return message

    def _send(self, messages: list[EmailMessage]) -> list[str | None]:
        """Runs in a thread: one SMTP session for the batch. Each message's outcome: None (accepted),
        smtp_refused_<code> (a permanent refusal of it), or a code to try again on."""
        c = self.config
        results: list[str | None] = []
        try:
            with smtplib.SMTP(c.smtp_host or "", c.smtp_port, timeout=c.smtp_timeout_s) as smtp:
                if c.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if c.smtp_username:
                    try:
                        smtp.login(c.smtp_username, c.smtp_password.get_secret_value() if c.smtp_password else "")
                    except (OSError, smtplib.SMTPException):
                        return ["smtp_login_refused"] * len(messages)
                for message in messages:
                    results.append(_send_one(smtp, message))
        except Exception as error:  # noqa: BLE001 - every failure is a try that failed: retried on the schedule
            code = "smtp_unavailable" if isinstance(error, OSError | smtplib.SMTPServerDisconnected) \
                else f"smtp_{type(error).__name__.lower()}"[:60]
            results.extend([code] * (len(messages) - len(results)))
        return results


def _send_one(smtp: smtplib.SMTP, message: EmailMessage) -> str | None:
    try:
        smtp.send_message(message)
        return None
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        return f"smtp_refused_{codes[0]}" if codes and codes[0] >= 500 else "smtp_recipient_deferred"
    except smtplib.SMTPResponseException as error:
        return f"smtp_refused_{error.smtp_code}" if error.smtp_code >= 500 else f"smtp_{error.smtp_code}"
