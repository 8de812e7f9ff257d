"""Calling the four services' public APIs as the signed-in user.

One httpx AsyncClient per process. Every call carries `Authorization: Bearer <the user's token>`
(the web never mints a token and never widens one); every POST carries an `Idempotency-Key`,
generated when the form was rendered and sent back in a hidden field, so a double submit is
applied once. A problem+json answer becomes an `ApiError` the pages render.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.web.session import Session
from shared.settings import SERVICE_NAMES, Settings


@dataclass
class ApiError(Exception):
    """An API's refusal: its status and problem+json members (title, detail, field errors)."""

    status: int
    title: str
    detail: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    problem: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.title}"

    @property
    def messages(self) -> list[str]:
        """What to show in an error summary: the detail, then each field error's message."""
        shown = [self.detail] if self.detail else [self.title]
        for error in self.errors:
            where = ".".join(str(part) for part in error.get("loc", ())[1:] if part != "body")
            message = str(error.get("msg", ""))
            shown.append(f"{where}: {message}" if where else message)
        return shown

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        body: Any = None
        if "json" in response.headers.get("content-type", ""):
            try:
                body = response.json()
            except ValueError:
                body = None
        if not isinstance(body, dict):
            body = {}
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return cls(status=response.status_code, title=str(body.get("title") or response.reason_phrase),
                   detail=body.get("detail") if isinstance(body.get("detail"), str) else None,
                   errors=[e for e in errors if isinstance(e, dict)], problem=body)


class ServiceUnreachable(ApiError):
    pass


def service_urls(settings: Settings) -> dict[str, str]:
    """Each service's base URL, from the same settings the services use for their peers."""
    return {name: getattr(settings, f"{name}_url").rstrip("/") for name in SERVICE_NAMES}


class Api:
    """`await api.get(session, "assessment", "/pupils/...")` -> the decoded JSON body."""

    def __init__(self, urls: Mapping[str, str], client: httpx.AsyncClient) -> None:
        self.urls = dict(urls)
        self.client = client

    async def request(self, session: Session, method: str, service: str, path: str, *,
                      params: Mapping[str, Any] | None = None, json: Any = None,
                      idempotency_key: str | None = None, headers: Mapping[str, str] | None = None,
                      ) -> httpx.Response:
        """The raw answer when it succeeded (2xx/3xx); ApiError otherwise."""
        if method.upper() == "POST" and not idempotency_key:
            raise ValueError("every POST carries an Idempotency-Key (the form's hidden field)")
        sent = {"Authorization": f"Bearer {session.access_token}", "Accept": "application/json",
                **(headers or {})}
        if idempotency_key:
            sent["Idempotency-Key"] = idempotency_key
        try:
            response = await self.client.request(method, f"{self.urls[service]}{path}", params=params,
                                                 json=json, headers=sent)
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(503, "The service is not available",
                                     f"{service} could not be reached; try again shortly") from exc
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    async def get(self, session: Session, service: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(session, "GET", service, path, **kwargs)).json()

    async def post(self, session: Session, service: str, path: str, *, idempotency_key: str,
                   json: Any = None, **kwargs: Any) -> Any:
        response = await self.request(session, "POST", service, path, json=json,
                                      idempotency_key=idempotency_key, **kwargs)
        return response.json() if response.content else None
