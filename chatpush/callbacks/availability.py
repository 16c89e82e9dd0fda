"""Availability (docs/callbacks.md §3.6): time slots of ``_request_time_bucket`` minutes, aligned to
the hour in the service's ``_timezone``, open per ``_open_hours``; a slot's free places are
``_max_request_by_time_bucket`` less the open scheduled callbacks due in it."""

from __future__ import annotations

import zoneinfo
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection

from chatpush.callbacks.model import format_time
from chatpush.config import ServiceOptions
from chatpush.open_hours import is_open, parse_open_hours
from chatpush.store import callbacks as store

MAX_DAYS = 31
MAX_SLOTS = 1000


@dataclass(frozen=True, slots=True)
class SlotRequest:
    start_ms: int
    end_ms: int
    max_slots: int = 100
    report_busy: bool = False


def _slot_start(options: ServiceOptions, at_ms: int) -> datetime:
    """The local start of the slot holding ``at_ms``."""
    zone = zoneinfo.ZoneInfo(options.cb_timezone)
    local = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(zone)
    bucket = options.cb_request_time_bucket_min
    minute = (local.minute // bucket) * bucket if bucket < 60 else 0
    return local.replace(minute=minute, second=0, microsecond=0)


def _slots(options: ServiceOptions, start_ms: int, end_ms: int) -> list[tuple[int, int, bool]]:
    """(start ms, end ms, open) of each slot from the one holding ``start_ms`` to ``end_ms``."""
    ranges = parse_open_hours(options.cb_open_hours) if options.cb_open_hours else None
    step = timedelta(minutes=options.cb_request_time_bucket_min)
    local = _slot_start(options, start_ms)
    found: list[tuple[int, int, bool]] = []
    while True:
        begin = int(local.timestamp() * 1000)
        if begin >= end_ms or len(found) >= MAX_DAYS * 1440:
            return found
        after = (local.astimezone(UTC) + step).astimezone(local.tzinfo)
        open_ = ranges is None or is_open(ranges, local.weekday(), local.hour * 60 + local.minute)
        found.append((begin, int(after.timestamp() * 1000), open_))
        local = after


def availability(
    conn: Connection, options: ServiceOptions, service_name: str, request: SlotRequest
) -> dict[str, int]:
    """``{slot start: free places}`` of the open slots with room (all open slots with
    ``report_busy``), at most ``max_slots``."""
    maximum = options.cb_max_request_by_time_bucket or 0
    slots = _slots(options, request.start_ms, request.end_ms)
    if not slots:
        return {}
    taken = Counter[int]()
    starts = [begin for begin, _end, _open in slots]
    for desired in store.desired_times_between(conn, service_name, slots[0][0], slots[-1][1]):
        for begin, end, _open in slots:  # few slots per call: a scan is fine
            if begin <= desired < end:
                taken[begin] += 1
                break
    del starts
    answer: dict[str, int] = {}
    for begin, _end, open_ in slots:
        if not open_:
            continue
        free = max(0, maximum - taken[begin])
        if free > 0 or request.report_busy:
            answer[format_time(begin)] = free
            if len(answer) >= request.max_slots:
                break
    return answer


def free_in_slot(
    conn: Connection, options: ServiceOptions, service_name: str, desired_ms: int
) -> int:
    """Free places in the slot of ``desired_ms`` (0 if it is closed)."""
    begin, end, open_ = _slots(options, desired_ms, desired_ms + 1)[0]
    if not open_:
        return 0
    taken = len(store.desired_times_between(conn, service_name, begin, end))
    return max(0, (options.cb_max_request_by_time_bucket or 0) - taken)


def next_free(
    conn: Connection,
    options: ServiceOptions,
    service_name: str,
    from_ms: int,
    now_ms: int,
    count: int,
) -> dict[str, int]:
    """The next ``count`` slots with room from ``from_ms`` (not before now), within 31 days."""
    start = max(from_ms, now_ms)
    request = SlotRequest(start, start + MAX_DAYS * 86_400_000, max_slots=count)
    return availability(conn, options, service_name, request)
