"""Issue 6 part 1 on the real stack: assessment and planning events become read models, the
intervention report is rendered (HTML in Chromium, PDF through Chromium), rebuilding from the
topics' history gives the live read models back, and the trust dashboard is DfE-suppressed."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy import text as sql

from services.reporting.readmodels import rebuild
from services.reporting.readmodels.browser import run_chromium
from services.reporting.readmodels.tables import LIVE
from shared.auth import Role
from shared.tenancy import POLICY
from tests.integration.assessment.helpers import class_of
from tests.integration.kernel.helpers import eventually
from tests.integration.planning.test_planning_flow import assess, plan_body

BORN = date(2016, 5, 1)


async def _suggestion(s, pupil, assessment_id):
    async def ready():
        r = await s.planning.get(f"/pupils/{pupil}/suggestion", headers=s.staff(Role.practitioner))
        return r.json() if r.status_code == 200 and assessment_id in [str(a) for a in r.json()["based_on"]] else None
    return await eventually(ready)


async def _plan(s, pupil, assessment_id, sessions: int, start: date) -> str:
    staff = s.staff(Role.practitioner)
    suggestion = await _suggestion(s, pupil, assessment_id)
    plan_id = (await s.planning.post("/plans", json=plan_body(pupil, suggestion), headers=staff)).json()["plan_id"]
    issued = await s.planning.post(f"/plans/{plan_id}/issue", json={"practitioner_id": "practitioner-7"}, headers=staff)
    assert issued.status_code == 200, issued.text
    for n in range(sessions):
        logged = await s.planning.post(f"/plans/{plan_id}/sessions", headers=staff, json={
            "held_on": str(start + timedelta(days=n)), "minutes": 30, "activities_done": ["Sand tray play side by side"]})
        assert logged.status_code == 201, logged.text
    return plan_id


async def _history(s):
    """Pupil 0: three assessments (the report's 36/44/56 %), two plans, 29 sessions. Pupil 1: none."""
    _, (pupil, other) = await class_of(s.assessment, s.tenant, 2, born=BORN)
    staff = s.staff(Role.practitioner)
    first = await assess(s.planning_flow, pupil, 1)
    plan1 = await _plan(s, pupil, first, 15, date.today() - timedelta(days=60))
    second = await assess(s.planning_flow, pupil, 2)
    await _suggestion(s, pupil, second)
    assert (await s.planning.post(f"/plans/{plan1}/review", headers=staff)).status_code == 200
    assert (await s.planning.post(f"/plans/{plan1}/close", headers=staff)).status_code == 200
    plan2 = await _plan(s, pupil, second, 14, date.today() - timedelta(days=30))
    third = await assess(s.planning_flow, pupil, 3)
    await _suggestion(s, pupil, third)
    assert (await s.planning.post(f"/plans/{plan2}/review", headers=staff)).status_code == 200

    async def caught_up():
        r = await s.reporting.get(f"/pupils/{pupil}/profile", headers=s.staff())
        if r.status_code != 200:
            return None
        body = r.json()
        plans = body["plans"]
        done = (len(body["progress"].get("being", [])) == 3 and len(plans) == 2
                and sum(p["sessions"] for p in plans) == 29 and all(p["reviews"] for p in plans)
                and plans[0]["status"] == "closed")
        return body if done else None
    profile = await eventually(caught_up, timeout=60)
    return pupil, other, profile


class _Flow:
    """What tests.integration.planning's `assess` expects of its first argument."""

    def __init__(self, s):
        self.assessment, self.tenant = s.assessment, s.tenant


async def _rows(engine, trust_id):
    snapshot = {}
    async with engine.connect() as conn:
        for table in LIVE.all():
            rows = (await conn.execute(select(table).where(table.c.trust_id == trust_id))).all()
            snapshot[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return snapshot


async def test_report_profile_dashboards_and_rebuild(services, chromium, tmp_path):
    s = services
    s.planning_flow = _Flow(s)
    pupil, other, profile = await _history(s)

    # The profile and progress read model.
    assert profile["working_at_strand"] == "being"
    assert [round(p["strand_percent"]) for p in profile["progress"]["being"]] == [36, 44, 56]
    assert profile["progress"]["being"][0]["baseline"] is True
    assert [(p["sessions"], p["minutes"]) for p in profile["plans"]] == [(15, 450), (14, 420)]

    # Personal data of the pupil, from the assessment service: none of it may reach the report.
    record = (await s.assessment.get(f"/pupils/{pupil}", headers=s.staff())).json()
    personal = [record["legal_surname"], record["legal_forename"], record["upn"], BORN.isoformat(),
                BORN.strftime("%d/%m/%Y"), BORN.strftime("%d/%m/%y")]
    assert all(personal)

    # HTML, as served.
    r = await s.reporting.get(f"/pupils/{pupil}/intervention-report", headers=s.staff())
    assert r.status_code == 200, r.text
    html = r.text
    assert r.headers["content-type"].startswith("text/html")
    for expected in ["Male, Year 4", "working at the <strong>Being</strong> stage", "Being Safe 51%",
                     "Being Special 29%", "Having Needs Met 29%", "first assessment was <strong>36%</strong>",
                     "44%", "56%", "29 sessions", "14.5 hrs", "threshold of 64%", "3. Is willing to work with a partner",
                     "44. Signals when things are wrong", "<svg"]:
        assert expected in html, expected
    assert not any(p in html for p in personal)

    # The HTML in the browser: the DOM after rendering, and a screenshot that is not blank.
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    dom = (await run_chromium(page.as_uri(), "--dump-dom", "--virtual-time-budget=2000")).decode()
    assert "36%" in dom and "Being Safe 51%" in dom and dom.count("<svg") >= 6
    assert not any(p in dom for p in personal)
    shot = tmp_path / "report.png"
    await run_chromium(page.as_uri(), f"--screenshot={shot}", "--window-size=1000,2400", "--hide-scrollbars")
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 40_000
    # For a human to look at; a test's small file, written while no request is in flight.
    Path(tempfile.gettempdir(), "flourish-intervention-report.png").write_bytes(png)  # noqa: ASYNC240

    # PDF, through Chromium, read back with pdftotext.
    r = await s.reporting.get(f"/pupils/{pupil}/intervention-report", params={"format": "pdf"}, headers=s.staff())
    assert r.status_code == 200 and r.content.startswith(b"%PDF"), r.text[:300]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(r.content)
    text = subprocess.run(  # noqa: ASYNC221 - a test: no request is in flight while pdftotext reads the file
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "36%" in text and "Being Safe 51%" in text and "Male, Year 4" in text and "56%" in text
    assert not any(p in text for p in personal)

    # No assessment: a clear refusal; out of scope and the wrong role: refused.
    r = await s.reporting.get(f"/pupils/{other}/intervention-report", headers=s.staff())
    assert r.status_code == 409 and "no completed assessment" in r.json()["detail"]
    r = await s.reporting.get(f"/pupils/{uuid.uuid4()}/intervention-report", headers=s.staff())
    assert r.status_code == 404
    r = await s.reporting.get(f"/pupils/{pupil}/intervention-report", headers=s.staff(academies=[uuid.uuid4()]))
    assert r.status_code == 403
    r = await s.reporting.get(f"/pupils/{pupil}/intervention-report", headers=s.staff(Role.trust_admin))
    assert r.status_code == 403
    as_dpo = await s.reporting.get(f"/pupils/{pupil}/intervention-report", headers=s.staff(Role.dpo))
    assert as_dpo.status_code == 200 and "36%" in as_dpo.text and not any(p in as_dpo.text for p in personal)

    # Dashboards: exact inside the academy, suppressed outside it.
    academy = (await s.reporting.get(f"/academies/{s.tenant.academy_id}/dashboard", headers=s.staff())).json()
    assert academy["children"] == 2 and academy["working_at"] == {"being": 1}
    # A Year 4 child working at Being is not at the strand expected for their age.
    assert academy["working_at_age_expected_share"] == 0.0
    assert academy["progress_from_baseline"]["children_reassessed"] == 1
    assert 19 < academy["progress_from_baseline"]["mean_change_points"] < 21
    trust = (await s.reporting.get("/trust/dashboard", headers=s.staff(Role.trust_admin))).json()
    assert trust["academies"][0]["working_at"] == {"being": "c"} and trust["total"] == "c"
    assert (await s.reporting.get("/trust/dashboard", headers=s.staff(Role.senco))).status_code == 403

    # Rebuild from history while the service runs: the same read models, even where the live
    # ones were damaged.
    engine = s.reporting_app.state.runtime.engine
    live = await _rows(engine, s.tenant.trust_id)
    assert sum(len(rows) for rows in live.values()) > 100
    async with engine.begin() as conn:
        await conn.execute(LIVE.sessions.delete().where(LIVE.sessions.c.trust_id == s.tenant.trust_id))
    # The events on Kafka are sealed: the rebuild opens them with reporting's keyring (its data keys).
    result = await rebuild(s.settings, keyring=s.reporting_app.state.runtime.sealing.keyring)
    assert result.applied >= sum(len(rows) for rows in live.values()) - len(live["rm_plan_pupils"])
    assert await _rows(engine, s.tenant.trust_id) == live
    # The swapped-in tables are under the tenant policy as the migrated ones were (LIKE copies none).
    async with engine.connect() as conn:
        guarded = {row.relname: (row.relrowsecurity, row.relforcerowsecurity, row.policies) for row in await conn.execute(
            sql("""SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                           array(SELECT p.polname FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'reporting' AND c.relkind = 'r' AND c.relname LIKE 'rm\\_%'"""))}
    assert guarded == {table.name: (True, True, [POLICY]) for table in LIVE.all()}

    # The live consumer carries on into the swapped-in tables.
    plan2 = profile["plans"][1]["plan_id"]
    logged = await s.planning.post(f"/plans/{plan2}/sessions", headers=s.staff(Role.practitioner),
                                   json={"held_on": str(date.today()), "minutes": 45})
    assert logged.status_code == 201, logged.text

    async def thirty():
        body = (await s.reporting.get(f"/pupils/{pupil}/profile", headers=s.staff())).json()
        return sum(p["sessions"] for p in body["plans"]) == 30
    await eventually(thirty, timeout=30)
