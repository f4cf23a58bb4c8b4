"""Parsing and validation of query parameters, before any I/O. Every value that reaches MongoDB comes from
here as a typed value: a symbol string matching the symbol pattern, aware datetimes, an interval from a
fixed table, a time zone name that zoneinfo knows (never a `$`-string, so never a field path or operator)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.core.codec import SYMBOL_PATTERN
from pipeline.read.query.errors import (
    InvalidInterval,
    InvalidRange,
    InvalidSymbol,
    InvalidTime,
    InvalidTimezone,
    QueryError,
)

DEFAULT_SYMBOL_PATTERN = SYMBOL_PATTERN
Interval = Literal["1m", "5m", "15m", "1h", "1d"]
# Interval name -> ($dateTrunc unit, binSize). Bars are aligned to UTC unless an alignment zone is given.
INTERVALS: dict[Interval, tuple[str, int]] = {
    "1m": ("minute", 1),
    "5m": ("minute", 5),
    "15m": ("minute", 15),
    "1h": ("hour", 1),
    "1d": ("day", 1),
}
assert tuple(INTERVALS) == get_args(Interval)


def normalize_symbol(symbol: object, pattern: str = DEFAULT_SYMBOL_PATTERN) -> str:
    """Uppercase a user-supplied symbol; reject anything that is not a plain symbol string."""
    if not isinstance(symbol, str):
        raise InvalidSymbol(f"symbol must be a string, got {type(symbol).__name__}")
    text = symbol.strip()
    if not re.fullmatch(pattern, text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidSymbol(f"invalid symbol {shown!r}: symbols match {pattern}")
    return text.upper()


def _utc(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidRange(f"{name} must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds")


def check_range(start: object, end: object) -> tuple[datetime | None, datetime | None]:
    """Bounds as aware UTC datetimes (naive means UTC); raises InvalidRange if start > end."""
    lo, hi = _utc(start, "start"), _utc(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRange(f"invalid range: from {iso(lo)} is after to {iso(hi)}")
    return lo, hi


def check_nonempty_range(start: object, end: object) -> tuple[datetime | None, datetime | None]:
    """check_range, and an empty range (from = to) refused too: what the CLI and the HTTP API accept from a
    user, who asked for something (the library itself returns nothing for an empty range)."""
    lo, hi = check_range(start, end)
    if lo is not None and hi is not None and lo == hi:
        raise InvalidRange(
            f"invalid range: from {iso(lo)} is not before to (ranges are half-open, from <= ts < to)"
        )
    return lo, hi


def check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise QueryError(f"limit must be >= 0, got {limit}")
    return limit


def check_interval(interval: object) -> Interval:
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise InvalidInterval(f"invalid interval {interval!r}: use one of {', '.join(INTERVALS)}")
    return interval


def interval_delta(interval: str) -> timedelta:
    """The nominal length of a bar (a 1d bar aligned to a zone with DST can be 23 or 25 hours long)."""
    unit, size = INTERVALS[check_interval(interval)]
    per_unit = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
    return per_unit[unit] * size


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO-8601 (a naive time means UTC; a date alone means its midnight UTC), `now`, or relative to now:
    -90s, -15m, -1h, -2d, -1w. Returns an aware UTC datetime."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value)
    try:
        if match:
            return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise InvalidTime(
            f"invalid time {text!r}: use ISO-8601 (2026-01-05T13:00:00, naive = UTC; "
            "2026-01-05T10:00:00-03:00) or a relative time (-15m, -1h, -2d)"
        ) from None
    except OverflowError:  # -99999999999w, or year 1 at +01:00: before year 1 or after 9999
        raise InvalidTime(f"invalid time {text!r}: outside the years 1 to 9999 (UTC)") from None


# IANA names: Region/City, Etc/GMT+3, UTC. Never a '$' (a field path in an aggregation expression).
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")


def parse_zone(name: str) -> ZoneInfo:
    unknown = InvalidTimezone(
        f"unknown time zone {name!r}: use an IANA name such as UTC or America/Sao_Paulo"
    )
    if not isinstance(name, str) or not _ZONE_NAME.match(name):
        raise unknown
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise unknown from None


def alignment_zone(zone: str | tzinfo | None) -> str | None:
    """The IANA name to align bars to, or None for UTC (the default). Accepts a name or a ZoneInfo."""
    if zone is None or zone is UTC:
        return None
    name = zone.key if isinstance(zone, ZoneInfo) else zone
    if not isinstance(name, str):
        raise InvalidTimezone(f"cannot align bars to {zone!r}: give an IANA zone name or a ZoneInfo")
    parse_zone(name)
    return None if name in ("UTC", "Etc/UTC") else name
