"""What privacy.py and personal_data.py both need, so that each imports it and not the other:
the assessment service's privacy settings, the UPN blind index, and many pupils' data keys at once.

UPNs are guessable (a check letter and 12 digits), so a plain hash of one is as good as the UPN.
Import matching uses HMAC-SHA256 of the normalised UPN under a per-trust lookup key derived from
FLOURISH_LOOKUP_KEY (a secret; a development key is generated under state_dir, and production
refuses to start without the setting).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.datakeys import DataKey, DataKeyDestroyed, PupilKeyring
from shared.localsecrets import dev_secret

LOOKUP_KEY_BYTES = 32
# At most this many key fetches at once from the consent service (an import of a whole school).
KEY_FETCH_CONCURRENCY = 16


class AssessmentPrivacySettings(BaseSettings):
    """The assessment service's own privacy settings (beside the kernel's Settings)."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_", extra="ignore")

    # Base64 of 32 random bytes: the master key per-trust UPN lookup keys are derived from. A
    # secret like the KEK; changing it orphans every stored index (re-imports would re-enrol).
    lookup_key: SecretStr | None = None
    # How often the retention-clock outbox is looked at, and the longest wait between retries.
    retention_clock_interval_s: float = Field(default=2.0, gt=0)
    retention_clock_backoff_max_s: float = Field(default=300.0, gt=0)


# --- The blind index ----------------------------------------------------------------------------


class BlindIndex:
    """HMAC-SHA256 of a normalised UPN under the trust's lookup key (derived from the master)."""

    def __init__(self, master: bytes) -> None:
        if len(master) != LOOKUP_KEY_BYTES:
            raise ValueError("FLOURISH_LOOKUP_KEY must be base64 of 32 random bytes")
        self._master = master
        self._per_trust: dict[UUID, bytes] = {}

    @classmethod
    def from_settings(cls, settings: AssessmentPrivacySettings, state_dir: Path, *, production: bool) -> BlindIndex:
        if settings.lookup_key is not None:
            value = settings.lookup_key.get_secret_value()
        elif production:
            raise ValueError("FLOURISH_LOOKUP_KEY is required in production (the UPN blind index key)")
        else:
            value = _dev_lookup_key(state_dir)
        try:
            return cls(base64.b64decode(value.strip(), validate=True))
        except (ValueError, binascii.Error):
            raise ValueError("FLOURISH_LOOKUP_KEY is not valid base64 of 32 bytes") from None

    def trust_key(self, trust_id: UUID) -> bytes:
        key = self._per_trust.get(trust_id)
        if key is None:
            key = hmac.new(self._master, b"flourish/v1/upn-lookup/" + trust_id.bytes, hashlib.sha256).digest()
            self._per_trust[trust_id] = key
        return key

    def upn(self, trust_id: UUID, upn: str) -> str:
        return hmac.new(self.trust_key(trust_id), normalise_upn(upn).encode(), hashlib.sha256).hexdigest()


def normalise_upn(upn: str) -> str:
    return "".join(upn.split()).upper()


def _dev_lookup_key(state_dir: Path) -> str:
    """Created once under state_dir, then read by every process."""
    return dev_secret(state_dir / "lookup-key" / "lookup.b64",
                      lambda: base64.b64encode(os.urandom(LOOKUP_KEY_BYTES)) + b"\n").decode()


# --- Keys ---------------------------------------------------------------------------------------


async def keys_for(keyring: PupilKeyring, pairs: Iterable[tuple[UUID, UUID]]) -> dict[UUID, DataKey | DataKeyDestroyed]:
    """The keys of many pupils ((trust_id, pupil_id) pairs) at once, a few fetches in flight.

    An erased pupil maps to the DataKeyDestroyed raised for them; any other DataKeyError raises
    (fail closed)."""
    wanted = {pupil_id: trust_id for trust_id, pupil_id in pairs}
    gate = asyncio.Semaphore(KEY_FETCH_CONCURRENCY)

    async def one(pupil_id: UUID, trust_id: UUID) -> DataKey | DataKeyDestroyed:
        async with gate:
            try:
                return await keyring.key_for(trust_id, pupil_id)
            except DataKeyDestroyed as erased:
                return erased

    found = await asyncio.gather(*(one(p, t) for p, t in wanted.items()))
    return dict(zip(wanted, found, strict=True))
