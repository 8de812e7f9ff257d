"""Issue 5 in the assessment service, on the real stack with the consent service beside it:
personal data sealed with each pupil's key, the date of birth handed to consent for retention,
erasure through the consent API dropping everything personal, crypto-shredding of copies, and
re-import idempotency through the UPN blind index."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.assessment.personal_data import field_name
from shared.auth import Role
from shared.datakeys import DataKeyClient, DataKeyDestroyed, SealedFieldUnreadable
from shared.peers import ServiceTokens
from tests.integration.assessment.helpers import (
    CONSENT_URL,
    Stack,
    Tenant,
    import_roster,
    now,
    roster_csv,
    serving_stack,
    upn,
)
from tests.integration.kernel.helpers import eventually


@pytest.fixture
async def stack(service_settings) -> Any:
    async with serving_stack(service_settings) as running:
        yield running


def _person(surname: str, forename: str, born: date, reg: str = "4B") -> tuple[str, str]:
    number = upn()
    return number, f"{number},{surname},{forename},{born:%d/%m/%Y},F,4,{reg}"


async def _import(stack: Stack, tenant: Tenant, rows: list[str]) -> list[uuid.UUID]:
    await tenant.register(stack.client)
    response = await import_roster(stack.client, tenant, roster_csv(rows))
    assert response.status_code == 200, response.text
    return [uuid.UUID(e["pupil_id"]) for e in response.json()["enrolled"]]


async def _clock_delivered(stack: Stack, engine: Any, pupil_id: uuid.UUID) -> None:
    """Drive the retention-clock outbox until consent holds the pupil's (sealed) date of birth."""

    async def delivered() -> bool:
        await stack.app.state.runtime.deps.retention_clock.deliver_once()
        async with engine.connect() as conn:
            pending = await conn.scalar(text("SELECT count(*) FROM assessment.retention_clock_outbox WHERE pupil_id = :p"),
                                        {"p": pupil_id})
            sealed = await conn.scalar(text("SELECT date_of_birth_sealed FROM consent.pupils WHERE pupil_id = :p"),
                                       {"p": pupil_id})
        return pending == 0 and sealed is not None

    await eventually(delivered, timeout=60, interval=0.3)


async def _scan(engine: Any, schema: str, needles: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        tables = (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                                     {"s": schema})).scalars().all()
        for table in tables:
            blob = "\n".join((await conn.execute(text(f'SELECT t::text FROM "{schema}"."{table}" t'))).scalars().all()).lower()
            hits = [n for n in needles if n.lower() in blob]
            if hits:
                found[table] = hits
    return found


def _dpo(stack: Stack, tenant: Tenant) -> dict[str, str]:
    return tenant.headers(Role.dpo, academy_ids=[], subject="dpo-1")


async def test_erasure_through_consent_leaves_no_plaintext_in_either_schema(stack, tenant, engine):
    tag = uuid.uuid4().hex[:10]
    erased_surname, erased_forename, erased_born = f"Quillfeather{tag}", f"Marisol{tag}", date(2014, 6, 29)
    erased_upn, erased_row = _person(erased_surname, erased_forename, erased_born)
    kept_upn, kept_row = _person(f"Keeper{tag}", f"Rowan{tag}", date(2017, 4, 3))
    erased, kept = await _import(stack, tenant, [erased_row, kept_row])
    note = f"Talked about her weekend with grandma {tag}"
    observed = await stack.client.post("/observations", headers=tenant.headers(), json={
        "pupil_id": str(erased), "framework_version": "flourish-sample-1", "statement_id": "being.3",
        "level": "emerging", "observed_at": now(), "note": note})
    assert observed.status_code == 201, observed.text
    needles = [erased_surname, erased_forename, erased_upn, erased_born.isoformat(), f"{erased_born:%d/%m/%Y}", note]
    # Sealed at rest from the start: nothing of the pupil is readable in either schema.
    assert await _scan(engine, "assessment", needles) == {}
    await _clock_delivered(stack, engine, erased)  # consent now counts retention from the date of birth

    response = await stack.consent.post(f"/pupils/{erased}/erasure", headers=_dpo(stack, tenant))
    assert response.status_code == 201, response.text

    async def tombstoned() -> bool:
        async with engine.connect() as conn:
            return bool(await conn.scalar(text("SELECT count(*) FROM assessment.erased_pupils WHERE pupil_id = :p"),
                                          {"p": erased}))

    await eventually(tombstoned, timeout=60)
    for schema in ("assessment", "consent"):
        assert await _scan(engine, schema, needles) == {}, schema
    async with engine.connect() as conn:
        for table in ("pupil_personal_data", "observation_notes", "retention_clock_outbox"):
            assert await conn.scalar(text(f"SELECT count(*) FROM assessment.{table} WHERE pupil_id = :p"), {"p": erased}) == 0
    # The events keep only the pseudonymous id; reads of the erased pupil's personal data are gone.
    for path in (f"/pupils/{erased}", f"/pupils/{erased}/observations"):
        gone = await stack.client.get(path, headers=tenant.headers())
        assert gone.status_code == 410 and gone.headers["content-type"] == "application/problem+json"
    other = await stack.client.get(f"/pupils/{kept}", headers=tenant.headers())
    assert other.status_code == 200
    assert (other.json()["upn"], other.json()["legal_surname"]) == (kept_upn, f"Keeper{tag}")
    assert await _scan(engine, "assessment", [kept_upn]) == {}  # the other pupil's UPN: sealed too


async def test_ciphertext_copied_before_erasure_stays_unreadable_after_it(stack, tenant, engine):
    _, row = _person("Copyable", "Casey", date(2016, 1, 15))
    (pupil,) = await _import(stack, tenant, [row])
    async with engine.connect() as conn:
        copied = (await conn.execute(text(
            "SELECT trust_id, legal_surname, date_of_birth FROM assessment.pupil_personal_data WHERE pupil_id = :p"),
            {"p": pupil})).one()
    # A fresh client of the consent service, as an attacker holding a service token would use.
    tokens = ServiceTokens(stack.app.state.runtime.deps.privacy.settings, "assessment")
    before = await DataKeyClient(CONSENT_URL, tokens.for_trust, http=stack.consent).key_for(copied.trust_id, pupil)
    assert before.open_json(copied.legal_surname, field_name("legal_surname")) == "Copyable"
    with pytest.raises(SealedFieldUnreadable):  # bound to its field: not movable to another
        before.open_json(copied.legal_surname, field_name("legal_forename"))

    await _clock_delivered(stack, engine, pupil)
    assert (await stack.consent.post(f"/pupils/{pupil}/erasure", headers=_dpo(stack, tenant))).status_code == 201

    with pytest.raises(DataKeyDestroyed):
        await DataKeyClient(CONSENT_URL, tokens.for_trust, http=stack.consent).key_for(copied.trust_id, pupil)
    async with engine.connect() as conn:
        wrapped = await conn.scalar(text("SELECT wrapped_key FROM consent.data_keys WHERE pupil_id = :p"), {"p": pupil})
    assert wrapped is None  # no key material for the copy exists anywhere any more
    # The service's own keyring forgets it too (once PupilErased is consumed: no cached key).
    async def forgotten() -> bool:
        try:
            await stack.app.state.runtime.deps.privacy.keyring.key_for(copied.trust_id, pupil)
        except DataKeyDestroyed:
            return True
        return False

    await eventually(forgotten, timeout=60)


async def test_re_import_matches_sealed_upns_through_a_keyed_blind_index(stack, tenant, engine):
    rows = [_person(f"Index{n}", f"Ivy{n}", date(2017, 2, 1 + n))[1] for n in range(3)]
    first = await _import(stack, tenant, rows)
    again = (await import_roster(stack.client, tenant, roster_csv(rows))).json()
    assert (again["enrolled"], again["unchanged"]) == ([], 3)

    renamed = [rows[0].replace("Index0", "Renamed0"), *rows[1:]]
    changed = (await import_roster(stack.client, tenant, roster_csv(renamed))).json()
    assert (changed["enrolled"], changed["updated"], changed["unchanged"]) == ([], 1, 2)
    assert (await stack.client.get(f"/pupils/{first[0]}", headers=tenant.headers())).json()["legal_surname"] == "Renamed0"

    async with engine.connect() as conn:
        stored = (await conn.execute(text(
            "SELECT upn, upn_index FROM assessment.pupil_personal_data WHERE pupil_id = :p"), {"p": first[0]})).one()
    number = rows[0].split(",")[0]
    assert stored.upn.startswith("fl1.") and number not in stored.upn
    # Keyed: not a plain hash anyone could compute from a guessed UPN.
    assert stored.upn_index not in (hashlib.sha256(number.encode()).hexdigest(), hashlib.sha1(number.encode()).hexdigest())
    assert stored.upn_index == stack.app.state.runtime.deps.privacy.index.upn(tenant.trust_id, number)
    assert stored.upn_index != stack.app.state.runtime.deps.privacy.index.upn(uuid.uuid4(), number)  # per trust


async def test_imports_fail_closed_when_the_consent_service_is_unreachable(service_settings, tenant, engine):
    from services.assessment.app import app as assessment_app

    settings = service_settings.model_copy(update={"consent_url": "http://127.0.0.1:9"})  # nothing listens
    app = assessment_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://assessment") as client,
    ):
        await tenant.register(client)
        _, row = _person("Unsealed", "Uma", date(2017, 3, 3))
        response = await import_roster(client, tenant, roster_csv([row]))
    assert response.status_code == 503
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM assessment.pupils WHERE academy_id = :a"),
                                 {"a": tenant.academy_id}) == 0
