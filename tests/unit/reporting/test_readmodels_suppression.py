"""The DfE rule: counts 1-5 hidden, no hidden count recoverable from published totals, totals to 10."""

from __future__ import annotations

import random

import pytest

from services.reporting.readmodels.suppression import C, round_to_10, suppress


def _lines(p):
    """Every row and column of the published grid, totals included, as lists of cells."""
    grid = [[*row, total] for row, total in zip(p.cells, p.row_totals, strict=True)] + [[*p.column_totals, p.total]]
    return grid + [list(col) for col in zip(*grid, strict=True)]


def test_small_counts_are_hidden_and_totals_rounded():
    p = suppress([[3, 12, 40], [20, 17, 9]])
    assert p.cells[0][0] == C
    assert all(v == C or not 1 <= v <= 5 for row in p.cells for v in row)
    assert p.total == 100  # 101 to the nearest 10
    assert p.row_totals[1] == 50  # 46
    assert p.column_totals[2] == 50  # 49


def test_a_lone_hidden_cell_gets_a_partner_in_its_row_and_column():
    p = suppress([[3, 12, 40], [20, 17, 9]])
    # Row 0 hides 3, so its smallest other count, 12, goes too; column 0 then hides 20.
    assert p.cells[0] == [C, C, 40]
    assert p.cells[1][0] == C and p.cells[1][1] == C
    for line in _lines(p):
        assert sum(v == C for v in line) != 1


def test_zeros_are_published_and_nothing_hidden_without_need():
    p = suppress([[0, 10], [7, 30]])
    assert p.cells == [[0, 10], [7, 30]] and p.total == 50 and p.row_totals == [10, 40]


def test_small_totals_are_hidden_too():
    p = suppress([[2, 0], [0, 0]])
    assert p.cells[0][0] == C and p.row_totals[0] == C and p.total == C
    for line in _lines(p):
        assert sum(v == C for v in line) != 1


@pytest.mark.parametrize("seed", range(200))
def test_random_tables_never_give_a_hidden_count_away(seed):
    rng = random.Random(seed)
    counts = [[rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 11, 25, 60]) for _ in range(rng.randint(1, 6))]]
    counts += [[rng.choice([0, 1, 3, 5, 7, 9, 14, 30]) for _ in counts[0]] for _ in range(rng.randint(0, 6))]
    p = suppress(counts)
    for row, published in zip(counts, p.cells, strict=True):
        for true, shown in zip(row, published, strict=True):
            assert shown in (C, true)
            assert not (1 <= true <= 5 and shown != C)
    for line in _lines(p):
        assert sum(v == C for v in line) != 1
    for total in [*p.row_totals, *p.column_totals, p.total]:
        assert total == C or total % 10 == 0


def test_rounding_is_to_the_nearest_ten_halves_up():
    assert [round_to_10(n) for n in (0, 6, 14, 15, 24, 95)] == [0, 10, 10, 20, 20, 100]


def test_ragged_or_negative_tables_are_refused():
    with pytest.raises(ValueError, match="a rectangle of non-negative integers"):
        suppress([[1, 2], [3]])
    with pytest.raises(ValueError, match="a rectangle of non-negative integers"):
        suppress([[-1]])
