"""Market time for the simulator (pipeline/dev/simulator.py: MarketClock, Session)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.dev.simulator import MarketClock, Session

SP = ZoneInfo("America/Sao_Paulo")  # UTC-03:00, no DST since 2019
B3 = Session.parse("10:00-17:00", SP)


def test_without_a_session_time_advances_by_the_interval() -> None:
    clock = MarketClock(datetime(2026, 1, 5, 13, tzinfo=UTC), timedelta(milliseconds=250))
    assert [clock.next() for _ in range(3)] == [
        datetime(2026, 1, 5, 13, tzinfo=UTC) + timedelta(milliseconds=250 * i) for i in range(3)
    ]


def test_a_session_keeps_ticks_within_its_hours_and_skips_weekends() -> None:
    # Friday 2026-01-09 16:59:00 local: one tick left, then Monday's open.
    clock = MarketClock(datetime(2026, 1, 9, 16, 59, tzinfo=SP), timedelta(seconds=30), B3)
    got = [clock.next().astimezone(SP) for _ in range(3)]
    assert got == [
        datetime(2026, 1, 9, 16, 59, tzinfo=SP),
        datetime(2026, 1, 9, 16, 59, 30, tzinfo=SP),
        datetime(2026, 1, 12, 10, 0, tzinfo=SP),
    ]


@pytest.mark.parametrize(
    ("start", "first"),
    [
        (datetime(2026, 1, 5, 8, 0, tzinfo=SP), datetime(2026, 1, 5, 10, 0, tzinfo=SP)),  # before the open
        (datetime(2026, 1, 5, 17, 0, tzinfo=SP), datetime(2026, 1, 6, 10, 0, tzinfo=SP)),  # at the close
        (datetime(2026, 1, 10, 12, 0, tzinfo=SP), datetime(2026, 1, 12, 10, 0, tzinfo=SP)),  # a Saturday
        (datetime(2026, 1, 5, 12, 30, tzinfo=SP), datetime(2026, 1, 5, 12, 30, tzinfo=SP)),  # inside
    ],
)
def test_a_start_outside_the_session_moves_to_the_next_open(start: datetime, first: datetime) -> None:
    assert MarketClock(start, timedelta(seconds=1), B3).next() == first


def test_one_session_of_ticks_fills_it() -> None:
    per_symbol = 3000
    interval = B3.length / per_symbol
    opening = B3.last_complete_before(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))  # a Tuesday, before the open
    assert opening.astimezone(SP) == datetime(2026, 11, 30, 10, 0, tzinfo=SP)  # Monday's session
    clock = MarketClock(opening, interval, B3)
    ticks = [clock.next() for _ in range(per_symbol)]
    assert ticks[0] == opening and ticks[-1] == B3.closing(opening) - interval
    assert B3.last_complete_before(datetime(2026, 11, 30, 18, 0, tzinfo=SP)) == opening  # after the close
    assert (
        B3.last_complete_before(datetime(2026, 11, 30, 16, 0, tzinfo=SP)).astimezone(SP).day == 27
    )  # Friday


@pytest.mark.parametrize("hours", ["10-17", "10:00-9:00", "25:00-26:00", "10:00-10:00", "10:60-11:00"])
def test_bad_session_hours(hours: str) -> None:
    with pytest.raises(ValueError):
        Session.parse(hours, SP)
    with pytest.raises(ValueError):
        MarketClock(datetime.now(UTC), timedelta(0))
