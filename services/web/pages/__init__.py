"""The page registry: one line per page module (services/web/pages/<name>.py, templates in
services/web/templates/<name>/). Each module defines `page = Page(...)` (services/web/core.py):
its router, its navigation links, the URLs the screenshots script and the bench visit."""

from __future__ import annotations

import importlib

from services.web.core import Page

PAGE_MODULES: tuple[str, ...] = (
    "home",
    "child",
    "share",
    "admin",
    "operations",
    "dpo",
    "screening",
)


def registered_pages() -> list[Page]:
    pages = []
    for name in PAGE_MODULES:
        page = importlib.import_module(f"services.web.pages.{name}").page
        if not isinstance(page, Page):
            raise TypeError(f"services.web.pages.{name}.page is not a Page")
        pages.append(page)
    return pages
