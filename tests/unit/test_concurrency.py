"""Unit tests for pipeline.ingest.concurrency.ConcurrencyTuner: write concurrency is found by measuring.

The tuner is driven by a simulated server: writes of 1,000 documents start whenever the tuner's limit leaves a
slot free, and each takes as long as the server's throughput at that many writes in flight says (n writes at
once at R documents/s: each takes n x 1,000 / R seconds). A write begun before the limit changed finishes at
its old speed, as on a real server.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from pipeline.ingest.concurrency import ConcurrencyTuner

BATCH = 1000


class Server:
    def __init__(
        self,
        rate_at: Callable[[int, float], float],
        noise: float = 0.0,
        seed: int = 0,
        saturated: bool = True,
    ) -> None:
        self.rate_at = rate_at  # (writes in flight, time) -> documents/s
        self.noise = noise
        self.rng = random.Random(seed)
        self.saturated = saturated
        self.now = 0.0
        self.in_flight: list[tuple[float, float]] = []  # (finish, started)
        self.seconds_at: dict[int, float] = {}  # time spent at each tuner limit

    def run(self, tuner: ConcurrencyTuner, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            while len(self.in_flight) < tuner.limit:
                n = len(self.in_flight) + 1
                jitter = 1 + self.rng.uniform(-self.noise, self.noise)
                duration = n * BATCH / (self.rate_at(n, self.now) * jitter)
                heapq.heappush(self.in_flight, (self.now + duration, self.now))
            finish, started = heapq.heappop(self.in_flight)
            self.seconds_at[tuner.limit] = self.seconds_at.get(tuner.limit, 0.0) + finish - self.now
            self.now = finish
            tuner.record(self.now, BATCH, self.saturated, started=started)


def steady(rates: dict[int, float]) -> Callable[[int, float], float]:
    return lambda n, _t: rates[n]


def test_a_server_that_rewards_concurrency_gets_more_writes_up_to_the_maximum() -> None:
    tuner = ConcurrencyTuner(max_limit=4)
    Server(lambda n, _t: 10_000 * n).run(tuner, 30)
    assert tuner.limit == 4


def test_a_single_threaded_server_stays_at_one_write_and_trials_cost_little() -> None:
    tuner = ConcurrencyTuner(max_limit=4)
    server = Server(steady({1: 3_800, 2: 3_000, 3: 2_800, 4: 2_600}))
    server.run(tuner, 120)
    assert tuner.limit == 1 and tuner.kept == 1
    assert tuner.rates[2] < tuner.rates[1]  # it did try, and measured
    assert server.seconds_at[1] / 120 > 0.9


def test_it_settles_where_gains_stop() -> None:
    tuner = ConcurrencyTuner(max_limit=8)
    Server(steady({1: 9_000, 2: 11_000, 3: 10_500, 4: 10_000})).run(tuner, 120)
    assert tuner.limit == 2
    assert tuner.kept == 2  # what the writer logs: the outcome of the trials, not their switches


def test_a_gain_below_the_threshold_is_not_worth_a_write() -> None:
    tuner = ConcurrencyTuner(max_limit=4, min_gain=1.08)
    Server(steady({1: 10_000, 2: 10_500, 3: 10_600, 4: 10_600})).run(tuner, 60)
    assert tuner.limit == 1


def test_a_server_that_speeds_up_is_not_mistaken_for_a_gain() -> None:
    # Concurrency changes nothing, but the server gets 5% faster every second (warming up): a trial that
    # compared a later window with an earlier one would credit the extra write with that.
    tuner = ConcurrencyTuner(max_limit=4)
    server = Server(lambda _n, t: 5_000 * 1.05**t)
    server.run(tuner, 25)
    assert tuner.limit == 1
    assert server.seconds_at.get(2, 0.0) < 10


def test_a_gain_is_found_on_a_server_that_slows_down_as_it_fills() -> None:
    # Two writes at once pay 20%, but the server loses 6% per second (a growing index): the later window
    # alone would look no better than the earlier one.
    tuner = ConcurrencyTuner(max_limit=4)
    Server(lambda n, t: {1: 10_000, 2: 12_000, 3: 11_500, 4: 11_000}[n] * 0.94**t).run(tuner, 20)
    assert tuner.limit == 2


def test_noisy_writes_still_give_the_right_answer() -> None:
    # Every write's speed varies by up to ±15%: over seeds, the tuner ends where the server is fastest.
    for seed in range(20):
        ferret = ConcurrencyTuner(max_limit=4)
        Server(steady({1: 9_000, 2: 11_000, 3: 10_000, 4: 9_500}), noise=0.15, seed=seed).run(ferret, 40)
        assert ferret.limit == 2, seed
        single = ConcurrencyTuner(max_limit=4)
        Server(steady({1: 3_800, 2: 3_000, 3: 2_800, 4: 2_600}), noise=0.15, seed=seed).run(single, 40)
        assert single.limit == 1, seed


def test_it_steps_down_when_the_server_stops_rewarding_concurrency() -> None:
    tuner = ConcurrencyTuner(max_limit=4, hold_s=3)
    rates = {n: 10_000.0 * n for n in range(1, 5)}
    server = Server(lambda n, _t: rates[n])
    server.run(tuner, 20)
    assert tuner.limit == 4
    rates.update({1: 10_000, 2: 8_000, 3: 6_000, 4: 5_000})  # now every extra write costs
    server.run(tuner, 120)
    assert tuner.limit == 1


def test_unsaturated_windows_are_not_measurements() -> None:
    tuner = ConcurrencyTuner(max_limit=4)
    # A quiet stream: the writer is waiting for batches, whatever the server could do.
    Server(lambda n, _t: 10_000 * n, saturated=False).run(tuner, 30)
    assert tuner.limit == 1 and tuner.rates == {}


def test_a_write_begun_under_the_old_limit_does_not_open_the_new_window() -> None:
    tuner = ConcurrencyTuner(max_limit=2, window_s=1.0, min_writes=1)
    now = 0.0
    for _ in range(3):  # the base window (limit 1): 1 s of writes
        tuner.record(now, BATCH, True, started=now - 0.5)
        now += 0.5
    assert tuner.limit == 2
    switched = now - 0.5
    # A write begun at 1 write in flight finishes late: it is not the start of the measurement at 2.
    tuner.record(now + 5.0, BATCH, True, started=switched - 0.1)
    assert tuner._window_start is None
    tuner.record(now + 5.2, BATCH, True, started=switched + 0.1)
    assert tuner._window_start == now + 5.2


def test_a_fixed_maximum_of_one_never_changes() -> None:
    tuner = ConcurrencyTuner(max_limit=1)
    Server(lambda n, _t: 10_000 * n).run(tuner, 10)
    assert tuner.limit == 1
