"""Envelope encryption with per-pupil data keys, the local KEK, and the caching key client (its
HTTP peer faked with httpx.MockTransport: the consent service itself is tested in integration)."""

from __future__ import annotations

import asyncio
import base64
import stat
import uuid
from pathlib import Path

import httpx
import pytest

from shared.datakeys import (
    DataKey,
    DataKeyClient,
    DataKeyDestroyed,
    DataKeyError,
    DataKeySettings,
    DataKeyUnavailable,
    KeyEncryptionKey,
    LocalKek,
    SealedFieldUnreadable,
    key_aad,
    new_data_key,
)

TRUST, PUPIL, OTHER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def test_a_sealed_field_opens_with_the_same_key_pupil_and_field_only() -> None:
    key = new_data_key(TRUST, PUPIL)
    sealed = key.seal_json({"name": "Ada Example", "upn": "A123456789012"}, "pupil.details")
    assert sealed.startswith("fl1.") and "Ada" not in sealed
    assert key.open_json(sealed, "pupil.details") == {"name": "Ada Example", "upn": "A123456789012"}
    assert key.seal_text("same", "f") != key.seal_text("same", "f")  # a fresh nonce each time
    moved = DataKey(TRUST, OTHER, key.material)  # same key bytes, another pupil
    for attempt in (lambda: key.open(sealed, "pupil.notes"), lambda: moved.open(sealed, "pupil.details"),
                    lambda: new_data_key(TRUST, PUPIL).open(sealed, "pupil.details")):
        with pytest.raises(SealedFieldUnreadable):
            attempt()


def test_a_tampered_or_malformed_value_does_not_open() -> None:
    key = new_data_key(TRUST, PUPIL)
    sealed = key.seal_text("Ada", "f")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (flipped, "Ada", "fl1.", "fl1.!!!!", sealed[:20]):
        with pytest.raises(SealedFieldUnreadable):
            key.open(bad, "f")


def test_a_data_key_never_shows_its_material() -> None:
    key = new_data_key(TRUST, PUPIL)
    assert base64.b64encode(key.material).decode() not in repr(key) and key.material.hex() not in repr(key)


async def test_the_local_kek_wraps_keys_bound_to_their_pupil() -> None:
    kek = LocalKek(bytes(range(32)))
    assert isinstance(kek, KeyEncryptionKey) and kek.key_id.startswith("local:")
    key = new_data_key(TRUST, PUPIL)
    wrapped = await kek.wrap(key.material, key_aad(TRUST, PUPIL))
    assert await kek.unwrap(wrapped, key_aad(TRUST, PUPIL)) == key.material
    with pytest.raises(DataKeyError):
        await kek.unwrap(wrapped, key_aad(TRUST, OTHER))
    with pytest.raises(DataKeyError):
        await LocalKek(bytes(32)).unwrap(wrapped, key_aad(TRUST, PUPIL))


def test_a_kek_setting_must_be_32_bytes_of_base64() -> None:
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="the key-encryption key"):
            LocalKek.from_base64(bad)
    setting = base64.b64encode(bytes(range(32))).decode()
    assert LocalKek.from_base64(setting).key_id == LocalKek(bytes(range(32))).key_id


def test_without_a_setting_a_dev_kek_is_generated_once_owner_only(tmp_path: Path) -> None:
    first = LocalKek.from_settings(DataKeySettings(data_kek=None), tmp_path)
    second = LocalKek.from_settings(DataKeySettings(data_kek=None), tmp_path)
    path = tmp_path / "data-kek" / "kek.b64"
    assert first.key_id == second.key_id and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert LocalKek.from_settings(DataKeySettings(data_kek=None), tmp_path / "elsewhere").key_id != first.key_id
    explicit = base64.b64encode(bytes(range(32))).decode()
    assert LocalKek.from_settings(DataKeySettings(data_kek=explicit), tmp_path).key_id == LocalKek(bytes(range(32))).key_id


class FakeConsent:
    """The consent service's key endpoint, as far as the client can tell."""

    def __init__(self) -> None:
        self.keys = {PUPIL: new_data_key(TRUST, PUPIL)}
        self.erased: set[uuid.UUID] = set()
        self.requests: list[httpx.Request] = []
        self.status: int | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        pupil = uuid.UUID(request.url.path.split("/")[2])
        if self.status is not None:
            return httpx.Response(self.status)
        if pupil in self.erased:
            return httpx.Response(410)
        key = self.keys.setdefault(pupil, new_data_key(TRUST, pupil))
        return httpx.Response(200, json={"pupil_id": str(pupil), "trust_id": str(key.trust_id),
                                         "algorithm": "AES-256-GCM", "key": base64.b64encode(key.material).decode()})


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def client_for(fake: FakeConsent, clock: Clock, tokens: list[uuid.UUID] | None = None, ttl_s: float = 60) -> DataKeyClient:
    def token(trust: uuid.UUID) -> str:
        if tokens is not None:
            tokens.append(trust)
        return f"token-for-{trust}"

    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    return DataKeyClient("https://consent.example", token, ttl_s=ttl_s, http=http, clock=clock)


async def test_the_client_caches_keys_for_the_ttl_and_asks_as_a_service_of_the_trust() -> None:
    fake, clock, tokens = FakeConsent(), Clock(), []
    client = client_for(fake, clock, tokens)
    first = await client.key_for(TRUST, PUPIL)
    clock.now = 59
    again = await client.key_for(TRUST, PUPIL)
    clock.now = 61
    refreshed = await client.key_for(TRUST, PUPIL)
    assert first.material == again.material == refreshed.material == fake.keys[PUPIL].material
    assert client.fetches == 2 and tokens == [TRUST, TRUST]
    assert fake.requests[0].headers["authorization"] == f"Bearer token-for-{TRUST}"
    assert fake.requests[0].url.path == f"/pupils/{PUPIL}/data-key"


async def test_erasure_is_remembered_and_forget_drops_a_cached_key_at_once() -> None:
    fake, clock = FakeConsent(), Clock()
    client = client_for(fake, clock)
    await client.key_for(TRUST, PUPIL)
    fake.erased.add(PUPIL)
    await client.key_for(TRUST, PUPIL)  # still cached: the TTL bounds how long
    client.forget(PUPIL)
    with pytest.raises(DataKeyDestroyed):
        await client.key_for(TRUST, PUPIL)
    clock.now = 10_000
    with pytest.raises(DataKeyDestroyed):
        await client.key_for(TRUST, PUPIL)
    assert client.fetches == 2  # a destroyed key is never asked for again


@pytest.mark.parametrize("status", [401, 403, 404, 500, 503])
async def test_any_other_answer_fails_closed(status: int) -> None:
    fake, clock = FakeConsent(), Clock()
    fake.status = status
    client = client_for(fake, clock)
    with pytest.raises(DataKeyUnavailable):
        await client.key_for(TRUST, PUPIL)
    fake.status = None
    assert (await client.key_for(TRUST, PUPIL)).pupil_id == PUPIL  # failures are not cached


async def test_an_unreachable_service_a_wrong_answer_or_a_wrong_trust_fails_closed() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    def wrong_pupil(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"pupil_id": str(OTHER), "trust_id": str(TRUST), "algorithm": "AES-256-GCM",
                                         "key": base64.b64encode(bytes(32)).decode()})

    for handler in (unreachable, wrong_pupil, lambda r: httpx.Response(200, json={"nonsense": True})):
        client = DataKeyClient("https://c", lambda t: "t", http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        with pytest.raises(DataKeyUnavailable):
            await client.key_for(TRUST, PUPIL)
    client = client_for(FakeConsent(), Clock())
    await client.key_for(TRUST, PUPIL)
    with pytest.raises(DataKeyUnavailable):
        await client.key_for(uuid.uuid4(), PUPIL)  # a cached key is not handed to another trust


async def test_concurrent_requests_for_one_pupil_share_one_fetch_and_the_cache_is_bounded() -> None:
    fake, clock = FakeConsent(), Clock()
    client = client_for(fake, clock)
    client._max = 2  # noqa: SLF001 - a small bound for the test
    keys = await asyncio.gather(*(client.key_for(TRUST, PUPIL) for _ in range(10)))
    assert len({k.material for k in keys}) == 1 and client.fetches == 1
    for _ in range(3):
        await client.key_for(TRUST, uuid.uuid4())
    await client.key_for(TRUST, PUPIL)
    assert client.fetches == 5  # PUPIL was evicted by newer entries and fetched again


async def test_an_async_token_provider_is_awaited() -> None:
    async def token(trust: uuid.UUID) -> str:
        return "async-token"

    fake = FakeConsent()
    client = DataKeyClient("https://c", token, http=httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)))
    await client.key_for(TRUST, PUPIL)
    assert fake.requests[0].headers["authorization"] == "Bearer async-token"


async def test_the_erasure_handler_forgets_the_cached_key() -> None:
    from types import SimpleNamespace

    from shared.datakeys import forget_on_erasure

    fake, clock = FakeConsent(), Clock()
    client = client_for(fake, clock)
    await client.key_for(TRUST, PUPIL)
    await forget_on_erasure(client)(None, SimpleNamespace(data=SimpleNamespace(pupil_id=PUPIL)))
    await client.key_for(TRUST, PUPIL)
    assert client.fetches == 2


def test_production_refuses_to_generate_a_key_encryption_key(tmp_path):
    with pytest.raises(ValueError, match="FLOURISH_DATA_KEK is required in production"):
        LocalKek.from_settings(DataKeySettings(data_kek=None), tmp_path, production=True)
    assert not (tmp_path / "data-kek").exists()
