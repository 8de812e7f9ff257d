"""The web service: `uvicorn --factory services.web.app:app`. No database, no Kafka: every page
calls the four services' public APIs as the signed-in user (services/web/api.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.web import signin
from services.web.api import Api, ApiError, service_urls
from services.web.core import CsrfRefused, Page, SignInRequired, Web, render, web_of
from services.web.pages import registered_pages
from services.web.session import Sealer
from services.web.settings import WebSettings, production_problems, session_key
from shared.auth import TokenVerifier
from shared.settings import Settings

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class SecurityHeaders:
    """Every response: a strict CSP, nosniff, no referrer, no framing; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                           or static]
                headers += [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]
                headers.append((b"cache-control", b"public, max-age=3600" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(web_settings: WebSettings | None = None, kernel: Settings | None = None, *,
               http: httpx.AsyncClient | None = None, pages: list[Page] | None = None) -> FastAPI:
    """`http`: the one client for the APIs and the provider (tests pass one over ASGI transports)."""
    web_settings = web_settings or WebSettings()
    kernel = kernel or Settings()
    if kernel.environment == "production":
        problems = production_problems(web_settings, kernel)
        if problems:
            raise RuntimeError("the web refuses to start in production: " + "; ".join(problems))
    client = http or httpx.AsyncClient(timeout=web_settings.api_timeout_s, follow_redirects=False)
    pages = pages if pages is not None else registered_pages()
    web = Web(settings=web_settings, kernel=kernel, sealer=Sealer(session_key(web_settings, kernel)),
              api=Api(service_urls(kernel), client), oidc=signin.OidcClient(web_settings, client),
              verifier=TokenVerifier(kernel), pages=pages)

    application = FastAPI(title="Flourish web", docs_url=None, redoc_url=None, openapi_url=None)
    application.state.web = web
    application.mount("/static", StaticFiles(directory=STATIC), name="static")
    application.include_router(signin.router)
    for page in pages:
        application.include_router(page.router)

    @application.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @application.get("/readyz", include_in_schema=False)
    async def readyz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    _error_pages(application)
    application.add_middleware(SecurityHeaders)
    return application


def _error_pages(application: FastAPI) -> None:
    @application.exception_handler(SignInRequired)
    async def sign_in_again(request: Request, exc: Exception) -> Response:
        # After signing in again the user comes back to the page; a form's POST is not replayed.
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/"
        return _to_sign_in(request, target)

    @application.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return render(request, "errors/error.html", {"title": "This form could not be accepted"}, status=403,
                      errors=["The form was not sent from this page or has expired. Nothing was changed: "
                              "go back, reload the page and try again."])

    @application.exception_handler(ApiError)
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status == 401:
            return _to_sign_in(request, request.url.path if request.method == "GET" else "/")
        if exc.status == 403:
            return render(request, "errors/forbidden.html", {"detail": exc.detail}, status=403)
        if exc.status == 404:
            return render(request, "errors/not_found.html", status=404)
        return render(request, "errors/error.html", {"title": exc.title}, status=exc.status,
                      errors=exc.messages)

    @application.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return render(request, "errors/not_found.html", status=404)
        return render(request, "errors/error.html", {"title": str(exc.detail)}, status=exc.status_code)

    @application.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: Exception) -> Response:
        return render(request, "errors/error.html", {"title": "The request is not valid"}, status=422,
                      errors=["Something in the address or the form is missing or not valid."])


def _to_sign_in(request: Request, target: str) -> Response:
    web = web_of(request)
    location = "/sign-in?" + str(httpx.QueryParams({"next": signin.local_path(target)}))
    if request.headers.get("hx-request"):
        response: Response = HTMLResponse("", status_code=401, headers={"HX-Redirect": location})
    else:
        response = RedirectResponse(location, status_code=303)
    response.delete_cookie(web.session_cookie, path="/")
    return response


def app(**overrides: Any) -> FastAPI:
    """The factory uvicorn runs."""
    return create_app(**overrides)
