"""Opening hours as a callback service writes them (``_open_hours``): ``"mon-fri 08:00-18:00"``,
several ranges separated by ``;`` (``"mon-fri 08:00-18:00; sat 09:00-12:00"``), local time of
the service's ``_timezone``. A base module: the settings check them at start, the callbacks'
availability reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(
    r"^(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))?\s+"
    r"(?P<h1>\d{2}):(?P<m1>\d{2})-(?P<h2>\d{2}):(?P<m2>\d{2})$"
)


@dataclass(frozen=True, slots=True)
class OpenRange:
    days: frozenset[int]
    """Weekdays, Monday 0."""
    start_min: int
    """Minutes after midnight, inclusive."""
    end_min: int
    """Minutes after midnight, exclusive (24:00 = 1440)."""


def parse_open_hours(spec: str) -> tuple[OpenRange, ...]:
    """The ranges of ``spec``; ValueError naming what is wrong."""
    ranges = []
    for part in spec.split(";"):
        text = " ".join(part.strip().lower().split())
        match = _RANGE.match(text)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not a range such as 'mon-fri 08:00-18:00' "
                "or 'sat 09:00-12:00'"
            )
        first, last = match["first"], match["last"] or match["first"]
        if first not in DAYS or last not in DAYS:
            raise ValueError(f"{part.strip()!r}: days are {', '.join(DAYS)}")
        start_day, end_day = DAYS.index(first), DAYS.index(last)
        days = (
            range(start_day, end_day + 1)
            if start_day <= end_day
            else [*range(start_day, 7), *range(0, end_day + 1)]
        )
        start = int(match["h1"]) * 60 + int(match["m1"])
        end = int(match["h2"]) * 60 + int(match["m2"])
        if int(match["m1"]) > 59 or int(match["m2"]) > 59 or start >= end or end > 1440:
            raise ValueError(f"{part.strip()!r}: the times must be 00:00-24:00, start before end")
        ranges.append(OpenRange(frozenset(days), start, end))
    return tuple(ranges)


def is_open(ranges: tuple[OpenRange, ...], weekday: int, minute_of_day: int) -> bool:
    return any(
        weekday in entry.days and entry.start_min <= minute_of_day < entry.end_min
        for entry in ranges
    )
