"""The reporting service's HTML: one Jinja2 environment over templates/ with autoescape on, so a
value that reaches a page (a statement's text, an activity, a consumer's name) is always text,
never markup. Python hands the templates plain view models; the filters below only format."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined


def percent(value: float | None) -> str:
    """A percentage as the report prints it: whole, with a dash where there is none."""
    return "–" if value is None else f"{round(value):.0f}%"


def day(value: date | None) -> str:
    """A date as the report prints it (31/12/26), nothing where there is none."""
    return value.strftime("%d/%m/%y") if value else ""


def coord(value: float) -> str:
    """An SVG coordinate or length, to a tenth of a unit."""
    return f"{value:.1f}"


def whole(value: float) -> str:
    """A count kept as a float (a Prometheus sample), without its decimals."""
    return f"{value:.0f}"


_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # templates ship with the code: no stat of each file on every render
)
_templates.filters.update(percent=percent, day=day, coord=coord, whole=whole)


def render(template: str, **context: Any) -> str:
    """templates/<template> filled in with the context."""
    return _templates.get_template(template).render(**context)
