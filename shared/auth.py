"""Who is calling and what they may touch: signed bearer tokens checked against a JWKS.

Over 400 lines on purpose: roles and scope, the JWKS sources, the verifier and the local dev
issuer are one trust decision, read together when it is reviewed; the dev issuer sits at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.localsecrets import publish_once, replace_atomically
from shared.problems import Forbidden, ServiceUnavailable, Unauthenticated
from shared.settings import MAPPABLE_ROLES, ClaimMapping, Settings
from shared.telemetry import security_refusals

__all__ = [
    "TRUST_ROLES",
    "Auth",
    "DevIssuer",
    "Forbidden",
    "Principal",
    "Role",
    "TokenVerifier",
    "Unauthenticated",
    "ensure_scope",
]

logger = logging.getLogger(__name__)

# Asymmetric only: a symmetric ("oct"/HS256) key in a JWKS would let anyone holding the
# verification key mint tokens, so such keys are ignored.
ACCEPTED_ALGORITHMS: frozenset[str] = frozenset({"EdDSA", "RS256"})
# Tolerated clock difference between the token issuer and this service.
CLOCK_SKEW = timedelta(seconds=30)
# The kind a `service` token without a known client is counted under (flourish_security_refusals_total).
UNKNOWN_SERVICE_CLIENT = "unknown_service_client"


class Role(StrEnum):
    practitioner = "practitioner"
    # SENCo, designated safeguarding lead, head: the academy's senior roles.
    senco = "senco"
    # The trust's central team.
    trust_admin = "trust_admin"
    auditor = "auditor"
    # Data-protection officer.
    dpo = "dpo"
    # Another Flourish service calling on its own behalf.
    service = "service"
    # Platform operator. Grants no access to pupils' data by itself: scope still applies.
    admin = "admin"


_ROLE_NAMES: frozenset[str] = frozenset(role.value for role in Role)

# Roles held at trust level: they reach every academy of the principal's own trust.
# A Flourish service acts for the whole trust its token names, never beyond it.
TRUST_ROLES: frozenset[Role] = frozenset({Role.trust_admin, Role.dpo, Role.auditor, Role.service})


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a pseudonymous staff (or service) id, roles, and tenancy scope."""

    subject: str
    roles: frozenset[Role]
    trust_id: UUID
    academy_ids: frozenset[UUID] = frozenset()
    # The Flourish service a `service` token was issued to (its identity-provider client, mapped
    # through FLOURISH_SERVICE_CLIENTS); None for people.
    client: str | None = None
    trust_wide: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trust_wide", bool(self.roles & TRUST_ROLES))

    def acting_as(self, accepted: Iterable[Role]) -> Principal:
        """The principal as a route that accepts only `accepted` sees them: trust-wide only if one
        of their trust roles is among those. Staff holding an academy role and an unrelated trust
        role (practitioner + auditor) stay inside their academies on a practitioner's route. Their
        roles are kept (a route may still ask which of its roles they hold)."""
        trust_wide = bool(self.roles & frozenset(accepted) & TRUST_ROLES)
        if trust_wide == self.trust_wide:
            return self  # the usual case, and no copy on the hot read paths
        narrowed = replace(self)
        object.__setattr__(narrowed, "trust_wide", trust_wide)
        return narrowed

    def has_role(self, *roles: Role) -> bool:
        """True when the principal holds at least one of `roles`."""
        return not self.roles.isdisjoint(roles)

    def can_access(self, trust_id: UUID, academy_id: UUID | None = None) -> bool:
        """Whether data owned by `trust_id` (and `academy_id`, if it belongs to one) is in scope.

        Pass the trust and academy the data is recorded under, not ids taken from the request:
        a trust-wide role covers any academy only because the data says it is in this trust.
        `academy_id=None` means trust-level data, which only trust-wide principals may reach.
        """
        if trust_id != self.trust_id:
            return False  # Trusts are separate data controllers: no role crosses between them.
        if self.trust_wide:
            return True
        return academy_id is not None and academy_id in self.academy_ids


def ensure_scope(principal: Principal, trust_id: UUID, academy_id: UUID | None = None) -> None:
    """Raise Forbidden (403) unless the data lies within the principal's trust/academy scope."""
    if not principal.can_access(trust_id, academy_id):
        raise Forbidden("this record is outside your trust or academies")


# --- Verifying tokens ---------------------------------------------------------------------------


class _JwksSource:
    """A set of signing keys by kid, re-read when a token names a kid it does not know."""

    def __init__(self) -> None:
        self._keys: dict[str, jwt.PyJWK] = {}
        self._lock = threading.Lock()
        # Counts the changes of the key set: a cache of verified tokens drops what it holds when
        # this moves (shared/verified_tokens.py).
        self.generation = 0

    def _set(self, keys: dict[str, jwt.PyJWK]) -> None:
        if _fingerprint(keys) != _fingerprint(self._keys):
            self.generation += 1
        self._keys = keys

    def key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            if kid not in self._keys or self._stale():
                self._refresh()
            return self._keys.get(kid)

    def current(self, kid: str) -> bool:
        """Whether `kid` is among the keys and they need no re-reading: no I/O beyond a stat."""
        return kid in self._keys and not self._stale()

    def _stale(self) -> bool:
        return False

    def _refresh(self) -> None:
        raise NotImplementedError

    def _load(self, document: Any) -> None:
        self._set(parse_jwks(document))


class _JwksFile(_JwksSource):
    """The dev issuer's jwks.json, re-read when it changes (it may appear after we start)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._seen: tuple[int, int] | None = None

    def _stale(self) -> bool:
        # The file changed (a rotation): re-read it before trusting any kid, a known one too.
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._seen is not None
        return (stat.st_mtime_ns, stat.st_size) != self._seen

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._set({})
            self._seen = None
            return
        if (stat.st_mtime_ns, stat.st_size) == self._seen:
            return
        try:
            self._load(json.loads(self.path.read_text()))
        except (OSError, ValueError) as exc:
            # A hand-edited or truncated file: no keys, so tokens get 401s rather than a crash.
            logger.warning("could not read the JWKS file", extra={"error_type": type(exc).__name__})
            self._set({})
        self._seen = (stat.st_mtime_ns, stat.st_size)


class _JwksUrl(_JwksSource):
    """An OIDC provider's JWKS endpoint.

    Refetched when an unknown kid appears (the provider rotated keys), but at most once per
    `min_refetch_interval_s`, so tokens with made-up kids cannot make us hammer the provider;
    and after `max_age_s`, so keys the provider withdrew stop being trusted.
    """

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        min_refetch_interval_s: float,
        max_age_s: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self.url = url
        self._client = client
        self._min_interval = min_refetch_interval_s
        self._max_age = max_age_s
        self._clock = clock
        self._fetched_at: float | None = None

    def _stale(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at > self._max_age

    def _refresh(self) -> None:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._min_interval:
            self._fetched_at = now
            self._fetch()
        if not self._keys:
            # No key to check any token with: our outage, not the caller's fault.
            raise ServiceUnavailable(
                "the token issuer's keys are unavailable", retry_after_s=int(self._min_interval)
            )

    def _fetch(self) -> None:
        """Replace the keys with the provider's current ones; on failure keep the last good set."""
        try:
            response = self._client.get(self.url, timeout=5.0)
            response.raise_for_status()
            self._load(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning(
                "could not fetch the token issuer's keys", extra={"error_type": type(exc).__name__}
            )


def _fingerprint(keys: Mapping[str, jwt.PyJWK]) -> frozenset[tuple[str, str]]:
    return frozenset((kid, json.dumps(getattr(key, "_jwk_data", None), sort_keys=True)) for kid, key in keys.items())


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """A JWKS document's usable signing keys by kid; keys we cannot or must not use are skipped."""
    keys: dict[str, jwt.PyJWK] = {}
    entries = document.get("keys", []) if isinstance(document, dict) else []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not entry.get("kid"):
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ACCEPTED_ALGORITHMS:
            keys[entry["kid"]] = key
    return keys


class TokenVerifier:
    """Turns a bearer token into a Principal, or raises Unauthenticated saying why not.

    Keys come from `settings.jwks_url` when set (a real identity provider), else from
    `settings.jwks_path` (the local dev issuer).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: httpx.Client | None = None,
        min_refetch_interval_s: float = 30.0,
        max_key_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = settings.token_issuer
        self.audience = settings.token_audience
        self.service_clients = settings.known_service_clients()
        self.claims = settings.auth_claims
        self._keys: _JwksSource
        if settings.jwks_url:
            client = http_client or httpx.Client()
            self._keys = _JwksUrl(
                settings.jwks_url, client, min_refetch_interval_s, max_key_age_s, clock
            )
        else:
            # Never None once Settings is validated: it defaults to the dev issuer's, beside the state dir.
            assert settings.jwks_path is not None
            self._keys = _JwksFile(settings.jwks_path)

    def verify(self, token: str) -> Principal:
        key = self._signing_key(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                # Only the algorithm of the key the token names: a token cannot pick its own.
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the token signature is not valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("the token is not meant for this audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the token comes from an unexpected issuer") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is not valid") from exc
        return principal_from_claims(claims, self.service_clients, self.claims)

    @property
    def keys_generation(self) -> int:
        """Moves whenever the set of signing keys changes."""
        return self._keys.generation

    def key_current(self, kid: str) -> bool:
        """`kid` is a signing key now, and the keys need no re-reading (a cached verification of a
        token signed with it still stands); False sends the caller to `verify` (which may fetch)."""
        return self._keys.current(kid)

    def _signing_key(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is malformed") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no signing key (kid)")
        key = self._keys.key(kid)
        if key is None:
            raise Unauthenticated("the token was signed with an unknown key")
        return key


def principal_from_claims(
    claims: dict[str, Any],
    service_clients: Mapping[str, str] | None = None,
    mapping: ClaimMapping | None = None,
) -> Principal:
    """Build a Principal from verified claims; malformed tenancy claims reject the token.

    `mapping` (settings.auth_claims) says which claims hold the roles or groups, the trust and the
    academies, and maps groups to roles. Unknown role names and unmapped groups are ignored: an
    identity provider carries roles and groups for other applications too.
    A `service` token must name the client it was issued to (`client_id`, RFC 9068; else `azp`),
    one of `service_clients` (identity-provider client id -> service name): which service calls
    is part of what the token proves, not something the caller says.
    """
    mapping = mapping or _DEFAULT_MAPPING
    subject = claims.get("sub")
    raw_roles = _claim(claims, mapping.roles_claim, [])
    raw_academies = _claim(claims, mapping.academies_claim, [])
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the token has no subject")
    if not isinstance(raw_roles, list) or not isinstance(raw_academies, list):
        raise Unauthenticated("the token's roles or academy_ids are not lists")
    try:
        trust_id = UUID(str(_claim(claims, mapping.trust_claim, None) or ""))
        academy_ids = frozenset(UUID(str(academy)) for academy in raw_academies)
    except ValueError as exc:
        raise Unauthenticated("the token's trust_id or academy_ids are not valid UUIDs") from exc
    if mapping.groups_to_roles:
        # Groups the provider names: only the mapped ones grant anything, and never `service`.
        raw_roles = [role for group in raw_roles if isinstance(group, str)
                     for role in mapping.groups_to_roles.get(group, ()) if role in MAPPABLE_ROLES]
    roles = frozenset(
        Role(role) for role in raw_roles if isinstance(role, str) and role in _ROLE_NAMES
    )
    client = None
    if Role.service in roles:
        client_id = claims.get("client_id", claims.get("azp"))
        client = (service_clients or {}).get(client_id) if isinstance(client_id, str) else None
        if client is None:
            security_refusals.labels(kind=UNKNOWN_SERVICE_CLIENT).inc()
            raise Unauthenticated("a service token must be issued to a known Flourish service client")
    return Principal(subject=subject, roles=roles, trust_id=trust_id, academy_ids=academy_ids, client=client)


_DEFAULT_MAPPING = ClaimMapping()


def _claim(claims: Mapping[str, Any], path: str, default: Any) -> Any:
    """The claim at a dotted `path` ("realm_access.roles"), or `default` when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


# --- FastAPI dependencies -----------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT")


class Auth:
    """FastAPI dependencies over one TokenVerifier.

    auth = Auth(TokenVerifier(settings))

    @router.get("/pupils/{pupil_id}")
    def read(principal: Annotated[Principal, Depends(auth.require(Role.practitioner))]): ...
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def principal(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        """The caller, from `Authorization: Bearer <token>`; 401 without a valid token."""
        if credentials is None:
            raise Unauthenticated.missing_token()
        return self.verifier.verify(credentials.credentials)

    def require(self, *roles: Role) -> Callable[[Principal], Principal]:
        """A dependency returning the caller if they hold any of `roles` (403 otherwise), trust-wide
        only through a trust role among `roles` (Principal.acting_as)."""
        if not roles:
            raise ValueError(
                "name at least one role; use auth.principal for any authenticated caller"
            )
        wanted = ", ".join(sorted(roles))

        # A default rather than Annotated: annotations are strings here and FastAPI resolves them
        # in module globals, where `self` does not exist.
        def principal_with_role(principal: Principal = Depends(self.principal)) -> Principal:
            if not principal.has_role(*roles):
                raise Forbidden(f"this requires one of the roles: {wanted}")
            return principal.acting_as(roles)

        return principal_with_role


# --- The local dev issuer -----------------------------------------------------------------------

_SIGNING_KEY_FILE = "signing-key.pem"
_JWKS_FILE = "jwks.json"


class DevIssuer:
    """Signs tokens for local development and tests, with an Ed25519 key in `state_dir/dev-issuer`.

    Several processes may start at once (services, CLI, tests): the private key is published with
    an atomic create-if-absent, so exactly one key wins and every process loads that one; the JWKS
    is derived from it deterministically, so concurrent rewrites of jwks.json agree.
    """

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.state_dir / "dev-issuer"
        self.issuer = settings.token_issuer
        self.audience = settings.token_audience
        self._private_key = self._load_or_create_key()
        self.public_jwk = public_jwk(self._private_key)
        self.kid: str = self.public_jwk["kid"]
        self._publish_jwks()

    @property
    def jwks_path(self) -> Path:
        return self.directory / _JWKS_FILE

    def issue(
        self,
        subject: str,
        roles: Iterable[Role | str],
        trust_id: UUID,
        academy_ids: Iterable[UUID] = (),
        ttl: timedelta = timedelta(hours=1),
        client: str | None = None,
    ) -> str:
        """`client`: the client the token is issued to (its `client_id`); a `service` token needs
        one of the services' names, as a service's own client gets from the identity provider."""
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "roles": [
                Role(role).value for role in roles
            ],  # ValueError for a role that does not exist
            "trust_id": str(trust_id),
            "academy_ids": [str(academy_id) for academy_id in academy_ids],
        }
        if client is not None:
            claims["client_id"] = client
        return jwt.encode(claims, self._private_key, algorithm="EdDSA", headers={"kid": self.kid})

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Sign `claims` as they are (the dev OpenID provider's id_token): nothing added."""
        return jwt.encode(dict(claims), self._private_key, algorithm="EdDSA", headers={"kid": self.kid})

    def _load_or_create_key(self) -> Ed25519PrivateKey:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path = self.directory / _SIGNING_KEY_FILE
        if not key_path.exists():
            candidate = Ed25519PrivateKey.generate()
            pem = candidate.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            publish_once(key_path, pem)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{key_path} is not an Ed25519 private key")
        return key

    def _publish_jwks(self) -> None:
        document = json.dumps({"keys": [self.public_jwk]}, indent=2, sort_keys=True) + "\n"
        if self.jwks_path.exists() and self.jwks_path.read_text() == document:
            return
        _replace_atomically(self.jwks_path, document.encode())


def public_jwk(private_key: Ed25519PrivateKey) -> dict[str, str]:
    """The public half as a JWK, with its RFC 7638 thumbprint as kid (same key, same kid)."""
    x = _b64url(
        private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    )
    thumbprint_input = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64url(hashlib.sha256(thumbprint_input.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _replace_atomically(path: Path, content: bytes) -> None:
    replace_atomically(path, content, mode=0o644)  # Public keys: anyone on the machine may read them.
