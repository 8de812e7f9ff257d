"""The Ed25519 key that signs checkpoints, and the public keys a verifier trusts.

The signing key comes from settings (PEM text or a file). Without one, a development key is made
once (.flourish/audit/, shared by every local process) with an atomic create-if-absent, so several
processes starting together agree on one key. The public half is what GET /audit/public-key
publishes and what `flourish audit verify --public-key` takes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.reporting.audit.domain.chain import Checkpoint, checkpoint_statement, key_id_of
from services.reporting.audit.settings import AuditSettings
from shared.localsecrets import dev_secret

log = logging.getLogger(__name__)


class SigningKeyUnavailable(Exception):
    """No usable checkpoint key (a missing file, a key that is not Ed25519)."""


@dataclass(frozen=True)
class CheckpointSigner:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, trust_id: UUID, seq: int, entry_hash: str, signed_at: datetime) -> Checkpoint:
        statement = checkpoint_statement(trust_id, seq, entry_hash, signed_at, self.key_id)
        signature = base64.b64encode(self.private_key.sign(statement.encode())).decode()
        return Checkpoint(trust_id=trust_id, seq=seq, entry_hash=entry_hash, signed_at=signed_at,
                          key_id=self.key_id, signature=signature)

    def published(self) -> dict[str, Any]:
        """The public key as GET /audit/public-key serves it: PEM and JWK, with its key id."""
        return public_key_document(self.public_key)


def public_key_document(public_key: Ed25519PublicKey) -> dict[str, Any]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = key_id_of(public_key)
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {
        "key_id": key_id,
        "algorithm": "Ed25519",
        "pem": pem,
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
                "kid": key_id, "alg": "EdDSA", "use": "sig"},
    }


_signers: dict[str, CheckpointSigner] = {}


def load_signer(settings: AuditSettings) -> CheckpointSigner:
    """The configured signing key (cached per source), or the development key."""
    if settings.signing_key is not None:
        pem = settings.signing_key.get_secret_value().encode()
        cache_key = "pem:" + hashlib.sha256(pem).hexdigest()
        if cache_key not in _signers:
            _signers[cache_key] = CheckpointSigner(_private_key(pem, "FLOURISH_AUDIT_SIGNING_KEY"))
        return _signers[cache_key]
    path = settings.signing_key_path or settings.dev_key_path
    cache_key = f"path:{path.resolve()}"
    if cache_key not in _signers:
        if settings.signing_key_path is None and not path.exists():
            log.warning("no checkpoint signing key configured: using a development key under the state directory")
            _create_dev_key(path)
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise SigningKeyUnavailable(f"cannot read the checkpoint signing key file {path}: {error.strerror}") from None
        _signers[cache_key] = CheckpointSigner(_private_key(pem, str(path)))
    return _signers[cache_key]


def configured_public_key(settings: AuditSettings) -> Ed25519PublicKey | None:
    """The public half of the configured key, without ever creating one (for the CLI)."""
    if settings.signing_key is None and not (settings.signing_key_path or settings.dev_key_path).exists():
        return None
    return load_signer(settings).public_key


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from PEM, a JWK, or GET /audit/public-key's document."""
    stripped = text.strip()
    if stripped.startswith("{"):
        document = json.loads(stripped)
        jwk = document.get("jwk", document)
        if "pem" in document and "jwk" not in document:
            return load_public_key(document["pem"])
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("the JWK is not an Ed25519 key")
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    key = serialization.load_pem_public_key(stripped.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the PEM key is not an Ed25519 public key")
    return key


def _private_key(pem: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyUnavailable(f"{where} is not a PEM private key") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyUnavailable(f"{where} is not an Ed25519 key")
    return key


def _create_dev_key(path: Path) -> None:
    dev_secret(path, lambda: Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
