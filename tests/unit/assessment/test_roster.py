"""Reading an MIS pupil export and deciding what an import changes."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from services.assessment.domain.errors import RosterFileRejected
from services.assessment.domain.roster import PupilDetails, RosterEntry, parse_mis_csv, plan_import

TODAY = date(2026, 11, 26)
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group"
ROWS = [
    "A12345678901B,Smith,Jo,03/04/2017,M,4,4B",
    "B12345678901C,Jones,Al,2017-06-05,Female,Year 4,4B",
    "C12345678901D,O'Neill,Sam,21/12/2016,X,Y4,4A",
]


def csv(*rows: str, header: str = HEADER) -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode()


def rejected(data: bytes) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(RosterFileRejected) as error:
        parse_mis_csv(data, TODAY)
    return [(p.row, p.column, p.message) for p in error.value.problems]


def test_a_typical_export_is_read_with_dates_genders_and_year_groups_normalised():
    rows, ignored = parse_mis_csv(csv(*ROWS), TODAY)
    assert [r.details.upn for r in rows] == ["A12345678901B", "B12345678901C", "C12345678901D"]
    assert rows[0].details.date_of_birth == date(2017, 4, 3) and rows[1].details.date_of_birth == date(2017, 6, 5)
    assert [r.details.gender for r in rows] == ["M", "F", "X"]
    assert [r.details.year_group for r in rows] == ["4", "4", "4"]
    assert [r.reg_group for r in rows] == ["4B", "4B", "4A"] and [r.row for r in rows] == [2, 3, 4]
    assert ignored == []


def test_header_names_vary_between_mis_and_unknown_columns_are_ignored():
    header = "unique pupil number,SURNAME,Forename,Date of Birth,Sex,NC Year Actual,Registration Group,Known As,Ethnicity"
    rows, ignored = parse_mis_csv(csv("A12345678901B,Smith,Joanna,03/04/2017,F,R,RB,Jo,WBRI", header=header), TODAY)
    assert rows[0].details.preferred_forename == "Jo" and rows[0].details.year_group == "R"
    assert rows[0].details.display_name == "Jo Smith" and ignored == ["Ethnicity"]


def test_a_utf8_file_with_a_byte_order_mark_and_a_windows_1252_file_both_read():
    assert parse_mis_csv(b"\xef\xbb\xbf" + csv(ROWS[0]), TODAY)[0][0].details.upn == "A12345678901B"
    latin = csv("A12345678901B,Brontë,Zoë,03/04/2017,F,4,4B").decode().encode("cp1252")
    assert parse_mis_csv(latin, TODAY)[0][0].details.legal_surname == "Brontë"


def test_bad_rows_are_reported_by_row_and_column_without_their_values():
    problems = rejected(csv(ROWS[0], "NOTAUPN,Smith,Jo,31/02/2017,M,4,4B", "D12345678901E,,Al,03/04/2017,Q,15,4B"))
    assert (3, "UPN", "is not a UPN (a letter, 11 digits, then a digit or letter)") in problems
    assert (3, "DOB", "is not a date (DD/MM/YYYY or YYYY-MM-DD)") in problems
    assert (4, "Legal Surname", "is empty") in problems
    assert any(row == 4 and column == "Gender" for row, column, _ in problems)
    assert any(row == 4 and column == "Year" for row, column, _ in problems)
    assert not any("NOTAUPN" in message or "31/02" in message for _, _, message in problems)


def test_a_missing_required_column_rejects_the_file():
    assert rejected(csv("A12345678901B,Smith,Jo,4,4B", header="UPN,Legal Surname,Legal Forename,Year,Reg Group")) == [
        (1, "DOB", "the required column DOB is missing"), (1, "Gender", "the required column Gender is missing"),
    ]


def test_a_malformed_csv_is_rejected_with_where():
    problems = rejected(csv(ROWS[0], 'B12345678901C,"Jones,Al,2017-06-05,F,4,4B'))
    assert len(problems) == 1 and "not valid CSV" in problems[0][2]
    assert rejected(csv(ROWS[0], "B12345678901C,Jones,Al,2017-06-05,F,4"))[0][:2] == (3, None)
    assert "NUL" in rejected(b"UPN\x00,Surname")[0][2]


def test_the_same_upn_twice_is_a_problem_of_the_second_row():
    assert rejected(csv(ROWS[0], ROWS[0].replace("Jo", "Joe"))) == [(3, "UPN", "the same UPN as row 2")]


def test_an_empty_file_or_a_header_alone_is_rejected():
    assert "empty" in rejected(b"")[0][2]
    assert "no pupils" in rejected(csv())[0][2]


# --- planning an import ------------------------------------------------------------------------


def _roster(rows) -> dict[str, RosterEntry]:
    return {r.details.upn: RosterEntry(uuid.uuid4(), r.details, r.reg_group, True) for r in rows}


def test_importing_the_same_file_again_changes_nothing():
    rows, _ = parse_mis_csv(csv(*ROWS), TODAY)
    first = plan_import(rows, {}, whole_roll=True, today=TODAY)
    assert len(first.enrol) == 3
    again = plan_import(rows, _roster(rows), whole_roll=True, today=TODAY)
    assert (again.enrol, again.move, again.update_details, again.leave, again.unchanged) == ([], [], [], [], 3)


def test_changes_moves_and_leavers_are_applied():
    rows, _ = parse_mis_csv(csv(*ROWS), TODAY)
    roster = _roster(rows)
    header = HEADER + ",Leaving Date"
    changed, _ = parse_mis_csv(csv(
        "A12345678901B,Smith-Jones,Jo,03/04/2017,M,4,4B,",  # new surname
        "B12345678901C,Jones,Al,05/06/2017,F,4,4A,",  # moved class
        "C12345678901D,O'Neill,Sam,21/12/2016,X,4,4A,20/11/2026",  # left
        "E12345678901F,New,Pupil,01/09/2017,F,4,4A,",  # joined
        header=header,
    ), TODAY)
    plan = plan_import(changed, roster, whole_roll=False, today=TODAY)
    ids = {upn: entry.pupil_id for upn, entry in roster.items()}
    assert [(p, d.legal_surname) for p, d in plan.update_details] == [(ids["A12345678901B"], "Smith-Jones")]
    assert plan.move == [(ids["B12345678901C"], "4A")]
    assert plan.leave == [(ids["C12345678901D"], date(2026, 11, 20))]
    assert [r.details.upn for r in plan.enrol] == ["E12345678901F"]


def test_with_the_whole_roll_a_pupil_missing_from_the_file_has_left_and_without_it_has_not():
    rows, _ = parse_mis_csv(csv(*ROWS), TODAY)
    roster = _roster(rows)
    fewer = rows[:2]
    assert plan_import(fewer, roster, whole_roll=True, today=TODAY).leave == [(roster["C12345678901D"].pupil_id, TODAY)]
    assert plan_import(fewer, roster, whole_roll=False, today=TODAY).leave == []


def test_a_pupil_who_left_and_is_back_on_the_file_rejoins():
    rows, _ = parse_mis_csv(csv(*ROWS), TODAY)
    roster = _roster(rows)
    upn = "A12345678901B"
    roster[upn] = RosterEntry(roster[upn].pupil_id, roster[upn].details, None, on_roll=False)
    plan = plan_import(rows, roster, whole_roll=False, today=TODAY)
    assert [pupil for pupil, _ in plan.rejoin] == [roster[upn].pupil_id]


def test_pupil_details_name_the_child_by_preferred_names_first():
    details = PupilDetails("A12345678901B", "Smith", "Joanna", date(2017, 4, 3), "F", "4", None, "Jo")
    assert details.display_name == "Jo Smith"
