"""docs/audit.md's "What is recorded" says exactly what the code can put in the ledger: no fact the
code never emits, none it emits left out; the same for the data categories of a recorded read and
the routes that record them."""

from __future__ import annotations

import re
from pathlib import Path

import shared.events  # noqa: F401  (registers every event type)
from services.reporting.audit.domain.facts import is_recorded, kind_and_action
from shared.events.audit import AdminAction, AdminActionTaken, ReadCategory
from shared.events.registry import registered_types
from tests.integration.audit.test_every_fact import RECORDS_A_READ

DOCS = Path(__file__).resolve().parents[3] / "docs" / "audit.md"
CODE = re.compile(r"`([^`]+)`")


def section() -> str:
    text = DOCS.read_text()
    start = text.index("## What is recorded")
    return text[start:text.index("\n## ", start + 1)]


def rows(header: str) -> list[list[str]]:
    """The cells of the table in the section whose header row starts with `header`."""
    lines = section().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    table = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


def emitted() -> set[tuple[str, str]]:
    """(kind, action) of every entry the code can record."""
    facts = {kind_and_action(model, None) for model in registered_types().values()  # type: ignore[arg-type]
             if is_recorded(model) and model is not AdminActionTaken}
    facts |= {("admin", action.value) for action in AdminAction}
    return {(str(kind), action) for kind, action in facts}


def documented() -> set[tuple[str, str]]:
    # Only the first code of each clause names an action ("`framework.loaded` (... `flourish audit export`)").
    return {(kind, CODE.findall(clause)[0]) for kind, actions, _ in rows("kind")
            for clause in re.split(r",\s*(?![^()]*\))", actions) if CODE.findall(clause)}


def test_the_docs_list_every_fact_the_code_can_record_and_no_other() -> None:
    code, docs = emitted(), documented()
    assert docs - code == set(), "docs/audit.md claims facts the code never records"
    assert code - docs == set(), "the code records facts docs/audit.md does not list"


def test_the_docs_list_every_read_category_and_the_routes_that_record_it() -> None:
    table = {CODE.findall(category)[0]: routes for category, _, routes in rows("category")}
    assert set(table) == {c.value for c in ReadCategory}
    for (service, path), category in RECORDS_A_READ.items():
        assert service in table[category.value] and f"`GET {path}`" in table[category.value], (service, path)
    documented_routes = {route for routes in table.values() for route in re.findall(r"GET (\S+?)`", routes)}
    assert documented_routes == {path for _, path in RECORDS_A_READ}
