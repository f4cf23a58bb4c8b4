"""Unit tests for pipeline.ingest.concurrency.ConcurrencyTuner: write concurrency is found by measuring."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.ingest.concurrency import ConcurrencyTuner


def drive(
    tuner: ConcurrencyTuner, rate_at: Callable[[int], float], seconds: float, saturated: bool = True
) -> None:
    """Completions of 100-document batches at the rate the 'server' gives for the tuner's current limit."""
    now = 0.0
    while now < seconds:
        now += 100 / rate_at(tuner.limit)
        tuner.record(now, 100, saturated)


def test_a_server_that_rewards_concurrency_gets_more_writes_up_to_the_maximum() -> None:
    tuner = ConcurrencyTuner(max_limit=4, window_s=1.0)
    drive(tuner, lambda n: 10_000 * n, 30)
    assert tuner.limit == 4


def test_a_single_threaded_server_stays_at_one_write() -> None:
    tuner = ConcurrencyTuner(max_limit=4, window_s=1.0)
    drive(tuner, {1: 10_000, 2: 5_600, 3: 4_000, 4: 3_600}.__getitem__, 60)
    assert tuner.limit == 1
    assert tuner.rates[2] < tuner.rates[1]  # it did try, and measured


def test_it_settles_where_gains_stop() -> None:
    tuner = ConcurrencyTuner(max_limit=8, window_s=1.0)
    drive(tuner, {1: 10_000, 2: 14_000, 3: 14_200, 4: 13_000}.get, 120)  # type: ignore[arg-type]
    assert tuner.limit == 2


def test_a_gain_below_the_threshold_is_not_worth_a_write() -> None:
    tuner = ConcurrencyTuner(max_limit=4, window_s=1.0, min_gain=1.08)
    drive(tuner, {1: 10_000, 2: 10_500, 3: 10_600, 4: 10_600}.__getitem__, 60)
    assert tuner.limit == 1


def test_it_steps_down_when_the_server_stops_rewarding_concurrency() -> None:
    tuner = ConcurrencyTuner(max_limit=4, window_s=1.0, hold_windows=3)
    drive(tuner, lambda n: 10_000 * n, 20)
    assert tuner.limit == 4
    # The server changes: now every extra write costs.
    slow = {1: 10_000, 2: 8_000, 3: 6_000, 4: 5_000}
    now = 20.0
    for _ in range(6_000):
        now += 100 / slow[tuner.limit]
        tuner.record(now, 100, True)
    assert tuner.limit == 1


def test_unsaturated_windows_are_not_measurements() -> None:
    tuner = ConcurrencyTuner(max_limit=4, window_s=1.0)
    drive(tuner, lambda n: 1_000, 30, saturated=False)  # a quiet stream: the writer is waiting for batches
    assert tuner.limit == 1 and tuner.rates == {}


def test_a_fixed_maximum_of_one_never_changes() -> None:
    tuner = ConcurrencyTuner(max_limit=1, window_s=1.0)
    drive(tuner, lambda n: 10_000 * n, 10)
    assert tuner.limit == 1
