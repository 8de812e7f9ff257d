"""Request bodies are bounded: a body over its route's limit is refused with 413 problem+json
before it is read when Content-Length says so, or as soon as it passes the limit when it streams
in chunks, so a hostile or broken client cannot make a service buffer gigabytes.

Every route accepts DEFAULT_MAX_BODY_BYTES; a route that takes larger files (an MIS export, a
whole class's ratings) says so with `openapi_extra=body_limit(...)`, which also documents the
limit in the OpenAPI document as `x-max-body-bytes`.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import PayloadTooLarge, problem_response

MIB = 1024 * 1024
# Every JSON command of the four APIs fits in a few kilobytes; a megabyte leaves room to spare.
DEFAULT_MAX_BODY_BYTES = 1 * MIB
MAX_BODY_EXTENSION = "x-max-body-bytes"


def body_limit(max_bytes: int, **openapi_extra: Any) -> dict[str, Any]:
    """A route's `openapi_extra` for a body larger than the default (merged with any other extra)."""
    return {**openapi_extra, MAX_BODY_EXTENSION: max_bytes}


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body may be at most {_readable(limit)}", extras={"max_body_bytes": limit})


class BodySizeLimit:
    """ASGI middleware enforcing each route's body limit."""

    def __init__(self, app: ASGIApp, default_limit: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.default_limit = default_limit
        self._limits: list[tuple[re.Pattern[str], dict[str, int]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Answered before a byte of the body is read; the server closes the connection after.
            await _refuse(scope, receive, send, limit)
            return
        received = 0
        refused = answered = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise too_large(limit)
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app made of the cut-off body (FastAPI calls it a 400), the answer is
            # the 413; the app's own response is dropped.
            nonlocal answered
            if not refused:
                await send(message)
            elif not answered:
                answered = True
                await _refuse(scope, receive, send, limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            if not answered:
                await _refuse(scope, receive, send, limit)

    def _limit_for(self, scope: Scope) -> int:
        if self._limits is None:
            self._limits = _declared_limits(scope["app"].openapi())
        path, method = scope["path"], scope["method"].lower()
        for template, limits in self._limits:
            if template.fullmatch(path):
                return limits.get(method, self.default_limit)
        return self.default_limit


def _declared_limits(document: dict[str, Any]) -> list[tuple[re.Pattern[str], dict[str, int]]]:
    """The routes with a limit of their own, read from the OpenAPI document: the limit a client
    reads there is the one enforced."""
    declared = []
    for path, operations in document.get("paths", {}).items():
        limits = {method: int(op[MAX_BODY_EXTENSION]) for method, op in operations.items() if MAX_BODY_EXTENSION in op}
        if limits:
            declared.append((re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path))), limits))
    return declared


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    body = too_large(limit).body(scope.get("path", ""))
    await problem_response(body, {"Connection": "close"})(scope, receive, send)


def _readable(size: int) -> str:
    return f"{size // MIB} MB" if size % MIB == 0 else f"{size} bytes"
