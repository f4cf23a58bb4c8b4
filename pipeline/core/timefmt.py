"""Time conventions shared by both paths: stored times are UTC; text times are ISO-8601 with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_utc(ts: datetime) -> str:
    """2026-11-25T13:00:00.123Z (milliseconds: what a BSON date keeps). A naive datetime means UTC."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def from_epoch_ms(ms: int | float) -> datetime:
    """Epoch milliseconds -> aware UTC datetime (raises OverflowError outside datetime's range)."""
    return EPOCH + timedelta(milliseconds=ms)


def millis_utc(ts: datetime) -> int:
    """Epoch milliseconds of a UTC datetime (a naive one means UTC, as in BSON)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // timedelta(milliseconds=1)
