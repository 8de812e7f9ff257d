"""Per-pupil data keys: envelope encryption of personal fields, and how every service gets a key.

Each pupil has one 256-bit data key. Personal fields (a parent's name, a date of birth, a UPN, a
free-text note) are sealed with it using AES-256-GCM before they reach a table or an event, so
they travel through PostgreSQL and Kafka only as ciphertext. The consent service keeps the keys,
each wrapped by a key-encryption key (KEK) that never leaves its process (or its KMS). Erasing a
pupil destroys the wrapped key: every copy of every sealed field, in every table, backup and Kafka
topic, becomes unreadable at once (crypto-shredding).

Three pieces:

* ``DataKey.seal`` / ``DataKey.open`` (and ``seal_json`` / ``open_json``): the primitives. The
  ciphertext is bound (AES-GCM associated data) to the trust, the pupil and the field it belongs
  to, so it cannot be moved to another pupil or another field and still open.
* ``KeyEncryptionKey``: the protocol a KMS implements (wrap, unwrap); ``LocalKek`` is the
  implementation from a base64 setting, with a generated development key under ``.flourish/``.
  ``KekKeyring`` holds one active KEK (which wraps) and the retired ones (which only unwrap):
  every wrapped secret is stored beside the ``kek_id`` it was wrapped under, unwrap asks the
  keyring for that very KEK, and ``flourish admin rotate-kek`` rewraps everything under the active
  one so that a retired KEK can be destroyed.
* ``DataKeyClient`` (over authenticated HTTP, with a short-lived cache) for the other services,
  and ``DataKeyVault`` (in-process, over the ``data_keys`` table) for the consent service itself.
  Both answer ``await key_for(trust_id, pupil_id)``; both raise ``DataKeyDestroyed`` once the pupil
  was erased, and nothing ever mints a new key for an erased pupil.

Over 400 lines on purpose: these three pieces are one cryptographic design (the associated data,
the wrapping and the erasure rule must agree), reviewed together; splitting them would scatter it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable
from uuid import UUID

import httpx
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, SecretStr, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.localsecrets import dev_secret

__all__ = [
    "ALGORITHM",
    "DataKey",
    "DataKeyClient",
    "DataKeyDestroyed",
    "DataKeyError",
    "DataKeyRefused",
    "DataKeySettings",
    "DataKeyUnavailable",
    "DataKeyVault",
    "KekKeyring",
    "KeyEncryptionKey",
    "LocalKek",
    "PupilKeyring",
    "Rewrapped",
    "Sealed",
    "SealedFieldUnreadable",
    "UnknownDataKey",
    "UnknownKek",
    "VaultKeyring",
    "Wrapped",
    "data_keys_table",
    "destroy_key",
    "field_context",
    "forget_on_erasure",
    "rewrap_table",
]

ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
# A sealed field as text: "fl1." + base64url(nonce || ciphertext || tag). The version prefix lets a
# later format (another cipher, a key version) coexist with this one on the same topic.
SEALED_PREFIX = "fl1."
SEALED_PATTERN = r"^fl1\.[A-Za-z0-9_-]{38,}$"

# A sealed value inside a pydantic model (an event or an API response): text that is not the
# plaintext. Models that carry personal data declare such fields, never plain `str`.
Sealed = Annotated[str, StringConstraints(pattern=SEALED_PATTERN)]


# --- Errors -------------------------------------------------------------------------------------


class DataKeyError(Exception):
    """Any failure to get or use a pupil's data key. Callers fail closed on all of them."""


class DataKeyDestroyed(DataKeyError):
    """The pupil was erased: their key is gone, and with it every sealed field about them."""

    def __init__(self, pupil_id: UUID) -> None:
        super().__init__(f"the data key of pupil {pupil_id} was destroyed (the pupil was erased)")
        self.pupil_id = pupil_id


class UnknownDataKey(DataKeyError):
    """No key exists for this pupil (and the caller did not ask for one to be created)."""

    def __init__(self, pupil_id: UUID) -> None:
        super().__init__(f"no data key exists for pupil {pupil_id}")
        self.pupil_id = pupil_id


class DataKeyUnavailable(DataKeyError):
    """The key service could not be asked, or refused the caller: nothing can be sealed or read."""


class DataKeyRefused(DataKeyUnavailable):
    """The key service refused this pupil's key to the caller's trust (the pupil is another
    trust's): retrying cannot help, unlike the other DataKeyUnavailable."""


class SealedFieldUnreadable(DataKeyError):
    """A sealed value did not open: wrong key, wrong pupil or field, or tampered with."""


class UnknownKek(DataKeyError):
    """A secret names a key-encryption key the keyring does not hold (destroyed, never configured,
    or a tampered kek_id): it is refused, never tried under another KEK."""

    def __init__(self, kek_id: str | None) -> None:
        super().__init__(f"no key-encryption key {kek_id!r} in the keyring")
        self.kek_id = kek_id


# --- The primitives -----------------------------------------------------------------------------


def field_context(trust_id: UUID, pupil_id: UUID, field: str) -> bytes:
    """The associated data a sealed field is bound to: whose it is and what it is."""
    return f"flourish/v1/{trust_id}/{pupil_id}/{field}".encode()


@dataclass(frozen=True, repr=False)
class DataKey:
    """One pupil's data key. Its repr never shows the key material."""

    trust_id: UUID
    pupil_id: UUID
    material: bytes
    _aead: AESGCM = dataclass_field(init=False, compare=False, repr=False)
    _context: bytes = dataclass_field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        # The cipher and the associated data's prefix, set up once per key rather than per field.
        object.__setattr__(self, "_aead", AESGCM(self.material))
        object.__setattr__(self, "_context", field_context(self.trust_id, self.pupil_id, ""))

    def __repr__(self) -> str:
        return f"DataKey(trust_id={self.trust_id}, pupil_id={self.pupil_id})"

    def seal(self, plaintext: bytes, field: str) -> str:
        """Encrypt one field of this pupil's data (a fresh random nonce each time)."""
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, plaintext, self._context + field.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + ciphertext).rstrip(b"=").decode()

    def open(self, sealed: str, field: str) -> bytes:
        """Decrypt a field sealed with this key for the same pupil and field name."""
        if not sealed.startswith(SEALED_PREFIX):
            raise SealedFieldUnreadable("not a sealed value")
        body = sealed[len(SEALED_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, binascii.Error):
            raise SealedFieldUnreadable("not a sealed value") from None
        if len(raw) < NONCE_BYTES + 16:
            raise SealedFieldUnreadable("the sealed value is truncated")
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._context + field.encode())
        except InvalidTag:
            raise SealedFieldUnreadable(f"the sealed field {field!r} does not open with this pupil's key") from None

    def seal_json(self, value: Any, field: str) -> str:
        return self.seal(orjson.dumps(value), field)

    def open_json(self, sealed: str, field: str) -> Any:
        return orjson.loads(self.open(sealed, field))

    def seal_text(self, value: str, field: str) -> str:
        return self.seal(value.encode(), field)

    def open_text(self, sealed: str, field: str) -> str:
        return self.open(sealed, field).decode()


def new_data_key(trust_id: UUID, pupil_id: UUID) -> DataKey:
    return DataKey(trust_id, pupil_id, AESGCM.generate_key(bit_length=KEY_BYTES * 8))


def key_aad(trust_id: UUID, pupil_id: UUID) -> bytes:
    """What a wrapped data key is bound to: a wrapped key moved to another pupil will not unwrap."""
    return f"flourish/data-key/v1/{trust_id}/{pupil_id}".encode()


# --- Key-encryption keys ------------------------------------------------------------------------


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. A cloud KMS (AWS KMS Encrypt/Decrypt with an encryption
    context, GCP KMS with additional authenticated data, Vault transit with context) implements
    this with the same meaning: `aad` must match on unwrap or the unwrap fails."""

    @property
    def key_id(self) -> str:
        """Which KEK wrapped a key (stored beside it, so a rotated KEK can still unwrap old keys)."""
        ...

    async def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    async def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalKek:
    """A KEK held in this process: AES-256-GCM with a key from a base64 setting.

    For production, prefer a KMS behind KeyEncryptionKey; where a local KEK is used it comes from a
    secret (FLOURISH_DATA_KEK), never from the repository. Without the setting, a development KEK
    is generated once into `<state_dir>/data-kek/kek.b64` (owner-only), never hard-coded.
    """

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise ValueError(f"the key-encryption key must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(material)
        self._key_id = "local:" + hashlib.sha256(b"flourish-kek-id\x00" + material).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    @classmethod
    def from_base64(cls, value: str) -> LocalKek:
        try:
            material = base64.b64decode(value.strip(), validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("the key-encryption key is not valid base64") from None
        return cls(material)

    @classmethod
    def from_settings(cls, settings: DataKeySettings, state_dir: Path, *, production: bool = False) -> LocalKek:
        if settings.data_kek is not None:
            return cls.from_base64(settings.data_kek.get_secret_value())
        if production:
            # A generated key in production would make every pupil's data depend on one pod's disk.
            raise ValueError("FLOURISH_DATA_KEK is required in production (or a KMS-backed KeyEncryptionKey)")
        return cls.from_base64(_dev_kek(state_dir))

    async def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, aad)

    async def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DataKeyError("a wrapped data key does not unwrap with this KEK and context") from None


def _dev_kek(state_dir: Path) -> str:
    """The development KEK: created once, then read by every process."""
    return dev_secret(state_dir / "data-kek" / "kek.b64",
                      lambda: base64.b64encode(os.urandom(KEY_BYTES)) + b"\n").decode()


@dataclass(frozen=True)
class Wrapped:
    """A secret wrapped under one KEK of the keyring: store both, unwrap with both."""

    kek_id: str
    blob: bytes


class KekKeyring:
    """The versioned key-encryption keyring: one active KEK wraps, every KEK held unwraps.

    Each wrapped secret is stored with the `kek_id` it was wrapped under (the KEK's own id: for a
    LocalKek a fingerprint of its material, for a KMS its key version), and `unwrap` uses exactly
    that KEK: a secret naming a KEK the keyring does not hold is refused (UnknownKek), one whose
    kek_id was changed to another KEK's fails authentication (AES-GCM). A retired KEK stays here,
    for unwrap only, until `flourish admin rotate-kek` has rewrapped every secret under the active
    one; then it may be removed from the settings and destroyed.
    """

    def __init__(self, active: KeyEncryptionKey, retired: Sequence[KeyEncryptionKey] = ()) -> None:
        self.active = active
        self._by_id: dict[str, KeyEncryptionKey] = {kek.key_id: kek for kek in retired}
        self._by_id[active.key_id] = active

    @classmethod
    def of(cls, kek: KeyEncryptionKey | KekKeyring) -> KekKeyring:
        """A keyring as it is, or a single KEK as a keyring of one."""
        return kek if isinstance(kek, KekKeyring) else cls(kek)

    @classmethod
    def from_settings(cls, settings: DataKeySettings, state_dir: Path, *, production: bool = False) -> KekKeyring:
        active = LocalKek.from_settings(settings, state_dir, production=production)
        if settings.data_kek_retired:
            retired = [LocalKek.from_base64(value.get_secret_value()) for value in settings.data_kek_retired]
        elif settings.data_kek is None and not production:
            retired = [LocalKek.from_base64(path.read_text())
                       for path in sorted((state_dir / "data-kek" / "retired").glob("*.b64"))]
        else:
            retired = []
        return cls(active, retired)

    @property
    def active_id(self) -> str:
        return self.active.key_id

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def holds(self, kek_id: str | None) -> bool:
        return kek_id is not None and kek_id in self._by_id

    async def wrap(self, secret: bytes, aad: bytes) -> Wrapped:
        """Wrap under the active KEK."""
        return Wrapped(self.active.key_id, await self.active.wrap(secret, aad))

    async def unwrap(self, kek_id: str | None, wrapped: bytes, aad: bytes) -> bytes:
        """Unwrap under the KEK the secret says it was wrapped under, and no other."""
        kek = self._by_id.get(kek_id) if kek_id is not None else None
        if kek is None:
            raise UnknownKek(kek_id)
        return await kek.unwrap(wrapped, aad)

    async def rewrap(self, kek_id: str | None, wrapped: bytes, aad: bytes) -> Wrapped:
        """The same secret, wrapped under the active KEK (unchanged if it already is)."""
        if kek_id == self.active.key_id:
            await self.unwrap(kek_id, wrapped, aad)  # still proves it opens
            return Wrapped(kek_id, wrapped)
        return await self.wrap(await self.unwrap(kek_id, wrapped, aad), aad)


class DataKeySettings(BaseSettings):
    """Where keys come from. (Kept here until the kernel's Settings carries these fields.)"""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_", extra="ignore")

    # The active KEK (it wraps every new secret), base64 of 32 bytes. Unset: a dev KEK under state_dir.
    data_kek: SecretStr | None = None
    # Retired KEKs, kept to unwrap what was wrapped under them until `flourish admin rotate-kek`
    # has rewrapped it (FLOURISH_DATA_KEK_RETIRED='["<base64>", ...]'). Unset: the dev folder's
    # `<state_dir>/data-kek/retired/*.b64`, if any.
    data_kek_retired: list[SecretStr] = Field(default_factory=list)
    # How long a service keeps a fetched key in memory. Bounds how long a replica that did not
    # see PupilErased can still read the pupil's data.
    data_key_cache_ttl_s: float = Field(default=60.0, ge=0, le=900)
    data_key_cache_size: int = Field(default=10_000, ge=1)


# --- The keyring interface every service uses ---------------------------------------------------


class PupilKeyring(Protocol):
    async def key_for(self, trust_id: UUID, pupil_id: UUID) -> DataKey:
        """The pupil's data key (created on first use); DataKeyDestroyed after erasure."""
        ...

    def forget(self, pupil_id: UUID) -> None:
        """Drop any cached copy (on PupilErased)."""
        ...


# --- The consent service's vault ----------------------------------------------------------------


def data_keys_table(metadata: MetaData) -> Table:
    """The wrapped per-pupil keys, in the consent service's schema.

    After erasure the row stays as a tombstone (wrapped_key NULL, destroyed_at set): it proves the
    key is gone and stops a late event or request from minting a fresh key for that pupil.
    """
    return Table(
        "data_keys",
        metadata,
        Column("pupil_id", Uuid, nullable=False),
        Column("trust_id", Uuid, nullable=False),
        Column("kek_id", Text, nullable=True),
        Column("wrapped_key", LargeBinary, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("destroyed_at", DateTime(timezone=True), nullable=True),
        PrimaryKeyConstraint("pupil_id", name="data_keys_pkey"),
        # A wrapped key always names the KEK it was wrapped under (consent_0004_keyring).
        CheckConstraint("(wrapped_key IS NULL) = (kek_id IS NULL)", name="data_keys_kek_id_names_the_wrapping"),
    )


class DataKeyVault:
    """The consent service's keys: created, unwrapped and destroyed in the caller's transaction.

    No cache: unwrapping is a microsecond of AES, and a cache could outlive a destruction made by
    another replica.
    """

    def __init__(self, kek: KeyEncryptionKey | KekKeyring, table: Table) -> None:
        self.kek = KekKeyring.of(kek)
        self.table = table

    async def key_for(self, conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, *, create: bool = True) -> DataKey:
        row = await self._row(conn, pupil_id)
        if row is None:
            if not create:
                raise UnknownDataKey(pupil_id)
            candidate = new_data_key(trust_id, pupil_id)
            wrapped = await self.kek.wrap(candidate.material, key_aad(trust_id, pupil_id))
            await conn.execute(
                insert(self.table)
                .values(pupil_id=pupil_id, trust_id=trust_id, kek_id=wrapped.kek_id, wrapped_key=wrapped.blob)
                .on_conflict_do_nothing(index_elements=["pupil_id"])
            )
            # Two callers racing: the first insert wins and both use its key.
            row = await self._row(conn, pupil_id)
            assert row is not None
        if row.trust_id != trust_id:
            # A pupil belongs to one trust; asking in another trust's name is refused, not answered.
            raise UnknownDataKey(pupil_id)
        if row.wrapped_key is None:
            raise DataKeyDestroyed(pupil_id)
        material = await self.kek.unwrap(row.kek_id, row.wrapped_key, key_aad(trust_id, pupil_id))
        return DataKey(trust_id, pupil_id, material)

    async def status(self, conn: AsyncConnection, pupil_id: UUID) -> tuple[UUID, datetime | None] | None:
        """(trust_id, destroyed_at) of the pupil's key, or None when none was ever made."""
        row = await self._row(conn, pupil_id)
        return None if row is None else (row.trust_id, row.destroyed_at)

    async def destroy(self, conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, at: datetime | None = None) -> None:
        """Crypto-shred: drop the wrapped key for good, leaving a tombstone (made if none existed)."""
        await destroy_key(conn, self.table, trust_id, pupil_id, at)

    async def _row(self, conn: AsyncConnection, pupil_id: UUID) -> Any:
        t = self.table
        result = await conn.execute(
            select(t.c.trust_id, t.c.kek_id, t.c.wrapped_key, t.c.destroyed_at).where(t.c.pupil_id == pupil_id)
        )
        return result.first()


async def destroy_key(conn: AsyncConnection, table: Table, trust_id: UUID, pupil_id: UUID,
                      at: datetime | None = None) -> None:
    """Crypto-shred one pupil's key in `table` (DataKeyVault.destroy; reapply-erasures, which
    needs no KEK to destroy)."""
    moment = at or datetime.now(UTC)
    await conn.execute(
        insert(table)
        .values(pupil_id=pupil_id, trust_id=trust_id, kek_id=None, wrapped_key=None, destroyed_at=moment)
        .on_conflict_do_update(
            index_elements=["pupil_id"],
            set_={"kek_id": None, "wrapped_key": None, "destroyed_at": moment},
            where=table.c.trust_id == trust_id,
        )
    )


# --- The client other services use --------------------------------------------------------------

TokenProvider = Callable[[UUID], str | Awaitable[str]]


@dataclass
class _Cached:
    key: DataKey | None  # None: a tombstone (the pupil was erased)
    expires_at: float


class DataKeyClient:
    """Fetches pupils' data keys from the consent service (GET /pupils/{id}/data-key), as a
    `service` principal of the pupil's trust, and keeps them for a short while.

    * `token_provider(trust_id)` returns a bearer token with role `service` for that trust (from
      the identity provider's client-credentials flow; the dev issuer locally).
    * Keys are cached for `ttl_s` seconds (LRU, at most `max_entries`); an erasure is remembered
      for good (keys are never re-made). `forget(pupil_id)` drops an entry at once: call it from
      the service's PupilErased handler.
    * Fails closed: any answer but 200 or 410 raises, and nothing is sealed or read.
    * Keys travel in the clear inside the response: `base_url` must be https in production.
    """

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        ttl_s: float = 60.0,
        max_entries: int = 10_000,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._tokens = token_provider
        self._ttl = ttl_s
        self._max = max_entries
        self._http = http or httpx.AsyncClient(timeout=5.0)
        self._owns_http = http is None
        self._clock = clock
        self._cache: OrderedDict[UUID, _Cached] = OrderedDict()
        self._inflight: dict[UUID, asyncio.Future[DataKey | None]] = {}
        self.fetches = 0  # how many times the consent service was asked (tests, metrics)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def key_for(self, trust_id: UUID, pupil_id: UUID) -> DataKey:
        cached = self._cache.get(pupil_id)
        if cached is not None and (cached.key is None or cached.expires_at > self._clock()):
            self._cache.move_to_end(pupil_id)
            return self._checked(cached.key, trust_id, pupil_id)
        # Concurrent requests for one pupil share one fetch.
        pending = self._inflight.get(pupil_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[pupil_id] = pending
            try:
                key = await self._fetch(trust_id, pupil_id)
                pending.set_result(key)
            except BaseException as error:
                pending.set_exception(error)
                pending.exception()  # retrieved: no "never retrieved" warning when nobody shared it
                raise
            finally:
                del self._inflight[pupil_id]
            self._remember(pupil_id, key)
            return self._checked(key, trust_id, pupil_id)
        return self._checked(await asyncio.shield(pending), trust_id, pupil_id)

    def forget(self, pupil_id: UUID) -> None:
        self._cache.pop(pupil_id, None)

    def _checked(self, key: DataKey | None, trust_id: UUID, pupil_id: UUID) -> DataKey:
        if key is None:
            raise DataKeyDestroyed(pupil_id)
        if key.trust_id != trust_id:
            raise DataKeyUnavailable("the pupil's key belongs to another trust")
        return key

    def _remember(self, pupil_id: UUID, key: DataKey | None) -> None:
        self._cache[pupil_id] = _Cached(key, self._clock() + self._ttl)
        self._cache.move_to_end(pupil_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def _fetch(self, trust_id: UUID, pupil_id: UUID) -> DataKey | None:
        token = self._tokens(trust_id)
        if not isinstance(token, str):
            token = await token
        self.fetches += 1
        try:
            response = await self._http.get(
                f"{self._base_url}/pupils/{pupil_id}/data-key", headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as error:
            raise DataKeyUnavailable(f"the consent service did not answer ({type(error).__name__})") from None
        if response.status_code == 410:
            return None
        if response.status_code == 403:
            raise DataKeyRefused("the consent service refused the pupil's data key to this trust")
        if response.status_code != 200:
            raise DataKeyUnavailable(f"the consent service answered {response.status_code} for a data key")
        try:
            body = response.json()
            key = DataKey(UUID(body["trust_id"]), UUID(body["pupil_id"]), base64.b64decode(body["key"], validate=True))
        except (KeyError, ValueError, TypeError, binascii.Error):
            raise DataKeyUnavailable("the consent service's data-key answer is not valid") from None
        if key.pupil_id != pupil_id or body.get("algorithm") != ALGORITHM:
            raise DataKeyUnavailable("the consent service's data-key answer is for another pupil or cipher")
        return key


def forget_on_erasure(keyring: PupilKeyring) -> Callable[[Any, Any], Awaitable[None]]:
    """A consumer handler for PupilErased that drops the pupil's cached key at once.

    Put it first in the service's own PupilErased handler, before it redacts what it holds:

        async def on_pupil_erased(conn, envelope):
            await forget(conn, envelope)          # forget = forget_on_erasure(keys)
            await redact_pupil(conn, envelope.data.pupil_id)

    Only the replica that consumes the event forgets at once; the others within the cache TTL.
    """

    async def forget(conn: Any, envelope: Any) -> None:
        keyring.forget(envelope.data.pupil_id)

    return forget


class VaultKeyring:
    """The consent service's own PupilKeyring: the vault, each call in a short transaction."""

    def __init__(self, vault: DataKeyVault, engine: Any) -> None:
        self.vault = vault
        self.engine = engine

    async def key_for(self, trust_id: UUID, pupil_id: UUID) -> DataKey:
        async with self.engine.begin() as conn:
            return await self.vault.key_for(conn, trust_id, pupil_id)

    def forget(self, pupil_id: UUID) -> None:
        """Nothing is cached in-process."""


# --- Rotation: every wrapped secret of a table under the active KEK ------------------------------


@dataclass
class Rewrapped:
    """What `rewrap_table` found and did, per kek_id (ids only: no secret, no personal data)."""

    table: str
    before: dict[str, int] = dataclass_field(default_factory=dict)  # wrapped secrets per kek_id, before
    rewrapped: dict[str, int] = dataclass_field(default_factory=dict)  # rewrapped now, per former kek_id
    unknown: dict[str, int] = dataclass_field(default_factory=dict)  # under a KEK the keyring lacks: untouched
    unreadable: dict[str, int] = dataclass_field(default_factory=dict)  # did not unwrap (tampered): untouched
    by_trust: dict[UUID, int] = dataclass_field(default_factory=dict)  # rewrapped now, per trust

    @property
    def done(self) -> bool:
        """Everything this table wraps is now under the active KEK."""
        return not self.unknown and not self.unreadable


async def rewrap_table(
    engine: Any, table: Table, keyring: KekKeyring, *, key: str, wrapped: str,
    aad: Callable[[Any], bytes], batch: int = 500,
) -> Rewrapped:
    """Rewrap every secret of `table` (column `wrapped`, its KEK in `kek_id`, rows found by the
    primary-key column `key`) that is not under the active KEK: `aad(row)` gives what it is bound
    to. One short transaction per batch, rows locked (a concurrent erasure waits, and a row it
    nulled is never written back); a run stopped half-way leaves every row either as it was or
    rewrapped, and the next run carries on. Rows under a KEK the keyring does not hold are
    counted in `unknown`, rows that do not unwrap under the KEK they name in `unreadable`; both
    are left alone."""
    c = table.c
    result = Rewrapped(table.name)
    async with engine.connect() as conn:
        counted = await conn.execute(select(c.kek_id, func.count()).where(c[wrapped].is_not(None)).group_by(c.kek_id))
        result.before = {str(kek_id): n for kek_id, n in counted}
    result.unknown = {kek_id: n for kek_id, n in result.before.items() if not keyring.holds(kek_id)}
    movable = [kek_id for kek_id in result.before if keyring.holds(kek_id) and kek_id != keyring.active_id]
    after: Any = None
    while movable:
        async with engine.begin() as conn:
            query = (select(table).where(c.kek_id.in_(movable), c[wrapped].is_not(None))
                     .order_by(c[key]).limit(batch).with_for_update())
            if after is not None:
                query = query.where(c[key] > after)
            rows = (await conn.execute(query)).all()
            if not rows:
                break
            for row in rows:
                try:
                    fresh = await keyring.rewrap(row.kek_id, getattr(row, wrapped), aad(row))
                except DataKeyError:
                    result.unreadable[row.kek_id] = result.unreadable.get(row.kek_id, 0) + 1
                    continue
                await conn.execute(table.update().where(c[key] == getattr(row, key), c.kek_id == row.kek_id)
                                   .values({"kek_id": fresh.kek_id, wrapped: fresh.blob}))
                result.rewrapped[row.kek_id] = result.rewrapped.get(row.kek_id, 0) + 1
                result.by_trust[row.trust_id] = result.by_trust.get(row.trust_id, 0) + 1
            after = getattr(rows[-1], key)
    return result
