"""The ops page: lag, dead letters, outbox backlog, webhook failures, audit status, the queue of
notices to families and what was refused as not coming from whom it must, of every service on
one small HTML page, for trusts that run no Grafana.

It reads the same Prometheus metrics the dashboards and alerts use: its own from this process's
registry, the other services' from their /metrics. Like /metrics it holds no personal data (counts,
consumer names, topics), so it asks for no token; the NetworkPolicy decides who reaches it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.reporting.rendering import render as render_template
from shared.api import requires
from shared.auth import Principal, Role
from shared.service import Runtime, current_runtime

router = APIRouter(tags=["operations"])

PEERS = ("assessment", "planning", "consent")


@dataclass
class ServiceHealth:
    name: str
    reachable: bool
    consumer_lag: dict[str, float] = field(default_factory=dict)
    dead_letters: dict[str, float] = field(default_factory=dict)
    outbox_backlog: float = 0.0
    webhook_failures: float = 0.0
    audit_checkpoint_age_s: float | None = None
    audit_verification_failures: float = 0.0
    audit_unwitnessed_checkpoints: float = 0.0  # signed, queued while the witness is unreachable
    audit_checkpoints_refused: float = 0.0  # chains that do not extend their witnessed checkpoint
    # Notices to families of shares (sharing/notices.py): counts and an age, never who or where.
    notices_queued: float = 0.0
    notices_failing: float = 0.0  # queued, tried and failed (SMTP or consent unreachable): retried
    notices_failed: float = 0.0  # refused for good by the SMTP server: the printable letter is the notice
    notices_oldest_age_s: float = 0.0
    # What was refused as not coming from whom it must, by kind (flourish_security_refusals_total:
    # event_from_wrong_producer, ...): an insider or a client gone wrong, never routine.
    refused: dict[str, float] = field(default_factory=dict)

    @property
    def attention(self) -> list[str]:
        """What an operator should look at, in words."""
        notes = []
        if not self.reachable:
            notes.append("metrics unreachable")
        if any(lag > 1_000 for lag in self.consumer_lag.values()):
            notes.append("consumer lag over 1,000")
        if any(self.dead_letters.values()):
            notes.append("dead letters waiting")
        if self.outbox_backlog > 1_000:
            notes.append("outbox backlog over 1,000")
        if self.webhook_failures:
            notes.append("webhook deliveries failed")
        if self.audit_verification_failures:
            notes.append("audit verification failed")
        if self.audit_unwitnessed_checkpoints:
            notes.append("audit checkpoints waiting for their witness")
        if self.audit_checkpoints_refused:
            notes.append("audit chain does not extend its witness: checkpoints refused")
        if self.notices_failing:
            notes.append("notices to families failing (SMTP?): queued and retried")
        if self.notices_failed:
            notes.append("notices to families refused: print their letters")
        notes.extend(f"refused: {kind.replace('_', ' ')}" for kind, count in sorted(self.refused.items()) if count)
        return notes


def summarise(name: str, exposition: str | None) -> ServiceHealth:
    """One service's figures from its Prometheus text exposition (None: it did not answer)."""
    health = ServiceHealth(name=name, reachable=exposition is not None)
    for family in text_string_to_metric_families(exposition or ""):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == "flourish_consumer_lag":
                consumer = labels.get("consumer", "?")
                health.consumer_lag[consumer] = health.consumer_lag.get(consumer, 0.0) + value
            elif sample.name == "flourish_dead_lettered_total":
                consumer = labels.get("consumer", "?")
                health.dead_letters[consumer] = health.dead_letters.get(consumer, 0.0) + value
            elif sample.name == "flourish_outbox_backlog":
                health.outbox_backlog += value
            elif sample.name == "flourish_webhook_deliveries_total" and labels.get("outcome") == "failed":
                health.webhook_failures += value
            elif sample.name == "flourish_audit_checkpoint_age_seconds":
                health.audit_checkpoint_age_s = max(health.audit_checkpoint_age_s or 0.0, value)
            elif sample.name == "flourish_audit_verification_failures_total":
                health.audit_verification_failures += value
            elif sample.name == "flourish_audit_unwitnessed_checkpoints":
                health.audit_unwitnessed_checkpoints += value
            elif sample.name == "flourish_audit_checkpoints_refused_total":
                health.audit_checkpoints_refused += value
            elif sample.name == "flourish_family_notices":
                # Every replica reports the same (database-wide) figures: the largest, not the sum.
                state = labels.get("state")
                if state in ("queued", "failing", "failed"):
                    attribute = f"notices_{state}"
                    setattr(health, attribute, max(getattr(health, attribute), value))
            elif sample.name == "flourish_security_refusals_total":
                kind = labels.get("kind", "?")
                health.refused[kind] = health.refused.get(kind, 0.0) + value
            elif sample.name == "flourish_family_notice_oldest_age_seconds":
                health.notices_oldest_age_s = max(health.notices_oldest_age_s, value)
    return health


async def gather(runtime: Runtime, http: httpx.AsyncClient | None = None) -> list[ServiceHealth]:
    settings = runtime.settings
    urls = {name: getattr(settings, f"{name}_url") for name in PEERS}
    client = http or httpx.AsyncClient(timeout=2.0)
    try:
        expositions = await asyncio.gather(*(_scrape(client, url) for url in urls.values()))
    finally:
        if http is None:
            await client.aclose()
    own = summarise(runtime.spec.name, generate_latest(REGISTRY).decode())
    return [own, *(summarise(name, text) for name, text in zip(urls, expositions, strict=True))]


async def _scrape(client: httpx.AsyncClient, base_url: str) -> str | None:
    try:
        response = await client.get(f"{base_url}/metrics")
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


@router.get("/ops.json", summary="Lag, dead letters, backlog, webhook failures and audit status of every service")
async def ops_json(runtime: Annotated[Runtime, Depends(current_runtime)]) -> list[dict[str, Any]]:
    return [{**health.__dict__, "attention": health.attention} for health in await gather(runtime)]


@router.get("/ops/summary", summary="The same figures for a signed-in operator (the web's operations page): "
            "the token decides, admin only")
async def ops_summary(runtime: Annotated[Runtime, Depends(current_runtime)],
                      principal: Annotated[Principal, Depends(requires(Role.admin))]) -> list[dict[str, Any]]:
    return await ops_json(runtime)


@router.get("/ops", response_class=HTMLResponse, summary="The ops page (HTML)")
async def ops_page(runtime: Annotated[Runtime, Depends(current_runtime)]) -> HTMLResponse:
    return HTMLResponse(render(await gather(runtime)))


def render(services: list[ServiceHealth]) -> str:
    """The page itself (templates/ops.html): one row per service, what needs attention in words."""
    return render_template("ops.html", services=services)
