"""The DfE published-statistics rule, for every figure that leaves an academy.

`suppress(table)` takes a table of counts (rows × columns) and returns it ready to publish:

- primary suppression: a count of 1 to 5 becomes "c" (0 is published: it identifies no one);
- secondary suppression: the row and column totals (and the grand total) are published, so a row
  or column with exactly one hidden figure would give it away by subtraction; another figure of
  it — the smallest non-zero one, else the smallest — is hidden too, until no row or column (the
  totals row and column included) hides exactly one;
- totals rounded to the nearest 10 (halves up); a total of 1 to 5 is "c" like any count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

C = "c"
Cell = int | str


@dataclass(frozen=True)
class Published:
    cells: list[list[Cell]]
    row_totals: list[Cell]
    column_totals: list[Cell]
    total: Cell


def round_to_10(n: int) -> int:
    return (n + 5) // 10 * 10


def suppress(counts: Sequence[Sequence[int]]) -> Published:
    rows = len(counts)
    cols = len(counts[0]) if rows else 0
    if any(len(row) != cols for row in counts) or any(v < 0 for row in counts for v in row):
        raise ValueError("counts must be a rectangle of non-negative integers")
    # The full grid: the cells, each row's total in the last column, the column totals in the last row.
    grid = [[*row, sum(row)] for row in counts]
    grid.append([sum(counts[r][c] for r in range(rows)) for c in range(cols)] + [sum(map(sum, counts))])
    hidden = {(r, c) for r in range(rows + 1) for c in range(cols + 1) if 1 <= grid[r][c] <= 5}

    # Each row r: grid[r][0..cols-1] sum to grid[r][cols]; each column likewise over the rows.
    lines = [[(r, c) for c in range(cols + 1)] for r in range(rows + 1)]
    lines += [[(r, c) for r in range(rows + 1)] for c in range(cols + 1)]
    changed = True
    while changed:
        changed = False
        for line in lines:
            if sum(cell in hidden for cell in line) != 1:
                continue
            # Hide another inner figure of the line (not its total): the smallest non-zero first.
            candidates = [cell for cell in line[:-1] if cell not in hidden] or [line[-1]] * (line[-1] not in hidden)
            if not candidates:
                continue
            hidden.add(min(candidates, key=lambda cell: (grid[cell[0]][cell[1]] == 0, grid[cell[0]][cell[1]])))
            changed = True

    def out(r: int, c: int, is_total: bool) -> Cell:
        if (r, c) in hidden:
            return C
        return round_to_10(grid[r][c]) if is_total else grid[r][c]

    return Published(
        cells=[[out(r, c, False) for c in range(cols)] for r in range(rows)],
        row_totals=[out(r, cols, True) for r in range(rows)],
        column_totals=[out(rows, c, True) for c in range(cols)],
        total=out(rows, cols, True),
    )
