"""Planning's read of a framework version: strands, needs, statements, learning targets and the
activity bank. The content belongs to the assessment service (GET /frameworks/{version}); this is
the part planning reads, parsed leniently (unknown fields ignored) so a richer document still loads."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StatementDoc(_Lenient):
    number: int
    text: str


class NeedDoc(_Lenient):
    id: str
    name: str
    statements: list[StatementDoc]
    targets: list[str] = []
    activities: list[str] = []


class StrandDoc(_Lenient):
    id: str
    name: str
    needs: list[NeedDoc]


class FrameworkDoc(_Lenient):
    version: str
    name: str
    threshold_percent: float
    strands: list[StrandDoc]


@dataclass(frozen=True)
class Statement:
    id: str  # "<strand>.<number>", as assessment events name it
    strand: str
    need: str
    number: int
    text: str


@dataclass(frozen=True)
class PlanningFramework:
    document: FrameworkDoc

    @classmethod
    def from_data(cls, data: Any) -> PlanningFramework:
        return cls(FrameworkDoc.model_validate(data))

    @property
    def version(self) -> str:
        return self.document.version

    @cached_property
    def strands(self) -> dict[str, StrandDoc]:
        return {strand.id: strand for strand in self.document.strands}

    @cached_property
    def strand_order(self) -> tuple[str, ...]:
        return tuple(strand.id for strand in self.document.strands)

    @cached_property
    def needs(self) -> dict[str, NeedDoc]:
        return {need.id: need for strand in self.document.strands for need in strand.needs}

    @cached_property
    def statements(self) -> dict[str, Statement]:
        return {
            f"{strand.id}.{s.number}": Statement(f"{strand.id}.{s.number}", strand.id, need.id, s.number, s.text)
            for strand in self.document.strands
            for need in strand.needs
            for s in need.statements
        }

    def need_order(self, strand: str) -> list[str]:
        return [need.id for need in self.strands[strand].needs]

    def activity_bank(self, strand: str) -> set[str]:
        return {activity for need in self.strands[strand].needs for activity in need.activities}
