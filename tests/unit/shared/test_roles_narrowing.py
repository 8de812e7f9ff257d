"""A principal is trust-wide on a route only through a trust role the route accepts (issue 16 item 6)."""

from __future__ import annotations

import uuid

from shared.auth import Principal, Role

TRUST, A1, A2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def staff(*roles: Role) -> Principal:
    return Principal(subject="s", roles=frozenset(roles), trust_id=TRUST, academy_ids=frozenset({A2}))


def test_an_unrelated_trust_role_does_not_widen_an_academy_route() -> None:
    mixed = staff(Role.practitioner, Role.auditor)
    assert mixed.trust_wide and mixed.can_access(TRUST, A1)  # as the token says
    on_route = mixed.acting_as((Role.practitioner, Role.senco))
    assert not on_route.trust_wide
    assert on_route.can_access(TRUST, A2) and not on_route.can_access(TRUST, A1) and not on_route.can_access(TRUST)
    assert on_route.roles == mixed.roles  # the route may still ask which of its roles they hold


def test_a_trust_role_the_route_accepts_keeps_the_trust() -> None:
    on_route = staff(Role.practitioner, Role.dpo).acting_as((Role.practitioner, Role.dpo))
    assert on_route.trust_wide and on_route.can_access(TRUST, A1)
    assert not on_route.can_access(uuid.uuid4(), A1)  # never another trust
