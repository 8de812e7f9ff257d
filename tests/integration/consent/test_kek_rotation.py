"""`flourish admin rotate-kek` (issue 15, item 3), on the real PostgreSQL and Kafka: every
KEK-wrapped secret — pupils' data keys and agencies' signing secrets — is rewrapped under the
active KEK; the old KEK is then removed from the keyring, the service restarted, and everything
still opens. A secret whose kek_id was tampered with is refused, never tried under another KEK."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from services.consent.tables import data_keys
from services.consent.tables import kernel as consent_kernel
from services.reporting.sharing.core import secret_aad
from services.reporting.sharing.tables import agencies
from services.reporting.tables import kernel as reporting_kernel
from shared.datakeys import KekKeyring, LocalKek
from shared.messaging.producer import KafkaPublisher
from shared.settings import Settings
from shared.store.db import create_engine
from tests.conftest import database_of_its_own
from tests.integration.consent.keyring_helpers import PARENT, cli_env, consent_with, flourish, hold_keys

OLD, NEW, STRANGER = os.urandom(32), os.urandom(32), os.urandom(32)
OLD_ID, NEW_ID = LocalKek(OLD).key_id, LocalKek(NEW).key_id


def b64(material: bytes) -> str:
    return base64.b64encode(material).decode()


def table_report(report: dict[str, Any], secrets: str) -> dict[str, Any]:
    return next(t for t in report["tables"] if t["secrets"] == secrets)


async def admin_actions(engine: Any, kernel: Any, trust_id: uuid.UUID) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(kernel.events.c.data).where(
            kernel.events.c.trust_id == trust_id,
            kernel.events.c.event_type == "flourish.audit.AdminActionTaken.v1"))).scalars())


async def test_rotate_kek_rewraps_every_secret_and_the_old_kek_can_then_be_removed(
    stack_settings: Settings, topic_prefix: str, tmp_path: Path, publisher: KafkaPublisher,
) -> None:
    from flourish.local.migrate import migrate

    with database_of_its_own(stack_settings, "kek") as settings:
        await migrate(settings)
        async with consent_with(settings, topic_prefix, tmp_path, publisher, KekKeyring(LocalKek(OLD))) as consent:
            first, second = await consent.enrol(2)
            held = await hold_keys(consent, first, second)
            trust_id, academy_id = consent.trust_id, consent.academy_id
        owner = create_engine(settings, pool_size=1)
        try:
            # An agency's signing secret, wrapped under the old KEK as the reporting service wraps it.
            agency_id, secret = uuid.uuid4(), os.urandom(32)
            wrapped = await KekKeyring(LocalKek(OLD)).wrap(secret, secret_aad(trust_id, agency_id))
            async with owner.begin() as conn:
                await conn.execute(insert(agencies).values(
                    agency_id=agency_id, trust_id=trust_id, category="camhs", organisation="CAMHS North",
                    endpoint_url="https://camhs.example/hook", secret_wrapped=wrapped.blob, kek_id=wrapped.kek_id,
                    registered_by="trust_admin-1", registered_at=datetime.now(UTC), active=True))

            # The keyring of every service and of the operator: the new KEK active, the old retired.
            rotating = cli_env(settings, topic_prefix, tmp_path, {
                "FLOURISH_DATA_KEK": b64(NEW), "FLOURISH_DATA_KEK_RETIRED": json.dumps([b64(OLD)])})
            code, report = await flourish("admin", "rotate-kek", "--actor", "ops-1", "--batch", "1", env=rotating)
            assert code == 0, report
            assert report["active_kek_id"] == NEW_ID
            keys = table_report(report, "data_keys")
            assert keys["before"] == {OLD_ID: 2} and keys["rewrapped"] == {OLD_ID: 2}, keys
            assert keys["under_active_kek"] == 2, keys
            secrets = table_report(report, "agency_signing_secrets")
            assert secrets["before"].get(OLD_ID) == 1 and secrets["rewrapped"] == {OLD_ID: 1}, secrets

            # Idempotent: run again, nothing is left under the old KEK.
            code, again = await flourish("admin", "rotate-kek", env=rotating)
            assert code == 0 and table_report(again, "data_keys")["rewrapped"] == {}, again
            assert table_report(again, "data_keys")["before"] == {NEW_ID: 2}, again

            # Recorded in the audit, by whom and how many, in each service's stream.
            rotated = [a for a in await admin_actions(owner, consent_kernel, trust_id) if a["action"] == "kek.rotated"]
            assert [(a["actor"], a["target_id"], a["details"]) for a in rotated] == [
                ("ops-1", NEW_ID, {"secrets": "data_keys", "rewrapped": "2"})]
            rotated = [a for a in await admin_actions(owner, reporting_kernel, trust_id) if a["action"] == "kek.rotated"]
            assert [a["details"] for a in rotated] == [{"secrets": "agency_signing_secrets", "rewrapped": "1"}]

            # The agency's secret opens under the new KEK alone.
            async with owner.connect() as conn:
                row = (await conn.execute(select(agencies).where(agencies.c.agency_id == agency_id))).one()
            assert row.kek_id == NEW_ID
            assert await KekKeyring(LocalKek(NEW)).unwrap(row.kek_id, row.secret_wrapped,
                                                          secret_aad(trust_id, agency_id)) == secret

            # A keyring that does not hold the KEK a secret names: refused, nothing changed.
            stranger = cli_env(settings, topic_prefix, tmp_path, {"FLOURISH_DATA_KEK": b64(STRANGER)})
            code, refused = await flourish("admin", "rotate-kek", env=stranger)
            assert code == 1 and table_report(refused, "data_keys")["unknown"] == {NEW_ID: 2}, refused
            async with owner.connect() as conn:
                assert set((await conn.execute(select(data_keys.c.kek_id).where(
                    data_keys.c.pupil_id.in_([first, second])))).scalars()) == {NEW_ID}

            # The old KEK is destroyed (gone from the keyring); the service restarts and reads everything.
            async with consent_with(settings, topic_prefix, tmp_path, publisher, KekKeyring(LocalKek(NEW))) as consent:
                consent.trust_id, consent.academy_id = trust_id, academy_id
                for pupil, (key, decision_id) in held.items():
                    answer = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)
                    assert answer.status_code == 200 and answer.json()["key"] == key, answer.text
                    receipt = await consent.client.get(f"/consent-decisions/{decision_id}/receipt",
                                                       headers=consent.senco)
                    assert receipt.status_code == 200 and PARENT in receipt.text, receipt.text

                # An insider points a key at another KEK the keyring holds, or at one it does not:
                # neither opens (503, the kernel's answer for any key failure), the other pupil's does.
                for forged in (OLD_ID, "local:0123456789abcdef"):
                    async with owner.begin() as conn:
                        await conn.execute(update(data_keys).where(data_keys.c.pupil_id == first).values(kek_id=forged))
                    tampered = await consent.client.get(f"/pupils/{first}/data-key", headers=consent.service)
                    assert tampered.status_code == 503, tampered.text
                    assert held[first][0] not in tampered.text
                async with owner.begin() as conn:
                    await conn.execute(update(data_keys).where(data_keys.c.pupil_id == first).values(kek_id=NEW_ID))
                assert (await consent.client.get(f"/pupils/{first}/data-key", headers=consent.service)).status_code == 200
                assert (await consent.client.get(f"/pupils/{second}/data-key", headers=consent.service)).status_code == 200
        finally:
            await owner.dispose()


async def test_a_keyring_that_holds_both_keks_refuses_a_key_pointed_at_the_wrong_one(
    stack_settings: Settings, topic_prefix: str, tmp_path: Path, publisher: KafkaPublisher,
) -> None:
    """While a rotation is under way both KEKs are held: a kek_id changed to the other one still
    does not open (AES-GCM authenticates the wrapping), and is not silently tried under the other."""
    keyring = KekKeyring(LocalKek(NEW), [LocalKek(OLD)])
    async with consent_with(stack_settings, topic_prefix, tmp_path, publisher, keyring) as consent:
        [pupil] = await consent.enrol(1)
        held = await hold_keys(consent, pupil)
        engine = consent.app.state.runtime.engine
        async with engine.begin() as conn:
            assert await conn.scalar(select(data_keys.c.kek_id).where(data_keys.c.pupil_id == pupil)) == NEW_ID
            await conn.execute(update(data_keys).where(data_keys.c.pupil_id == pupil).values(kek_id=OLD_ID))
        tampered = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)
        assert tampered.status_code == 503 and held[pupil][0] not in tampered.text


class CrashingKeyring(KekKeyring):
    """A rotation that dies (the pod killed, the KMS gone) after `survives` rewraps."""

    def __init__(self, survives: int) -> None:
        super().__init__(LocalKek(NEW), [LocalKek(OLD)])
        self.left = survives

    async def rewrap(self, kek_id: str | None, wrapped: bytes, aad: bytes) -> Any:
        if self.left == 0:
            raise RuntimeError("killed")
        self.left -= 1
        return await super().rewrap(kek_id, wrapped, aad)


async def test_a_rotation_stopped_half_way_leaves_every_key_readable_and_the_next_run_finishes_it(
    stack_settings: Settings,
) -> None:
    from flourish.local.migrate import migrate
    from shared.datakeys import DataKeyVault, key_aad, rewrap_table

    with database_of_its_own(stack_settings, "kek_resume") as settings:
        await migrate(settings)
        engine = create_engine(settings, pool_size=1)
        try:
            trust_id, pupils = uuid.uuid4(), [uuid.uuid4() for _ in range(5)]
            async with engine.begin() as conn:
                old = DataKeyVault(KekKeyring(LocalKek(OLD)), data_keys)
                material = {p: (await old.key_for(conn, trust_id, p)).material for p in pupils}

            def aad(row: Any) -> bytes:
                return key_aad(row.trust_id, row.pupil_id)

            with pytest.raises(RuntimeError):
                await rewrap_table(engine, data_keys, CrashingKeyring(survives=2), key="pupil_id",
                                   wrapped="wrapped_key", aad=aad, batch=1)
            async with engine.connect() as conn:
                kek_ids = list((await conn.execute(select(data_keys.c.kek_id)
                                                   .where(data_keys.c.pupil_id.in_(pupils)))).scalars())
            assert sorted(kek_ids) == sorted([NEW_ID] * 2 + [OLD_ID] * 3)

            both = KekKeyring(LocalKek(NEW), [LocalKek(OLD)])
            async with engine.begin() as conn:  # half-way, every key still opens, unchanged
                vault = DataKeyVault(both, data_keys)
                assert {p: (await vault.key_for(conn, trust_id, p)).material for p in pupils} == material
            done = await rewrap_table(engine, data_keys, both, key="pupil_id", wrapped="wrapped_key", aad=aad)
            assert done.rewrapped == {OLD_ID: 3} and done.done, done
            async with engine.begin() as conn:  # and now under the new KEK alone
                vault = DataKeyVault(KekKeyring(LocalKek(NEW)), data_keys)
                assert {p: (await vault.key_for(conn, trust_id, p)).material for p in pupils} == material
        finally:
            await engine.dispose()
