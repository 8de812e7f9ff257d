"""The read models' HTTP API: a pupil's profile, the dashboards and the intervention report."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from services.reporting.readmodels import erasure, opt_outs, queries
from services.reporting.readmodels.browser import BrowserUnavailable, html_to_pdf
from services.reporting.readmodels.report import Framework, ReportData, effective_levels, render_html
from services.reporting.readmodels.tables import LIVE as T
from shared.api import requires
from shared.audit import PersonalDataReads, ReadCategory, audit_reads
from shared.auth import Principal, Role, ensure_scope
from shared.peers import ServiceTokens
from shared.problems import Conflict, Gone, NotFound, ServiceUnavailable
from shared.service import Runtime, current_runtime, dependencies_of

Run = Annotated[Runtime, Depends(current_runtime)]
PupilReader = Annotated[Principal, Depends(requires(Role.senco, Role.practitioner, Role.dpo))]
AcademyReader = Annotated[Principal, Depends(requires(Role.senco, Role.practitioner, Role.trust_admin, Role.dpo))]
TrustReader = Annotated[Principal, Depends(requires(Role.trust_admin, Role.dpo))]
Reads = Annotated[PersonalDataReads, Depends(audit_reads)]


class _Refused(Exception):
    pass


class Peers:
    """Calls to the assessment service as the trust's `service` principal; frameworks cached. One
    per running reporting service: its bootstrap builds it (with its HTTP client for the
    assessment service, which it closes) and its dependencies hold it as `.peers`."""

    def __init__(self, tokens: ServiceTokens, http: httpx.AsyncClient) -> None:
        self._frameworks: dict[tuple[UUID, str], Framework] = {}
        self._tokens = tokens
        self._http = http

    async def get(self, request: Request, trust_id: UUID, path: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {await self._tokens.for_trust(trust_id)}"}
        try:
            response = await self._http.get(path, headers=headers)
        except httpx.HTTPError:
            raise ServiceUnavailable("the assessment service did not answer", retry_after_s=5) from None
        if response.status_code == 403:
            raise _Refused()
        if response.status_code == 404:
            raise NotFound("the assessment service does not know this pupil or framework")
        if response.status_code != 200:
            raise ServiceUnavailable("the assessment service could not answer", retry_after_s=5)
        return response.json()  # type: ignore[no-any-return]

    async def framework(self, request: Request, trust_id: UUID, version: str) -> Framework:
        key = (trust_id, version)
        if key not in self._frameworks:  # versions are immutable: keep them
            self._frameworks[key] = Framework.from_document(await self.get(request, trust_id, f"/frameworks/{version}"))
        return self._frameworks[key]

    async def gender_and_year(self, request: Request, trust_id: UUID, pupil_id: UUID) -> tuple[str | None, str | None]:
        # The assessment service's GET /pupils/{id}/attributes answers this service's client with
        # the two attributes alone (a `service` token reads no names, dates of birth or UPNs). When
        # it refuses (this client not allowed), the report says so rather than asking for more.
        try:
            record = await self.get(request, trust_id, f"/pupils/{pupil_id}/attributes")
        except _Refused:
            return None, None
        return record.get("gender"), record.get("year_group")


async def peers_of(request: Request) -> Peers:
    """The reporting service's Peers, as its bootstrap built them."""
    return dependencies_of(request).peers  # type: ignore[no-any-return]


def readmodels_router() -> APIRouter:
    router = APIRouter(tags=["read models"])

    async def scoped_pupil(runtime: Runtime, principal: Principal, pupil_id: UUID) -> Any:
        async with runtime.engine.connect() as conn:
            pupil = await queries.pupil_row(conn, pupil_id)
            grave = await erasure.erased(conn, principal.trust_id, pupil_id)
            if grave is not None:
                # Erased (or every category expired): the profile and report are gone for good. Only
                # the trust's own staff of the pupil's academy learn that (another trust: 404).
                ensure_scope(principal, grave.trust_id, grave.academy_id)
                raise Gone("the pupil was erased: reporting holds nothing about them any more")
            if pupil is None or pupil.trust_id != principal.trust_id:
                raise NotFound("no such pupil in the read models")
            ensure_scope(principal, pupil.trust_id, pupil.academy_id)
            await opt_outs.ensure_processing_allowed(conn, pupil_id)
        return pupil

    @router.get("/pupils/{pupil_id}/profile", summary="A pupil's scores over time, working-at strand, plans and sessions")
    async def profile(pupil_id: UUID, principal: PupilReader, runtime: Run, read: Reads) -> dict[str, Any]:
        pupil = await scoped_pupil(runtime, principal, pupil_id)
        async with runtime.engine.begin() as conn:
            found = await queries.pupil_profile(conn, pupil_id)
            await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                              academy_id=pupil.academy_id, data_categories=[ReadCategory.PUPIL_PROFILE])
            return found

    @router.get("/academies/{academy_id}/dashboard",
                summary="Children per working-at strand and progress (exact: stays in the academy)")
    async def academy(academy_id: UUID, principal: AcademyReader, runtime: Run) -> dict[str, Any]:
        ensure_scope(principal, principal.trust_id, academy_id)
        async with runtime.engine.connect() as conn:
            return await queries.academy_dashboard(conn, principal.trust_id, academy_id)

    @router.get("/trust/dashboard", summary="Children per working-at strand by academy, DfE-suppressed")
    async def trust(principal: TrustReader, runtime: Run) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            return await queries.trust_dashboard(conn, principal.trust_id)

    @router.get("/pupils/{pupil_id}/intervention-report", summary="The anonymised intervention report (HTML or PDF)",
                response_class=Response, responses={
                    200: {"description": "The report", "content": {
                        "text/html": {"schema": {"type": "string"}},
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                    409: {"description": "The pupil has no completed assessment yet"},
                    503: {"description": "A peer service or the PDF renderer did not answer"}})
    async def intervention_report(pupil_id: UUID, principal: PupilReader, runtime: Run, request: Request, read: Reads,
                                  peers: Annotated[Peers, Depends(peers_of)],
                                  format: Annotated[Literal["html", "pdf"], Query()] = "html") -> Response:
        pupil = await scoped_pupil(runtime, principal, pupil_id)
        if pupil.latest_assessment_id is None:
            raise Conflict("the pupil has no completed assessment yet: there is nothing to report")
        html = await build_report(peers, request, runtime, pupil)
        async with runtime.engine.begin() as conn:  # the report is made: its read is recorded before it is sent
            await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                              academy_id=pupil.academy_id, data_categories=[ReadCategory.INTERVENTION_REPORT])
        if format == "html":
            return HTMLResponse(html, headers={"Cache-Control": "no-store"})
        try:
            pdf = await html_to_pdf(html)
        except BrowserUnavailable as error:
            raise ServiceUnavailable(f"the PDF could not be made: {error}", retry_after_s=30) from None
        return Response(pdf, media_type="application/pdf", headers={
            "Cache-Control": "no-store", "Content-Disposition": 'inline; filename="intervention-report.pdf"'})

    return router


async def build_report(peers: Peers, request: Request, runtime: Runtime, pupil: Any) -> str:
    s, o = T.strand_scores.c, T.observations.c
    async with runtime.engine.connect() as conn:
        scores = (await conn.execute(select(T.strand_scores).where(s.pupil_id == pupil.pupil_id)
                                     .order_by(s.scored_at, s.strand))).all()
        observations = (await conn.execute(select(T.observations).where(o.pupil_id == pupil.pupil_id))).all()
        plans = await queries.plans_of(conn, pupil.pupil_id)
    framework = await peers.framework(request, pupil.trust_id, pupil.framework_version)
    gender, year = await peers.gender_and_year(request, pupil.trust_id, pupil.pupil_id)
    return render_html(ReportData(gender, year, framework, list(scores), plans, effective_levels(list(observations))))
