"""Issue 16 item 6, roles mean what they say: staff of academy A2 who also hold a trust role stay
inside A2 on every route that does not itself accept that trust role. For every route of every
service and every trust role: which routes accept the role is asked of the service (a trust-B token
holding only that role: "this requires one of the roles" means not accepted); then A2's staff holding
the academy roles plus that trust role call the route with A1's real ids. Where the route does not
accept the trust role: a refusal or an answer carrying none of A1's data, and nothing of A1's
changed. Where it does: A1's data is theirs to read (the control that the ids were real)."""

from __future__ import annotations

import uuid

import pytest

from shared.auth import TRUST_ROLES
from tests.isolation.conftest import ACADEMY_ROLES, World, fingerprint
from tests.isolation.test_matrix import EXEMPT, NOT_2XX_FOR_A, SERVICES, call, check, request_for, routes_of

ROLE_REFUSED = "requires one of the roles"


@pytest.mark.parametrize("service", SERVICES)
async def test_an_unrelated_trust_role_never_widens_an_academy_role(world: World, service: str) -> None:
    a, platform = world.a, world.platform
    routes = [r for r in routes_of(world, service) if r.key not in EXEMPT]
    engine = platform.apps[service].state.runtime.engine
    refused: list[tuple[str, dict[str, str], object]] = []
    controls, widened = [], 0
    for trust_role in sorted(TRUST_ROLES):
        probe = platform.token([trust_role], uuid.uuid4(), [], f"probe-{trust_role}")
        mixed = platform.token([*ACADEMY_ROLES, trust_role], a.trust_id, [a.other_academy_id], f"a2-staff+{trust_role}")
        for route in routes:
            if ROLE_REFUSED in (await call(world, route, request_for(world, route), probe)).text:
                refused.append((trust_role, mixed, route))
            elif route.method == "GET" and route.key not in NOT_2XX_FOR_A:
                widened += 1  # the route accepts this trust role: A1's data is theirs to read
                response = await call(world, route, request_for(world, route), mixed)
                if not response.is_success:
                    controls.append(f"[{trust_role}] {route.method} {route.path} -> {response.status_code}: "
                                    f"{response.text[:160]}")
    # (Reads by a trust-wide role may rightly record something, so the rows are compared from here.)
    before = await fingerprint(engine, a.academy_id)
    problems = []
    for trust_role, mixed, route in refused:
        request = request_for(world, route)  # type: ignore[arg-type]
        response = await call(world, route, request, mixed)  # type: ignore[arg-type]
        problem = check(route, request, response, a.academy_values)  # type: ignore[arg-type]
        if problem:
            problems.append(f"[A2 {'+'.join(ACADEMY_ROLES)}+{trust_role}] {problem}")
    narrowed = len(refused)
    assert not problems, "\n".join(problems)
    after = await fingerprint(engine, a.academy_id)
    changed = sorted(table for table in before if after.get(table) != before[table])
    assert not changed, f"A2's staff with an unrelated trust role changed A1's rows in {changed}"
    assert narrowed > 0, "no route refused some trust role: the matrix asked nothing"
    assert not controls, "a trust role the route accepts must still reach the trust:\n" + "\n".join(controls)
    assert widened > 0
