"""The assessment service's side of issue 5: per-pupil data keys, the UPN blind index, telling the
consent service each pupil's date of birth (reliably), and erasure.

* ``Privacy`` is one per process (built by app.bootstrap, closed at shutdown): the keyring (a
  ``DataKeyClient`` to the consent service, as role ``service`` of the pupil's trust), the blind
  index, and the HTTP client both use.
* ``BlindIndex``, ``AssessmentPrivacySettings`` and ``keys_for`` live in pupil_keys.py, which
  personal_data.py needs too; the imports go one way (pupil_keys <- personal_data <- privacy), and
  the names stay importable from here.
* The retention clock: consent counts the default retention period (25 years) from the date of
  birth, which only this service knows. The import writes a row to ``retention_clock_outbox`` in
  its own transaction; ``RetentionClockDelivery`` (a background task) PUTs the date to consent's
  ``/pupils/{id}/retention-clock`` and deletes the row only on 2xx (or 410: erased). Anything else
  (consent down, 404 because consent has not yet consumed the PupilEnrolled, 5xx) is retried with
  backoff, for ever: the row is the proof that consent does not yet know.
* Erasure: ``PupilErased`` (and ``RetentionExpired`` for ``all``) forget the cached key, delete the
  pupil's personal data, notes and pending clock, and leave a non-personal tombstone so reads
  answer 410. ``RetentionExpired`` for ``assessments`` deletes the pupil's observation notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.assessment.personal_data import PersonalDataRepository
from services.assessment.pupil_keys import AssessmentPrivacySettings, BlindIndex, keys_for, normalise_upn
from services.assessment.tables import erased_pupils, kernel, observation_notes, pupil_personal_data, retention_clock_outbox
from shared.api import forget_stored_answers
from shared.datakeys import DataKeyClient, DataKeyDestroyed, DataKeyError, DataKeySettings, PupilKeyring
from shared.events.consent import DataCategory, PupilErased, RetentionExpired
from shared.events.envelope import Envelope
from shared.peers import ServiceTokens
from shared.settings import Settings

log = logging.getLogger(__name__)


class Privacy:
    """One per process: the keyring, the blind index and the consent client they share."""

    def __init__(self, settings: Settings, privacy_settings: AssessmentPrivacySettings, key_settings: DataKeySettings,
                 *, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.privacy_settings = privacy_settings
        if (settings.environment == "production" and not settings.mesh_mtls
                and not settings.consent_url.startswith("https://")):
            raise ValueError("in production FLOURISH_CONSENT_URL must be https, or FLOURISH_MESH_MTLS=true "
                             "where a service mesh encrypts pod-to-pod traffic: data keys travel on it")
        self.consent_url = settings.consent_url.rstrip("/")
        self.http = http or httpx.AsyncClient(timeout=5.0)
        self._owns_http = http is None
        self.tokens = ServiceTokens(settings, "assessment")
        self.keyring: DataKeyClient = DataKeyClient(
            settings.consent_url, self.tokens.for_trust, ttl_s=key_settings.data_key_cache_ttl_s,
            max_entries=key_settings.data_key_cache_size, http=self.http,
        )
        self.index = BlindIndex.from_settings(self.privacy_settings, settings.state_dir,
                                              production=settings.environment == "production")

    async def aclose(self) -> None:
        await self.keyring.aclose()
        if self._owns_http:
            await self.http.aclose()


# --- The retention clock ------------------------------------------------------------------------


async def enqueue_retention_clock(conn: AsyncConnection, trust_id: UUID, academy_id: UUID, pupil_ids: Iterable[UUID]) -> None:
    """In the import's transaction: consent must (again) be told these pupils' dates of birth."""
    rows = [{"pupil_id": p, "trust_id": trust_id, "academy_id": academy_id} for p in dict.fromkeys(pupil_ids)]
    if not rows:
        return
    statement = insert(retention_clock_outbox).values(rows)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=[retention_clock_outbox.c.pupil_id],
        set_={"attempts": 0, "next_attempt_at": datetime.now(UTC), "last_error": None},
    ))


class RetentionClockDelivery:
    """Delivers the retention-clock outbox to the consent service until it is empty."""

    def __init__(self, engine: AsyncEngine, privacy: Privacy, *, batch: int = 50) -> None:
        self.engine = engine
        self.privacy = privacy
        self.batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.privacy.privacy_settings.retention_clock_interval_s
        while not stop.is_set():
            try:
                while await self.deliver_once() == self.batch and not stop.is_set():
                    pass
            except Exception:  # logged below; a failed pass is retried next interval; rows stay
                log.exception("retention-clock delivery pass failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def deliver_once(self) -> int:
        """One batch of due rows; returns how many were attempted."""
        t = retention_clock_outbox
        async with self.engine.begin() as conn:
            due = list(await conn.execute(
                select(t.c.pupil_id, t.c.trust_id, t.c.attempts).where(t.c.next_attempt_at <= datetime.now(UTC))
                .order_by(t.c.next_attempt_at).limit(self.batch).with_for_update(skip_locked=True)
            ))
            if not due:
                return 0
            repository = PersonalDataRepository(self.privacy.keyring, self.privacy.index)
            births = await repository.dates_of_birth(conn, [(r.trust_id, r.pupil_id) for r in due])
            outcomes = await asyncio.gather(*(self._send(r.trust_id, r.pupil_id, births.get(r.pupil_id)) for r in due))
            for row, error in zip(due, outcomes, strict=True):
                if error is None:
                    await conn.execute(delete(t).where(t.c.pupil_id == row.pupil_id))
                    continue
                wait = min(self.privacy.privacy_settings.retention_clock_backoff_max_s, 2.0 * 2 ** min(row.attempts, 16))
                await conn.execute(update(t).where(t.c.pupil_id == row.pupil_id).values(
                    attempts=t.c.attempts + 1, last_error=error,
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait),
                ))
                if row.attempts and row.attempts % 10 == 0:
                    log.warning("consent has not confirmed a pupil's retention clock after %d attempts: %s",
                                row.attempts, error, extra={"pupil_id": str(row.pupil_id)})
            return len(due)

    async def _send(self, trust_id: UUID, pupil_id: UUID, born: date | DataKeyError | None) -> str | None:
        """None when done (consent has the date, or there is nothing left to tell); else why not."""
        if born is None or isinstance(born, DataKeyDestroyed):
            return None  # erased (or the details went with an erasure): nothing to count from here
        if isinstance(born, DataKeyError):
            return f"the pupil's data key is not available ({type(born).__name__})"
        try:
            token = await self.privacy.tokens.for_trust(trust_id)
            response = await self.privacy.http.put(
                f"{self.privacy.consent_url}/pupils/{pupil_id}/retention-clock",
                json={"date_of_birth": born.isoformat()}, headers={"Authorization": f"Bearer {token}"},
            )
        except (httpx.HTTPError, RuntimeError) as error:
            return f"consent unreachable ({type(error).__name__})"
        if response.is_success or response.status_code == 410:
            return None
        # 404: consent has not consumed the pupil's enrolment yet; 401/403/5xx: configuration or
        # an outage. All retried: dropping the row would leave the pupil without a retention clock.
        return f"consent answered {response.status_code}"


# --- Erasure ------------------------------------------------------------------------------------


async def erase_pupil(conn: AsyncConnection, keyring: PupilKeyring, envelope: Envelope) -> None:
    """Forget the key, drop what is personal, leave a tombstone. Idempotent."""
    pupil_id, trust_id = envelope.data.pupil_id, envelope.trust_id
    keyring.forget(pupil_id)
    for table in (pupil_personal_data, observation_notes, retention_clock_outbox):
        await conn.execute(delete(table).where(table.c.pupil_id == pupil_id, table.c.trust_id == trust_id))
    await forget_stored_answers(conn, kernel.idempotency, trust_id, pupil_id)
    await conn.execute(insert(erased_pupils).values(
        pupil_id=pupil_id, trust_id=trust_id, academy_id=envelope.academy_id, erasure_event_id=envelope.id,
        erased_at=datetime.now(UTC),
    ).on_conflict_do_nothing(index_elements=[erased_pupils.c.pupil_id]))


def erasure_handlers(keyring: PupilKeyring) -> dict[type[Any], Any]:
    async def on_pupil_erased(conn: AsyncConnection, envelope: Envelope) -> None:
        await erase_pupil(conn, keyring, envelope)

    async def on_retention_expired(conn: AsyncConnection, envelope: Envelope) -> None:
        data: RetentionExpired = envelope.data  # type: ignore[assignment]
        if data.data_category == DataCategory.ALL:
            await erase_pupil(conn, keyring, envelope)
        elif data.data_category == DataCategory.ASSESSMENTS:
            # The personal part of the pupil's assessment data: the free-text notes. Ratings and
            # scores are pseudonymous event-sourced records and stay (see docs/assessment.md).
            await conn.execute(delete(observation_notes).where(
                observation_notes.c.pupil_id == data.pupil_id, observation_notes.c.trust_id == envelope.trust_id))

    return {PupilErased: on_pupil_erased, RetentionExpired: on_retention_expired}


async def erased(conn: AsyncConnection, pupil_ids: Iterable[UUID]) -> set[UUID]:
    ids = list(pupil_ids)
    if not ids:
        return set()
    rows = await conn.execute(select(erased_pupils.c.pupil_id).where(erased_pupils.c.pupil_id.in_(ids)))
    return {r.pupil_id for r in rows}


__all__ = ["AssessmentPrivacySettings", "BlindIndex", "DataKeyError", "Privacy", "RetentionClockDelivery",
           "enqueue_retention_clock", "erase_pupil", "erased", "erasure_handlers", "keys_for", "normalise_upn"]
