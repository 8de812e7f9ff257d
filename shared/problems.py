"""Every error a Flourish API returns, as RFC 9457 problem+json, defined and rendered here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import scrub

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# A URN rather than an https URL: stable, and it does not pretend a page exists behind it.
PROBLEM_TYPE_BASE = "urn:flourish:problem:"
# The members RFC 9457 defines; extension members must not overwrite them.
_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
# RFC 6750: a 401 always tells the client which scheme to use.
BEARER_CHALLENGE = 'Bearer realm="flourish"'


def problem_type(slug: str) -> str:
    return f"{PROBLEM_TYPE_BASE}{slug}"


class Problem(Exception):
    """An error the client should see, with a stable type URI.

    `detail` and `extras` are sent to the client and end up in its logs and screenshots:
    they explain what went wrong in terms of ids and rules, never with a pupil's or a member
    of staff's personal data.
    """

    status: ClassVar[int] = 500
    type_: ClassVar[str] = problem_type("internal-error")
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        extras: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        clashing = _STANDARD_MEMBERS & set(extras or {})
        if clashing:
            raise ValueError(f"extension members may not replace standard ones: {sorted(clashing)}")
        self.detail = detail
        self.extras: dict[str, Any] = dict(extras or {})
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, instance: str) -> dict[str, Any]:
        """The problem+json document; `instance` is the request path it happened on."""
        return problem_body(self.type_, self.title, self.status, self.detail, instance, self.extras)


class BadRequest(Problem):
    status = 400
    type_ = problem_type("bad-request")
    title = "Bad request"


class Unauthenticated(Problem):
    """No usable bearer token: missing, expired, badly signed, or not meant for Flourish."""

    status = 401
    type_ = problem_type("unauthenticated")
    title = "Authentication required"

    def __init__(
        self, reason: str = "a bearer token is required", *, token_presented: bool = True
    ) -> None:
        # RFC 6750 §3.1: name the error only when a token was presented and rejected.
        challenge = (
            f'{BEARER_CHALLENGE}, error="invalid_token"' if token_presented else BEARER_CHALLENGE
        )
        super().__init__(reason, headers={"WWW-Authenticate": challenge})
        self.reason = reason

    @classmethod
    def missing_token(cls) -> Unauthenticated:
        return cls("a bearer token is required", token_presented=False)


class Forbidden(Problem):
    """Authenticated, but the role or the trust/academy scope does not allow this."""

    status = 403
    type_ = problem_type("forbidden")
    title = "Forbidden"


class OnlineProcessingRefused(Forbidden):
    """The family opted out of processing by the online tool (consent's `online_processing`): every
    service that would process the child refuses with this one type (docs/consent.md)."""

    type_ = problem_type("online-processing-refused")
    title = "The family opted out of processing by the online tool"


class NotFound(Problem):
    status = 404
    type_ = problem_type("not-found")
    title = "Not found"


class Conflict(Problem):
    status = 409
    type_ = problem_type("conflict")
    title = "Conflict"


class Gone(Problem):
    """The pupil was erased: their personal data no longer exists anywhere readable."""

    status = 410
    type_ = problem_type("gone")
    title = "Gone"


class ConcurrencyConflict(Conflict):
    """The stream moved on since the client read it (optimistic concurrency): re-read and retry."""

    type_ = problem_type("concurrency-conflict")
    title = "The resource was changed by someone else"


class PreconditionFailed(Problem):
    """An If-Match (or similar) precondition did not hold."""

    status = 412
    type_ = problem_type("precondition-failed")
    title = "Precondition failed"


class PayloadTooLarge(Problem):
    status = 413
    type_ = problem_type("payload-too-large")
    title = "Payload too large"


class UnprocessableEntity(Problem):
    """Well-formed, but breaks a domain rule."""

    status = 422
    type_ = problem_type("unprocessable-entity")
    title = "Unprocessable entity"


class IdempotencyKeyReused(UnprocessableEntity):
    """The same Idempotency-Key came with a different request body.

    422, as the IETF Idempotency-Key draft specifies: retrying cannot succeed, so 409 (which
    invites a retry) would mislead the client.
    """

    type_ = problem_type("idempotency-key-reused")
    title = "Idempotency key reused with a different request"


class ServiceUnavailable(Problem):
    status = 503
    type_ = problem_type("service-unavailable")
    title = "Service unavailable"

    def __init__(self, detail: str | None = None, *, retry_after_s: int | None = None,
                 extras: Mapping[str, Any] | None = None) -> None:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        super().__init__(detail, extras=extras, headers=headers)


VALIDATION_ERROR_TYPE = problem_type("validation-error")
INTERNAL_ERROR_DETAIL = "An unexpected error occurred. It has been logged."

# How a service turns its own domain exceptions into problems, e.g.
# {PupilNotEnrolled: lambda exc: UnprocessableEntity("the pupil is not enrolled at this academy")}.
# A factory, not a blanket str(exc), so each service decides what the client may read.
ProblemFactory = Callable[[Exception], Problem]


def problem_body(
    type_: str,
    title: str,
    status: int,
    detail: str | None,
    instance: str,
    extras: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = dict(extras or {})
    body.update(type=type_, title=title, status=status, instance=instance)
    if detail is not None:
        body["detail"] = detail
    return body


def problem_response(
    body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    response_headers = dict(headers or {})
    if body["status"] == 401:
        response_headers.setdefault("WWW-Authenticate", BEARER_CHALLENGE)
    return JSONResponse(
        body, status_code=body["status"], headers=response_headers, media_type=PROBLEM_MEDIA_TYPE
    )


def install_problem_handlers(
    app: FastAPI, domain_errors: Mapping[type[Exception], ProblemFactory] | None = None
) -> None:
    """Make every error `app` returns a problem+json document.

    Call once, when the app is built (before it serves): it adds a middleware.
    """
    # Starlette types every handler as taking `Exception`, though it calls each only with the class it
    # was registered for: a handler of a subclass is right, and mypy cannot see why.
    app.add_exception_handler(Problem, _handle_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _handle_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)  # type: ignore[arg-type]
    for exc_type, factory in (domain_errors or {}).items():
        app.add_exception_handler(exc_type, _domain_error_handler(factory))
    app.add_middleware(UnhandledErrorMiddleware)


async def _handle_problem(request: Request, exc: Problem) -> JSONResponse:
    if exc.status >= 500:
        logger.warning(
            "request failed", extra={"status": exc.status, "error_type": type(exc).__name__}
        )
    return problem_response(exc.body(request.url.path), exc.headers)


def _domain_error_handler(factory: ProblemFactory) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return await _handle_problem(request, factory(exc))

    return handle


async def _handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Only where and why, never the offending value: a rejected field may hold a pupil's name
    # or date of birth. Text is scrubbed too, as custom validators may quote their input.
    errors = [
        {
            "loc": [
                scrub(part) if isinstance(part, str) else part for part in error.get("loc", ())
            ],
            "msg": scrub(str(error.get("msg", ""))),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    body = problem_body(
        VALIDATION_ERROR_TYPE,
        "The request is not valid",
        422,
        "One or more fields are missing or invalid; see errors.",
        request.url.path,
        {"errors": errors},
    )
    return problem_response(body)


async def _handle_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Framework errors (unknown route, wrong method) are plain HTTP: RFC 9457 "about:blank".
    phrase = _status_phrase(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    body = problem_body("about:blank", phrase, exc.status_code, detail, request.url.path)
    return problem_response(body, exc.headers)


class UnhandledErrorMiddleware:
    """Turns any exception nothing else handled into a generic 500 problem, and logs it.

    A middleware rather than an `Exception` handler: Starlette re-raises after running such a
    handler, so the server would log the error a second time (unscrubbed, under its own config).
    The body says nothing about the exception; its type and frames go to the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", None)
            logger.exception(
                "unhandled error",
                extra={
                    "status": 500,
                    "error_type": type(exc).__name__,
                    "method": scope.get("method"),
                    "route": route,
                },
            )
            if response_started:
                raise  # Too late for a problem document; let the server drop the connection.
            body = problem_body(
                Problem.type_, Problem.title, 500, INTERNAL_ERROR_DETAIL, scope.get("path", "")
            )
            await problem_response(body)(scope, receive, send)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
