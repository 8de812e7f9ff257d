"""Standard Webhooks signatures (https://www.standardwebhooks.com): the receiver gets the secret
as "whsec_" + base64(secret) once, and checks "v1," + base64(HMAC-SHA256(secret, id.timestamp.body)).
While a secret is being rotated, every secret still in force signs: the `webhook-signature` header
holds one "v1,<signature>" per secret, separated by spaces, newest first, so a receiver holding
either secret verifies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_BYTES = 32
PREFIX = "whsec_"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def secret_text(secret: bytes) -> str:
    """How the receiver is given the secret (once, at registration)."""
    return PREFIX + base64.b64encode(secret).decode()


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


def headers(secret: bytes | Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signed headers; `secret` is one secret or those in force (newest first)."""
    keys = [secret] if isinstance(secret, bytes) else list(secret)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(key, webhook_id, timestamp, body) for key in keys),
    }
