"""The intervention report's child, as ratings of the sample framework's 45 Being statements.

With 15 statements per need and 0-3 points each, a need's % moves in steps of 2.2, so the
report's rounded need figures (52, 28, 28 …) are met as closely as the scale allows (51.1, 28.9,
28.9 …) and its strand figures exactly once rounded: 36, 44 and 56.
"""

from __future__ import annotations

from shared.events.assessment import Level

POINTS = [Level.RARELY, Level.EMERGING, Level.DEVELOPING, Level.SECURE]
NEEDS = {"being.safe": range(1, 16), "being.special": range(16, 31), "being.needs-met": range(31, 46)}

# Points scored per need (of 45) at each action plan.
ACTION_PLANS = {
    1: {"being.safe": 23, "being.special": 13, "being.needs-met": 13},
    2: {"being.safe": 27, "being.special": 19, "being.needs-met": 14},
    3: {"being.safe": 31, "being.special": 26, "being.needs-met": 19},
}
REPORT_NEED_PERCENTS = {
    1: {"being.safe": 52, "being.special": 28, "being.needs-met": 28},
    2: {"being.safe": 59, "being.special": 43, "being.needs-met": 30},
    3: {"being.safe": 70, "being.special": 57, "being.needs-met": 41},
}
REPORT_STRAND_PERCENTS = {1: 36, 2: 44, 3: 56}
# "Recommended areas still needing focus" after the third action plan.
REPORT_FOCUS = [3, 8, 12, 25, 29, 30, 35, 36, 37, 38, 39, 40, 44]


def _spread(numbers: list[int], points: int) -> dict[int, Level]:
    whole, extra = divmod(points, len(numbers))
    return {n: POINTS[whole + (1 if i < extra else 0)] for i, n in enumerate(numbers)}


def _plan_three() -> dict[int, Level]:
    """AP3 with exactly the report's focus statements at Rarely or Emerging."""
    e, r, d, s = Level.EMERGING, Level.RARELY, Level.DEVELOPING, Level.SECURE
    levels: dict[int, Level] = {}
    # Being Safe, 31: 3, 8, 12 Emerging (3); eight Developing (16) and four Secure (12).
    others = [n for n in range(1, 16) if n not in (3, 8, 12)]
    levels.update({3: e, 8: e, 12: e})
    levels.update({n: (d if i < 8 else s) for i, n in enumerate(others)})
    # Being Special, 26: 25 and 29 Emerging, 30 Rarely (2); twelve Developing (24).
    levels.update({25: e, 29: e, 30: r})
    levels.update({n: d for n in range(16, 31) if n not in (25, 29, 30)})
    # Having Needs Met, 19: 35, 36, 37 Emerging and 38, 39, 40, 44 Rarely (3); eight Developing (16).
    levels.update({35: e, 36: e, 37: e, 38: r, 39: r, 40: r, 44: r})
    levels.update({n: d for n in range(31, 46) if n not in (35, 36, 37, 38, 39, 40, 44)})
    return levels


def levels_at(plan: int) -> dict[str, Level]:
    """The level of each Being statement (by statement id) at an action plan."""
    if plan == 3:
        by_number = _plan_three()
    else:
        by_number = {}
        for need, numbers in NEEDS.items():
            by_number.update(_spread(list(numbers), ACTION_PLANS[plan][need]))
    return {f"being.{n}": level for n, level in sorted(by_number.items())}
