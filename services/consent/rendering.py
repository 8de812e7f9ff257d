"""The readable forms of a JSON document the consent service hands to families and DPOs (a
consent receipt, a subject-access export): plain text, or HTML through a Jinja2 template with
autoescape on, so a value recorded through the API is always text, never markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

Format = Literal["json", "text", "html"]

# Personal data: no shared cache may keep a copy.
_NO_STORE = {"Cache-Control": "no-store"}


def negotiate(request: Request) -> Format:
    """The format the Accept header prefers (JSON unless it names text/html or text/plain)."""
    accept = request.headers.get("accept", "")
    if "text/html" in accept:
        return "html"
    if "text/plain" in accept:
        return "text"
    return "json"


def document_response(title: str, document: dict[str, Any], chosen: Format) -> Response:
    """The document as JSON, text or HTML, never stored by a cache."""
    if chosen == "html":
        return HTMLResponse(as_html(title, document), headers=_NO_STORE)
    if chosen == "text":
        return PlainTextResponse(as_text(title, document), headers=_NO_STORE)
    return JSONResponse(document, headers=_NO_STORE)


def label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def plain(value: Any) -> str:
    """A scalar (or a flat list) as a reader sees it: a dash for nothing, yes and no for booleans."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, dict):
        return "—"
    return str(value)


def as_text(title: str, document: Any) -> str:
    """Underlined title, then one `Label: value` line per field, nested fields indented."""
    lines = [title, "=" * len(title), ""]

    def walk(value: Any, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict | list) and v:
                    lines.append(f"{pad}{label(k)}:")
                    walk(v, indent + 1)
                else:
                    lines.append(f"{pad}{label(k)}: {plain(v)}")
        elif isinstance(value, list):
            for i, item in enumerate(value, 1):
                lines.append(f"{pad}{i}.")
                walk(item, indent + 1)
        else:
            lines.append(f"{pad}{plain(value)}")

    walk(document, 0)
    return "\n".join(lines) + "\n"


_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
)
_templates.filters.update(label=label, plain=plain)
_templates.tests.update(object=lambda value: isinstance(value, dict), array=lambda value: isinstance(value, list))


def as_html(title: str, document: Any) -> str:
    """Objects as tables, arrays as numbered lists (templates/document.html)."""
    return _templates.get_template("document.html").render(title=title, document=document)


def html_response(template: str, **context: Any) -> HTMLResponse:
    """A page of its own template (templates/<template>, autoescaped), never stored by a cache."""
    return HTMLResponse(_templates.get_template(template).render(**context), headers=_NO_STORE)
