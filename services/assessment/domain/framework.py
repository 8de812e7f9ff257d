"""The developmental framework as versioned data: strands, needs, statements, levels and points.

A framework is a YAML or JSON document validated by the pydantic models below (their JSON Schema
is served at GET /framework-schema). The six strands come in developmental order, each with an age
band and three needs; each need has numbered statements, learning targets and an activity bank.
An invalid document is refused with every problem located by strand, need, statement and field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.assessment.domain.errors import FrameworkInvalid, FrameworkProblem, UnknownStrand
from shared.events.assessment import Level

# The strands of the approach, in the order they come online as a child grows. A framework may
# word them its own way but must keep these ids and this order: scoring walks them in order.
STRAND_ORDER: tuple[str, ...] = (
    "being", "doing", "thinking", "power-and-identity", "skills-and-structure", "interdependence",
)
LEVEL_ORDER: tuple[Level, ...] = (Level.RARELY, Level.EMERGING, Level.DEVELOPING, Level.SECURE)
NEEDS_PER_STRAND = 3
SLUG = r"^[a-z][a-z0-9-]*(\.[a-z0-9-]+)*$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class LevelPoints(_Strict):
    level: Level
    label: str = Field(min_length=1, max_length=40)
    points: int = Field(ge=0, le=100)


class Statement(_Strict):
    number: int = Field(ge=1, description="Numbered through the strand: Being runs 1 to 45 over its three needs")
    text: str = Field(min_length=1, max_length=500)


class Need(_Strict):
    id: str = Field(pattern=SLUG, max_length=80, description="e.g. being.safe")
    name: str = Field(min_length=1, max_length=120)
    statements: list[Statement] = Field(min_length=1)
    targets: list[str] = Field(default_factory=list, description="Learning targets an action plan can set")
    activities: list[str] = Field(min_length=1, description="The activity bank for this need")


class AgeBand(_Strict):
    """The ages at which the strand normally comes online, in months (the upper bound excluded)."""

    from_months: int = Field(ge=0)
    to_months: int = Field(gt=0)


class Strand(_Strict):
    id: str = Field(pattern=SLUG, max_length=40)
    name: str = Field(min_length=1, max_length=80)
    age_band: AgeBand
    needs: list[Need]


class FrameworkDocument(_Strict):
    """A framework version as loaded: what the schema validates, stored as JSON."""

    version: str = Field(pattern=VERSION, description="Immutable once an assessment has used it")
    name: str = Field(min_length=1, max_length=200)
    threshold_percent: float = Field(gt=0, le=100, description="A strand is met at or above this %")
    levels: list[LevelPoints]
    strands: list[Strand]


def framework_json_schema() -> dict[str, Any]:
    return FrameworkDocument.model_json_schema()


@dataclass(frozen=True)
class StatementRef:
    """Where a statement sits: its id (`<strand>.<number>`), strand, need and text."""

    id: str
    strand: str
    need: str
    number: int
    text: str


@dataclass(frozen=True)
class Framework:
    """A validated framework with the look-ups scoring needs."""

    document: FrameworkDocument

    @property
    def version(self) -> str:
        return self.document.version

    @property
    def threshold_percent(self) -> float:
        return self.document.threshold_percent

    @cached_property
    def content_hash(self) -> str:
        return content_hash(self.document)

    @cached_property
    def points(self) -> dict[Level, int]:
        return {entry.level: entry.points for entry in self.document.levels}

    @cached_property
    def max_points(self) -> int:
        return max(self.points.values())

    @cached_property
    def statements(self) -> dict[str, StatementRef]:
        return {
            statement_id(strand.id, s.number):
                StatementRef(statement_id(strand.id, s.number), strand.id, need.id, s.number, s.text)
            for strand in self.document.strands
            for need in strand.needs
            for s in need.statements
        }

    @cached_property
    def strands(self) -> dict[str, Strand]:
        return {strand.id: strand for strand in self.document.strands}

    @cached_property
    def strand_order(self) -> tuple[str, ...]:
        return tuple(strand.id for strand in self.document.strands)

    def strand(self, strand_id: str) -> Strand:
        try:
            return self.strands[strand_id]
        except KeyError:
            raise UnknownStrand(strand_id, self.version) from None

    def statement_ids(self, strand_ids: Iterable[str]) -> list[str]:
        """Every statement of these strands, in framework order."""
        wanted = set(strand_ids)
        return [ref.id for ref in self.statements.values() if ref.strand in wanted]

    def need_statements(self, strand_id: str) -> list[tuple[str, list[str]]]:
        """(need id, its statement ids) for each need of a strand, in order."""
        return [
            (need.id, [statement_id(strand_id, s.number) for s in need.statements])
            for need in self.strand(strand_id).needs
        ]

    def expected_strand(self, age_months: int) -> str:
        """The strand a child of this age is expected to be working at (the band containing it)."""
        for strand in self.document.strands:
            if age_months < strand.age_band.to_months:
                return strand.id
        return self.document.strands[-1].id


def statement_id(strand: str, number: int) -> str:
    return f"{strand}.{number}"


def content_hash(document: FrameworkDocument) -> str:
    """The same content always hashes the same, whatever YAML or JSON formatting it came in."""
    canonical = json.dumps(document.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- Parsing and validating -----------------------------------------------------------------


def parse_framework(text: str | bytes) -> Framework:
    """Parse a YAML (or JSON, which is YAML) document and validate it; FrameworkInvalid otherwise."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise FrameworkInvalid([FrameworkProblem(f"not valid YAML or JSON{where}")]) from None
    return framework_from_data(raw)


def framework_from_data(raw: Any) -> Framework:
    if not isinstance(raw, dict):
        raise FrameworkInvalid([FrameworkProblem("the document must be a mapping with version, strands, levels …")])
    try:
        document = FrameworkDocument.model_validate(raw)
    except ValidationError as error:
        raise FrameworkInvalid([_located(raw, item) for item in error.errors(include_url=False, include_input=False)]) from None
    problems = [*_level_problems(document), *_strand_problems(document)]
    if problems:
        raise FrameworkInvalid(problems)
    return Framework(document)


def _located(raw: Mapping[str, Any], item: Mapping[str, Any]) -> FrameworkProblem:
    """Turn pydantic's location (strands, 0, needs, 1, statements, 4, text) into names."""
    loc = list(item.get("loc", ()))
    strand = need = None
    statement: int | None = None
    node: Any = raw
    fields: list[str] = []
    for i, part in enumerate(loc):
        previous = loc[i - 1] if i else None
        node = _child(node, part)
        if isinstance(part, int) and previous == "strands":
            strand = _label(node, f"strands[{part}]", ("name", "id"))
        elif isinstance(part, int) and previous == "needs":
            need = _label(node, f"needs[{part}]", ("name", "id"))
        elif isinstance(part, int) and previous == "statements":
            number = node.get("number") if isinstance(node, dict) else None
            statement = number if isinstance(number, int) else part + 1
        elif part not in ("strands", "needs", "statements"):
            fields.append(str(part))
    field = ".".join(fields) or (str(loc[-1]) if loc else None)
    return FrameworkProblem(str(item.get("msg", "is not valid")), strand, need, statement, field)


def _child(node: Any, part: Any) -> Any:
    try:
        return node[part]
    except (KeyError, IndexError, TypeError):
        return None


def _label(node: Any, fallback: str, keys: tuple[str, ...]) -> str:
    if isinstance(node, dict):
        for key in keys:
            if isinstance(node.get(key), str) and node[key].strip():
                return str(node[key]).strip()
    return fallback


def _level_problems(document: FrameworkDocument) -> list[FrameworkProblem]:
    levels = [entry.level for entry in document.levels]
    if tuple(levels) != LEVEL_ORDER:
        expected = ", ".join(level.value for level in LEVEL_ORDER)
        return [FrameworkProblem(f"the levels must be exactly {expected}, in that order", field="levels")]
    points = [entry.points for entry in document.levels]
    if any(later <= earlier for earlier, later in pairwise(points)):
        return [FrameworkProblem("points must rise strictly from Rarely to Secure", field="levels.points")]
    return []


def _strand_problems(document: FrameworkDocument) -> list[FrameworkProblem]:
    problems: list[FrameworkProblem] = []
    ids = tuple(strand.id for strand in document.strands)
    if ids != STRAND_ORDER:
        problems.append(FrameworkProblem(
            f"the strands must be exactly {', '.join(STRAND_ORDER)}, in developmental order", field="strands"
        ))
    previous_band_end = 0
    need_ids: set[str] = set()
    for strand in document.strands:
        band = strand.age_band
        if band.from_months != previous_band_end or band.to_months <= band.from_months:
            problems.append(FrameworkProblem(
                f"age bands must follow on from each other: this one must start at {previous_band_end} months "
                "and end after it starts", strand=strand.name, field="age_band",
            ))
        previous_band_end = band.to_months
        if len(strand.needs) != NEEDS_PER_STRAND:
            problems.append(FrameworkProblem(f"a strand has {NEEDS_PER_STRAND} needs, not {len(strand.needs)}",
                                             strand=strand.name, field="needs"))
        for need in strand.needs:
            if need.id in need_ids:
                problems.append(FrameworkProblem("need ids must be unique", strand=strand.name, need=need.name, field="id"))
            need_ids.add(need.id)
        problems.extend(_numbering_problems(strand))
    return problems


def _numbering_problems(strand: Strand) -> list[FrameworkProblem]:
    """Statements are numbered 1, 2, 3 … through the strand, in the order they appear."""
    problems = []
    expected = 1
    for need in strand.needs:
        for statement in need.statements:
            if statement.number != expected:
                problems.append(FrameworkProblem(
                    f"statements are numbered 1, 2, 3 … through the strand: expected {expected} here",
                    strand=strand.name, need=need.name, statement=statement.number, field="number",
                ))
            expected = statement.number + 1
    return problems
