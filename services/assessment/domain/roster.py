"""The roster from a school MIS: reading a pupil CSV export and deciding what an import changes.

Accepted columns (header names are matched case-insensitively, ignoring spaces, underscores and
punctuation; other columns are ignored and listed in the import report):

| field | header names accepted | required |
| --- | --- | --- |
| UPN | UPN, Unique Pupil Number | yes |
| legal surname | Legal Surname, Surname, Last Name, Family Name | yes |
| legal forename | Legal Forename, Forename, First Name, Given Name | yes |
| preferred surname | Preferred Surname | no |
| preferred forename | Preferred Forename, Known As | no |
| date of birth | DOB, Date of Birth | yes |
| gender | Gender, Sex (M, F, Male, Female, Boy, Girl; X, U, Other, Unknown, Not Known → X) | yes |
| year group | Year, Year Group, NC Year, NC Year Actual, Curriculum Year (N1, N2, R, 1–14, "Year 4", "Y4") | yes |
| class | Reg Group, Registration Group, Reg, Form, Form Group, Tutor Group, Class | yes (may be blank for a leaver) |
| admission date | Admission Date, Date of Admission, Entry Date, Start Date | no |
| leaving date | Leaving Date, Date of Leaving, Leave Date | no |

Dates as DD/MM/YYYY (as UK MIS exports write them), DD-MM-YYYY, DD.MM.YYYY or YYYY-MM-DD. UTF-8
(with or without a byte-order mark) or Windows-1252. Problems are reported by row (the line in the
file; the header is row 1) and column, never quoting the value, which is personal data.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID

from services.assessment.domain.errors import RosterFileRejected, RowProblem

MAX_ROWS = 10_000
# An MIS export row with every column a school exports runs to a few hundred characters; a record
# past this is not a pupil export (and the refusal names the row rather than a CSV parser limit).
MAX_RECORD_CHARS = 10_000
MAX_PROBLEMS = 200  # enough to fix a file by; a wholly wrong file need not list 10,000
# The DfE format: a check letter, 11 digits, then a digit (or a letter for a temporary UPN).
UPN_PATTERN = re.compile(r"^[A-Z]\d{11}[0-9A-Z]$")

COLUMNS: dict[str, tuple[str, ...]] = {
    "upn": ("upn", "uniquepupilnumber"),
    "legal_surname": ("legalsurname", "surname", "lastname", "familyname"),
    "legal_forename": ("legalforename", "forename", "firstname", "givenname"),
    "preferred_surname": ("preferredsurname",),
    "preferred_forename": ("preferredforename", "knownas"),
    "date_of_birth": ("dob", "dateofbirth"),
    "gender": ("gender", "sex"),
    "year_group": ("year", "yeargroup", "ncyear", "ncyearactual", "curriculumyear"),
    "reg_group": ("reggroup", "registrationgroup", "reg", "form", "formgroup", "tutorgroup", "class"),
    "admission_date": ("admissiondate", "dateofadmission", "entrydate", "startdate"),
    "leaving_date": ("leavingdate", "dateofleaving", "leavedate"),
}
REQUIRED = ("upn", "legal_surname", "legal_forename", "date_of_birth", "gender", "year_group", "reg_group")
# Readable names for problems: the header the file used is not known for a missing column.
LABELS = {
    "upn": "UPN", "legal_surname": "Legal Surname", "legal_forename": "Legal Forename",
    "preferred_surname": "Preferred Surname", "preferred_forename": "Preferred Forename",
    "date_of_birth": "DOB", "gender": "Gender", "year_group": "Year", "reg_group": "Reg Group",
    "admission_date": "Admission Date", "leaving_date": "Leaving Date",
}
GENDERS = {"m": "M", "male": "M", "boy": "M", "f": "F", "female": "F", "girl": "F",
           "x": "X", "u": "X", "other": "X", "unknown": "X", "notknown": "X", "notstated": "X"}
YEAR_GROUPS = ("N1", "N2", "R", *(str(n) for n in range(1, 15)))
DATE_FORMATS = ("%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y", "%Y-%m-%d")


@dataclass(frozen=True)
class PupilDetails:
    """A pupil's personal data: kept apart from events, read and written by one repository."""

    upn: str
    legal_surname: str
    legal_forename: str
    date_of_birth: date
    gender: str
    year_group: str
    preferred_surname: str | None = None
    preferred_forename: str | None = None

    @property
    def display_name(self) -> str:
        return f"{self.preferred_forename or self.legal_forename} {self.preferred_surname or self.legal_surname}"


@dataclass(frozen=True)
class MisRow:
    row: int
    details: PupilDetails
    reg_group: str | None
    admission_date: date | None = None
    leaving_date: date | None = None


# --- Reading the file -------------------------------------------------------------------------


def parse_mis_csv(data: bytes, today: date) -> tuple[list[MisRow], list[str]]:
    """Rows of a pupil export and the names of the columns ignored; RosterFileRejected otherwise."""
    reader = csv.reader(io.StringIO(_decode(data), newline=""), strict=True)
    header: list[str] | None = None
    columns: dict[str, int] = {}
    ignored: list[str] = []
    rows: list[MisRow] = []
    problems: list[RowProblem] = []
    line = 1
    try:
        for cells in reader:
            # A quoted field may span lines: a record is numbered by the line it starts on.
            number, line = line, reader.line_num + 1
            if sum(map(len, cells)) + len(cells) > MAX_RECORD_CHARS:
                raise RosterFileRejected([RowProblem(number, None, f"the row is longer than {MAX_RECORD_CHARS} characters")])
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = cells
                columns, ignored = _columns(cells, number)
                continue
            if len(rows) >= MAX_ROWS:
                raise RosterFileRejected([RowProblem(None, None, f"the file has more than {MAX_ROWS} pupils")])
            parsed = _row(number, cells, columns, len(header), today, problems)
            if parsed is not None:
                rows.append(parsed)
    except csv.Error as error:
        raise RosterFileRejected([RowProblem(reader.line_num, None, f"not valid CSV here ({error})")]) from None
    if header is None:
        raise RosterFileRejected([RowProblem(None, None, "the file is empty")])
    problems.extend(_duplicate_upns(rows))
    if problems:
        raise RosterFileRejected(problems[:MAX_PROBLEMS])
    if not rows:
        raise RosterFileRejected([RowProblem(None, None, "the file has a header but no pupils")])
    return rows, ignored


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise RosterFileRejected([RowProblem(None, None, "not a text file (it holds NUL bytes)")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="strict") if _cp1252_ok(data) else _undecodable()


def _cp1252_ok(data: bytes) -> bool:
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


def _undecodable() -> str:
    raise RosterFileRejected([RowProblem(None, None, "the file is neither UTF-8 nor Windows-1252 text")])


def _normalise(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def _columns(header: Sequence[str], number: int) -> tuple[dict[str, int], list[str]]:
    aliases = {alias: name for name, names in COLUMNS.items() for alias in names}
    columns: dict[str, int] = {}
    ignored: list[str] = []
    problems: list[RowProblem] = []
    for position, title in enumerate(header):
        name = aliases.get(_normalise(title))
        if name is None:
            ignored.append(title.strip())
        elif name in columns:
            problems.append(RowProblem(number, title.strip(), f"a second column for {LABELS[name]}"))
        else:
            columns[name] = position
    problems += [
        RowProblem(number, LABELS[n], f"the required column {LABELS[n]} is missing") for n in REQUIRED if n not in columns
    ]
    if problems:
        raise RosterFileRejected(problems)
    return columns, ignored


def _row(number: int, cells: list[str], columns: Mapping[str, int], width: int, today: date,
         problems: list[RowProblem]) -> MisRow | None:
    if len(cells) != width:
        problems.append(RowProblem(number, None, f"has {len(cells)} fields; the header has {width}"))
        return None
    value = {name: cells[position].strip() for name, position in columns.items()}
    before = len(problems)

    def problem(name: str, message: str) -> None:
        problems.append(RowProblem(number, LABELS[name], message))

    for name in REQUIRED:
        if not value.get(name) and not (name == "reg_group" and value.get("leaving_date")):
            problem(name, "is empty")
    upn = value["upn"].upper()
    if upn and not UPN_PATTERN.match(upn):
        problem("upn", "is not a UPN (a letter, 11 digits, then a digit or letter)")
    dob = _date(value["date_of_birth"], "date_of_birth", problem)
    if dob is not None and not date(today.year - 30, 1, 1) <= dob <= today:
        problem("date_of_birth", "is not a plausible date of birth for a pupil")
    gender = GENDERS.get(_normalise(value["gender"]))
    if value["gender"] and gender is None:
        problem("gender", "is not one of M, F, X (or Male, Female, Other, Unknown)")
    year = _year_group(value["year_group"])
    if value["year_group"] and year is None:
        problem("year_group", f"is not a year group ({', '.join(YEAR_GROUPS[:4])} … 14)")
    admitted = _date(value.get("admission_date", ""), "admission_date", problem)
    leaving = _date(value.get("leaving_date", ""), "leaving_date", problem)
    if len(problems) > before or dob is None or gender is None or year is None:
        return None
    details = PupilDetails(
        upn=upn, legal_surname=value["legal_surname"], legal_forename=value["legal_forename"],
        date_of_birth=dob, gender=gender, year_group=year,
        preferred_surname=value.get("preferred_surname") or None,
        preferred_forename=value.get("preferred_forename") or None,
    )
    return MisRow(number, details, value["reg_group"] or None, admitted, leaving)


def _date(raw: str, name: str, problem: Callable[[str, str], None]) -> date | None:
    if not raw:
        return None
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    problem(name, "is not a date (DD/MM/YYYY or YYYY-MM-DD)")
    return None


def _year_group(raw: str) -> str | None:
    token = re.sub(r"^(year|yr|y|nc)\s*", "", raw.strip().lower())
    token = {"reception": "R", "rec": "R", "r": "R", "n1": "N1", "n2": "N2"}.get(token, token)
    if token.isdigit():
        token = str(int(token))
    return token if token in YEAR_GROUPS else None


def _duplicate_upns(rows: Sequence[MisRow]) -> list[RowProblem]:
    first: dict[str, int] = {}
    problems = []
    for row in rows:
        if row.details.upn in first:
            problems.append(RowProblem(row.row, "UPN", f"the same UPN as row {first[row.details.upn]}"))
        first.setdefault(row.details.upn, row.row)
    return problems


# --- Deciding what an import changes ---------------------------------------------------------


@dataclass(frozen=True)
class RosterEntry:
    """A pupil the academy's roster already holds (found by UPN). `details` is None for a pupil the
    import file does not name (their details are not opened: only a whole-roll import needs them,
    and only to see they left)."""

    pupil_id: UUID
    details: PupilDetails | None
    class_name: str | None
    on_roll: bool


@dataclass
class RosterPlan:
    enrol: list[MisRow] = field(default_factory=list)
    rejoin: list[tuple[UUID, MisRow]] = field(default_factory=list)
    move: list[tuple[UUID, str | None]] = field(default_factory=list)
    update_details: list[tuple[UUID, PupilDetails]] = field(default_factory=list)
    leave: list[tuple[UUID, date]] = field(default_factory=list)
    unchanged: int = 0


def plan_import(rows: Sequence[MisRow], roster: Mapping[str, RosterEntry], whole_roll: bool, today: date) -> RosterPlan:
    """What an import changes. Importing the same file twice plans nothing the second time.

    A pupil is matched by UPN. A row with a leaving date on or before today is a leaver; with
    `whole_roll` (the file is the academy's whole roll) so is every pupil on roll the file omits.
    """
    plan = RosterPlan()
    in_file = set()
    for row in rows:
        in_file.add(row.details.upn)
        entry = roster.get(row.details.upn)
        leaving = row.leaving_date is not None and row.leaving_date <= today
        if entry is None:
            if not leaving:
                plan.enrol.append(row)
            else:
                plan.unchanged += 1  # a leaver we never knew: nothing to record
            continue
        changed = _apply_row(plan, entry, row, leaving, today)
        plan.unchanged += 0 if changed else 1
    if whole_roll:
        plan.leave += [(e.pupil_id, today) for upn, e in roster.items() if e.on_roll and upn not in in_file]
    return plan


def _apply_row(plan: RosterPlan, entry: RosterEntry, row: MisRow, leaving: bool, today: date) -> bool:
    changed = False
    details = row.details
    if details != entry.details:
        plan.update_details.append((entry.pupil_id, details))
        changed = True
    if leaving:
        if entry.on_roll:
            plan.leave.append((entry.pupil_id, row.leaving_date or today))
            changed = True
        return changed
    if not entry.on_roll:
        plan.rejoin.append((entry.pupil_id, row))
        return True
    if row.reg_group != entry.class_name:
        plan.move.append((entry.pupil_id, row.reg_group))
        changed = True
    return changed
