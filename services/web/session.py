"""The signed-in session: one cookie, sealed with AES-256-GCM, holding the user's access token,
its expiry, their name and roles (for showing links only: the APIs decide) and a CSRF secret.
Nothing is kept on the server. A cookie that does not open (tampered, another key, too old a
format) is no session at all."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_COOKIE = "flourish_session"
SECURE_SESSION_COOKIE = "__Host-flourish_session"  # outside development: Secure, path=/, no Domain
SIGNIN_COOKIE = "flourish_signin"
SIGNIN_TTL_S = 600


@dataclass(frozen=True)
class Session:
    access_token: str
    expires_at: float
    subject: str
    name: str
    roles: tuple[str, ...]
    trust_id: str
    academy_ids: tuple[str, ...] = ()
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()

    def has_role(self, *roles: str) -> bool:
        return not set(self.roles).isdisjoint(roles)

    def csrf_valid(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode(), self.csrf.encode())


class Sealer:
    """AES-GCM with a fresh 96-bit nonce per cookie; the cookie's name is the associated data, so a
    sign-in cookie cannot be replayed as a session cookie."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, purpose: str, payload: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, json.dumps(payload, separators=(",", ":")).encode(), purpose.encode())
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        if not value or len(value) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            payload = json.loads(self._aead.decrypt(raw[:12], raw[12:], purpose.encode()))
        except (InvalidTag, ValueError, binascii.Error):
            return None
        return payload if isinstance(payload, dict) else None

    def seal_session(self, session: Session) -> str:
        return self.seal(SESSION_COOKIE, asdict(session))

    def open_session(self, value: str | None) -> Session | None:
        payload = self.open(SESSION_COOKIE, value)
        if payload is None:
            return None
        try:
            return Session(**{**payload, "roles": tuple(payload["roles"]),
                              "academy_ids": tuple(payload["academy_ids"])})
        except (TypeError, KeyError):
            return None
