"""The OpenAPI document tells the truth about errors: every problem an operation can answer with is
declared, as application/problem+json (shared/problems.py renders every error that way).

Which problems an operation can return follows from its shape, the same for all four services:
a bearer token means 401 and 403; an id (in the path, the query or a body) 404; a pupil in the
path 410 (erased); parameters or a body 400 (malformed: a body that is not JSON, a cursor this API
did not issue) and 422 (invalid); a body 413; a command 409 (a concurrency conflict, something
already done, a key in use). A route declares anything else (a 409 on a read, a 503 for a peer
that did not answer) with FastAPI's `responses=`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from shared.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA_NAME = "Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; extension members (errors, problems, ...) may follow.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "A URN naming the kind of problem, or about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path"},
        "errors": {
            "type": "array",
            "description": "On a validation error: where and why, never the value",
            "items": {"type": "object", "properties": {"loc": {"type": "array"}, "msg": {"type": "string"},
                                                      "type": {"type": "string"}}},
        },
    },
    "additionalProperties": True,
}
DESCRIPTIONS = {
    400: "The request is malformed (a body that is not JSON, a cursor this API did not issue)",
    401: "No valid bearer token",
    403: "The token's role or academy scope does not allow this",
    404: "No such resource in the caller's trust",
    409: "Conflicts with the current state (changed since read, already done, key in use)",
    410: "The pupil was erased",
    413: "The body is larger than this operation accepts",
    422: "The request is not valid, or breaks a rule of the domain",
    503: "A dependency did not answer; try again later",
}
COMMANDS = frozenset({"post", "put", "patch", "delete"})
FRAMEWORK_DESCRIPTIONS = frozenset({None, "", "Validation Error", "Additional Response"})


def document_problems(app: FastAPI) -> None:
    """Make `app.openapi()` declare the problems of every operation."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_problems(build())
        return app.openapi_schema

    # FastAPI's documented way to customise the schema is to replace `app.openapi`; mypy refuses any
    # assignment to a method.
    app.openapi = openapi  # type: ignore[method-assign]


def with_problems(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas[PROBLEM_SCHEMA_NAME] = PROBLEM_SCHEMA
    # FastAPI's own validation error models describe a body this API never sends.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in _problems_of(path, method, operation):
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    problem_ref = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA_NAME}"}
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
                    if response.get("description") in FRAMEWORK_DESCRIPTIONS:  # a route's own words stay
                        response["description"] = DESCRIPTIONS.get(int(status), "A problem")
    return document


def _problems_of(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    problems: set[int] = set()
    parameters = operation.get("parameters", [])
    body = "requestBody" in operation
    if operation.get("security"):
        problems |= {401, 403}
    if body or any(p.get("in") == "path" or _is_id(p) for p in parameters):
        problems.add(404)  # an id in the path, the query or the body that names nothing in scope
    if "{pupil_id}" in path:
        problems.add(410)
    if body or parameters:
        problems |= {400, 422}
    if body:
        problems.add(413)
    if method in COMMANDS:
        problems.add(409)
    return problems


def _is_id(parameter: dict[str, Any]) -> bool:
    schemas = [parameter.get("schema", {}), *parameter.get("schema", {}).get("anyOf", [])]
    return any(schema.get("format") == "uuid" for schema in schemas)
