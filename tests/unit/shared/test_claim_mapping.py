"""The provider's claims and groups become Flourish roles, trust and academies only as configured:
an unknown group grants nothing, no mapping reaches `service`, and malformed tenancy is refused."""

from __future__ import annotations

from uuid import uuid4

import pytest
from pydantic import ValidationError

from shared.auth import Role, Unauthenticated, principal_from_claims
from shared.settings import ClaimMapping, Settings

TRUST = uuid4()
ACADEMY = uuid4()

ENTRA_LIKE = ClaimMapping(
    roles_claim="groups",
    groups_to_roles={"g-senco": ["senco", "practitioner"], "g-teachers": ["practitioner"], "g-dpo": ["dpo"]},
    trust_claim="ext.trust",
    academies_claim="ext.academy",
)


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "staff-1", **extra}


def test_default_mapping_reads_flourish_claims() -> None:
    principal = principal_from_claims(claims(roles=["senco"], trust_id=str(TRUST), academy_ids=[str(ACADEMY)]))
    assert principal.roles == {Role.senco}
    assert principal.trust_id == TRUST and principal.academy_ids == {ACADEMY}


def test_groups_map_to_roles_and_nested_claims_are_read() -> None:
    principal = principal_from_claims(
        claims(groups=["g-senco", "staff-canteen"], ext={"trust": str(TRUST), "academy": [str(ACADEMY)]}),
        mapping=ENTRA_LIKE,
    )
    assert principal.roles == {Role.senco, Role.practitioner}
    assert principal.academy_ids == {ACADEMY}


def test_unknown_group_grants_no_role() -> None:
    principal = principal_from_claims(claims(groups=["staff-canteen", "admin", "dpo"], ext={"trust": str(TRUST)}),
                                      mapping=ENTRA_LIKE)
    # Group names that happen to be Flourish role names grant nothing either: only the map does.
    assert principal.roles == frozenset()
    assert not principal.trust_wide


def test_roles_claim_is_not_read_when_groups_are_mapped() -> None:
    principal = principal_from_claims(
        claims(groups=["g-teachers"], roles=["dpo", "trust_admin"], ext={"trust": str(TRUST)}), mapping=ENTRA_LIKE)
    assert principal.roles == {Role.practitioner}


def test_no_mapping_can_grant_service_or_an_unknown_role() -> None:
    for role in ("service", "superuser"):
        with pytest.raises(ValidationError):
            ClaimMapping(groups_to_roles={"g": [role]})
    with pytest.raises(ValidationError):
        Settings(auth_claims={"roles_claim": "groups", "groups_to_roles": {"g": ["service"]}})


def test_mapping_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOURISH_AUTH_CLAIMS", '{"roles_claim": "groups", "groups_to_roles": {"g-dpo": ["dpo"]}}')
    mapping = Settings().auth_claims
    assert mapping.roles_claim == "groups" and mapping.groups_to_roles == {"g-dpo": ["dpo"]}


def test_missing_or_malformed_tenancy_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        principal_from_claims(claims(groups=["g-dpo"]), mapping=ENTRA_LIKE)  # no trust claim
    with pytest.raises(Unauthenticated):
        principal_from_claims(claims(groups=["g-dpo"], ext={"trust": "not-a-uuid"}), mapping=ENTRA_LIKE)
    with pytest.raises(Unauthenticated):
        principal_from_claims(claims(groups="g-dpo", ext={"trust": str(TRUST)}), mapping=ENTRA_LIKE)


def test_a_service_role_claim_still_needs_a_known_client() -> None:
    with pytest.raises(Unauthenticated):
        principal_from_claims(claims(roles=["service"], trust_id=str(TRUST)), {})
