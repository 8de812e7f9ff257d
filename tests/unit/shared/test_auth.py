"""Bearer tokens: what the dev issuer signs, what the verifier accepts, how scope holds in HTTP."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from shared.auth import Auth, DevIssuer, Principal, Role, TokenVerifier, ensure_scope
from shared.problems import (
    PROBLEM_MEDIA_TYPE,
    Forbidden,
    ServiceUnavailable,
    Unauthenticated,
    install_problem_handlers,
)
from shared.settings import Settings

TRUST = UUID("6f1c2d4e-0000-4000-8000-000000000001")
OTHER_TRUST = UUID("6f1c2d4e-0000-4000-8000-000000000002")
ACADEMY = UUID("a0000000-0000-4000-8000-000000000001")
OTHER_ACADEMY = UUID("a0000000-0000-4000-8000-000000000002")


def settings_in(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir, jwks_path=state_dir / "dev-issuer" / "jwks.json")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_in(tmp_path)


@pytest.fixture
def issuer(settings: Settings) -> DevIssuer:
    return DevIssuer(settings)


@pytest.fixture
def verifier(settings: Settings, issuer: DevIssuer) -> TokenVerifier:
    return TokenVerifier(settings)


def practitioner_token(issuer: DevIssuer, **overrides: object) -> str:
    arguments: dict[str, object] = {
        "subject": "staff-7f3a",
        "roles": [Role.practitioner],
        "trust_id": TRUST,
        "academy_ids": [ACADEMY],
    }
    arguments.update(overrides)
    return issuer.issue(**arguments)  # type: ignore[arg-type]


def sign_with_dev_key(settings: Settings, claims: dict[str, object], kid: str) -> str:
    pem = (settings.state_dir / "dev-issuer" / "signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})  # type: ignore[arg-type]


def valid_claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": "flourish-dev",
        "aud": "flourish",
        "sub": "staff-7f3a",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "roles": ["practitioner"],
        "trust_id": str(TRUST),
        "academy_ids": [str(ACADEMY)],
    }
    claims.update(overrides)
    return claims


# --- The dev issuer -----------------------------------------------------------------------------


def test_dev_issuer_keeps_its_private_key_owner_only_and_publishes_the_public_jwk(
    settings: Settings, issuer: DevIssuer
) -> None:
    key_file = settings.state_dir / "dev-issuer" / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    jwks = json.loads(settings.jwks_path.read_text())
    assert jwks == {"keys": [issuer.public_jwk]}
    assert jwks["keys"][0]["kid"] == issuer.kid
    assert "d" not in jwks["keys"][0]  # the private part never leaves the PEM file


def test_dev_issuer_reuses_the_key_it_created(settings: Settings, issuer: DevIssuer) -> None:
    assert DevIssuer(settings).kid == issuer.kid


def test_dev_issuers_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        kids = set(pool.map(lambda _: DevIssuer(settings_in(tmp_path)).kid, range(16)))
    assert len(kids) == 1
    assert json.loads(settings_in(tmp_path).jwks_path.read_text())["keys"][0]["kid"] in kids


def test_dev_issuer_rejects_roles_that_do_not_exist(issuer: DevIssuer) -> None:
    with pytest.raises(ValueError, match="'headteacher' is not a valid Role"):
        practitioner_token(issuer, roles=["headteacher"])


# --- Verifying tokens ---------------------------------------------------------------------------


def test_a_valid_token_becomes_a_principal(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    principal = verifier.verify(practitioner_token(issuer, academy_ids=[ACADEMY, OTHER_ACADEMY]))
    assert principal == Principal(
        subject="staff-7f3a",
        roles=frozenset({Role.practitioner}),
        trust_id=TRUST,
        academy_ids=frozenset({ACADEMY, OTHER_ACADEMY}),
    )
    assert principal.trust_wide is False


@pytest.mark.parametrize("role", [Role.trust_admin, Role.dpo, Role.auditor])
def test_trust_roles_are_trust_wide(issuer: DevIssuer, verifier: TokenVerifier, role: Role) -> None:
    principal = verifier.verify(practitioner_token(issuer, roles=[role], academy_ids=[]))
    assert principal.trust_wide


def test_an_expired_token_is_rejected(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(practitioner_token(issuer, ttl=timedelta(minutes=-5)))


def test_a_tampered_signature_is_rejected(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    header, payload, signature = practitioner_token(issuer).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(
            ".".join([header, payload, signature[:middle] + flipped + signature[middle + 1 :]])
        )


def test_a_tampered_payload_is_rejected(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    header, _, signature = practitioner_token(issuer).split(".")
    forged = jwt.utils.base64url_encode(
        json.dumps(valid_claims(roles=["admin"]), default=str).encode()
    ).decode()
    with pytest.raises(Unauthenticated):
        verifier.verify(".".join([header, forged, signature]))


def test_a_token_from_another_issuers_key_is_rejected(
    tmp_path: Path, issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    stranger = DevIssuer(settings_in(tmp_path / "elsewhere"))
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(practitioner_token(stranger))


def test_a_foreign_key_claiming_our_kid_is_rejected(
    tmp_path: Path, settings: Settings, issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    stranger_settings = settings_in(tmp_path / "elsewhere")
    DevIssuer(stranger_settings)
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(sign_with_dev_key(stranger_settings, valid_claims(), kid=issuer.kid))


def test_a_symmetric_token_cannot_pass_as_ours(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    # Algorithm confusion: HS256 "signed" with our public key as the shared secret.
    token = jwt.encode(
        valid_claims(), issuer.public_jwk["x"], algorithm="HS256", headers={"kid": issuer.kid}
    )
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def test_a_token_for_another_audience_is_rejected(settings: Settings, issuer: DevIssuer) -> None:
    verifier = TokenVerifier(settings.model_copy(update={"token_audience": "another-app"}))
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.verify(practitioner_token(issuer))


def test_a_token_from_another_issuer_name_is_rejected(
    settings: Settings, issuer: DevIssuer
) -> None:
    verifier = TokenVerifier(settings.model_copy(update={"token_issuer": "https://idp.example"}))
    with pytest.raises(Unauthenticated, match="issuer"):
        verifier.verify(practitioner_token(issuer))


@pytest.mark.parametrize("token", ["", "not-a-token", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"])
def test_malformed_tokens_are_rejected(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        valid_claims(trust_id="trust-one"),
        valid_claims(trust_id=None),
        valid_claims(academy_ids=["not-a-uuid"]),
        valid_claims(academy_ids=str(ACADEMY)),
        valid_claims(roles="practitioner"),
        valid_claims(sub=""),
    ],
)
def test_malformed_tenancy_claims_are_rejected(
    settings: Settings, issuer: DevIssuer, verifier: TokenVerifier, claims: dict[str, object]
) -> None:
    with pytest.raises(Unauthenticated):
        verifier.verify(sign_with_dev_key(settings, claims, kid=issuer.kid))


def test_a_token_missing_a_required_claim_is_rejected(
    settings: Settings, issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    claims = valid_claims()
    del claims["exp"]
    with pytest.raises(Unauthenticated):
        verifier.verify(sign_with_dev_key(settings, claims, kid=issuer.kid))


def test_unknown_roles_from_the_identity_provider_are_ignored(
    settings: Settings, issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    token = sign_with_dev_key(
        settings, valid_claims(roles=["practitioner", "finance", 7]), kid=issuer.kid
    )
    assert verifier.verify(token).roles == frozenset({Role.practitioner})


def test_the_verifier_picks_up_a_dev_issuer_created_after_it_started(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    verifier = TokenVerifier(settings)
    with pytest.raises(Unauthenticated):
        verifier.verify(practitioner_token(DevIssuer(settings_in(tmp_path / "elsewhere"))))
    token = practitioner_token(DevIssuer(settings))
    assert verifier.verify(token).subject == "staff-7f3a"


# --- Keys from an identity provider's JWKS URL ---------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_requests() -> list[httpx.Request]:
    return []


def url_verifier(
    settings: Settings,
    issuer: DevIssuer,
    requests: list[httpx.Request],
    clock: FakeClock,
    status: int = 200,
) -> TokenVerifier:
    def serve_jwks(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, json={"keys": [issuer.public_jwk]})

    client = httpx.Client(transport=httpx.MockTransport(serve_jwks))
    remote = settings.model_copy(update={"jwks_url": "https://idp.example/jwks"})
    return TokenVerifier(
        remote, http_client=client, min_refetch_interval_s=30, max_key_age_s=3600, clock=clock
    )


def test_keys_are_fetched_once_and_cached(
    settings: Settings, issuer: DevIssuer, jwks_requests: list[httpx.Request]
) -> None:
    verifier = url_verifier(settings, issuer, jwks_requests, FakeClock())
    for _ in range(3):
        verifier.verify(practitioner_token(issuer))
    assert [str(request.url) for request in jwks_requests] == ["https://idp.example/jwks"]


def test_unknown_kids_refetch_at_most_once_per_interval(
    tmp_path: Path, settings: Settings, issuer: DevIssuer, jwks_requests: list[httpx.Request]
) -> None:
    clock = FakeClock()
    verifier = url_verifier(settings, issuer, jwks_requests, clock)
    verifier.verify(practitioner_token(issuer))
    stranger = DevIssuer(settings_in(tmp_path / "elsewhere"))
    clock.now += 31
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="unknown key"):
            verifier.verify(practitioner_token(stranger))
    assert len(jwks_requests) == 2


def test_keys_older_than_their_max_age_are_refetched(
    settings: Settings, issuer: DevIssuer, jwks_requests: list[httpx.Request]
) -> None:
    clock = FakeClock()
    verifier = url_verifier(settings, issuer, jwks_requests, clock)
    verifier.verify(practitioner_token(issuer))
    clock.now += 3601
    verifier.verify(practitioner_token(issuer))
    assert len(jwks_requests) == 2


def test_an_unreachable_identity_provider_is_a_503_not_a_401(
    settings: Settings, issuer: DevIssuer, jwks_requests: list[httpx.Request]
) -> None:
    verifier = url_verifier(settings, issuer, jwks_requests, FakeClock(), status=502)
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            verifier.verify(practitioner_token(issuer))


# --- Scope -------------------------------------------------------------------------------------


def test_scope_follows_academies_for_academy_staff() -> None:
    practitioner = Principal("staff-1", frozenset({Role.practitioner}), TRUST, frozenset({ACADEMY}))
    assert practitioner.can_access(TRUST, ACADEMY)
    assert not practitioner.can_access(TRUST, OTHER_ACADEMY)
    assert not practitioner.can_access(TRUST)  # trust-level data
    assert not practitioner.can_access(OTHER_TRUST, ACADEMY)


def test_trust_wide_scope_stops_at_the_trust_boundary() -> None:
    dpo = Principal("staff-2", frozenset({Role.dpo}), TRUST)
    assert dpo.can_access(TRUST, OTHER_ACADEMY)
    assert dpo.can_access(TRUST)
    assert not dpo.can_access(OTHER_TRUST, ACADEMY)
    with pytest.raises(Forbidden):
        ensure_scope(dpo, OTHER_TRUST, ACADEMY)


def test_platform_admin_gets_no_data_scope_from_the_role_alone() -> None:
    operator = Principal("ops-1", frozenset({Role.admin}), TRUST)
    assert not operator.can_access(TRUST, ACADEMY)


def test_has_role_means_any_of() -> None:
    senco = Principal("staff-3", frozenset({Role.senco}), TRUST, frozenset({ACADEMY}))
    assert senco.has_role(Role.practitioner, Role.senco)
    assert not senco.has_role(Role.auditor)


# --- Over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def client(verifier: TokenVerifier) -> Iterator[TestClient]:
    app = FastAPI()
    install_problem_handlers(app)
    auth = Auth(verifier)
    practitioner_or_trust_admin = auth.require(Role.practitioner, Role.trust_admin)

    @app.get("/trusts/{trust_id}/academies/{academy_id}/pupils")
    def list_pupils(
        trust_id: UUID,
        academy_id: UUID,
        principal: Principal = Depends(practitioner_or_trust_admin),
    ) -> dict[str, str]:
        # A real handler takes the trust and academy from the stored record; the path stands in.
        ensure_scope(principal, trust_id, academy_id)
        return {"subject": principal.subject}

    @app.get("/me")
    def who_am_i(principal: Principal = Depends(auth.principal)) -> dict[str, str]:
        return {"subject": principal.subject}

    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_in_scope_request_succeeds(client: TestClient, issuer: DevIssuer) -> None:
    response = client.get(
        f"/trusts/{TRUST}/academies/{ACADEMY}/pupils", headers=bearer(practitioner_token(issuer))
    )
    assert response.status_code == 200
    assert response.json() == {"subject": "staff-7f3a"}


def test_no_token_is_401_problem_with_a_bearer_challenge(client: TestClient) -> None:
    response = client.get(f"/trusts/{TRUST}/academies/{ACADEMY}/pupils")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in response.headers["www-authenticate"]
    body = response.json()
    assert body["status"] == 401
    assert body["type"].endswith("unauthenticated")
    assert body["instance"] == f"/trusts/{TRUST}/academies/{ACADEMY}/pupils"


def test_another_scheme_is_treated_as_no_token(client: TestClient) -> None:
    response = client.get("/me", headers={"Authorization": "Basic c3RhZmY6cGFzc3dvcmQ="})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_invalid_token_is_401_with_invalid_token(client: TestClient, issuer: DevIssuer) -> None:
    response = client.get(
        "/me", headers=bearer(practitioner_token(issuer, ttl=timedelta(minutes=-5)))
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["detail"] == "the token has expired"


def test_any_valid_token_passes_auth_principal(client: TestClient, issuer: DevIssuer) -> None:
    token = practitioner_token(issuer, roles=[Role.auditor], academy_ids=[])
    assert client.get("/me", headers=bearer(token)).status_code == 200


def test_missing_role_is_403(client: TestClient, issuer: DevIssuer) -> None:
    token = practitioner_token(issuer, roles=[Role.auditor])
    response = client.get(f"/trusts/{TRUST}/academies/{ACADEMY}/pupils", headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


def test_another_academy_is_403(client: TestClient, issuer: DevIssuer) -> None:
    response = client.get(
        f"/trusts/{TRUST}/academies/{OTHER_ACADEMY}/pupils",
        headers=bearer(practitioner_token(issuer)),
    )
    assert response.status_code == 403
    assert response.json()["type"].endswith("forbidden")


def test_trust_wide_role_reaches_every_academy_of_its_trust(
    client: TestClient, issuer: DevIssuer
) -> None:
    token = practitioner_token(issuer, roles=[Role.trust_admin], academy_ids=[])
    response = client.get(
        f"/trusts/{TRUST}/academies/{OTHER_ACADEMY}/pupils", headers=bearer(token)
    )
    assert response.status_code == 200


def test_another_trust_is_403_even_for_trust_wide_roles(
    client: TestClient, issuer: DevIssuer
) -> None:
    token = practitioner_token(issuer, roles=[Role.trust_admin], academy_ids=[])
    response = client.get(
        f"/trusts/{OTHER_TRUST}/academies/{uuid4()}/pupils", headers=bearer(token)
    )
    assert response.status_code == 403
