"""How many bulk writes to keep in flight: measured, not assumed (pure: the caller passes the clock).

Servers differ: a single-threaded one is fastest with one write at a time (a second one only makes the two
compete), a replica set or a sharded cluster writes several at once. With `batch.write_concurrency: auto`
the writer starts at one and climbs: it measures documents per second over a window at the current limit,
tries one more, keeps it only if throughput rises by at least `min_gain`, otherwise steps back and holds for
a while before probing again (servers and loads change). Windows in which the writer was not saturated (no
batch was waiting for a write slot) say nothing about the server and are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConcurrencyTuner:
    max_limit: int
    window_s: float = 2.0
    min_gain: float = 1.08
    # Windows to stay at a limit after a probe failed, before trying one more again.
    hold_windows: int = 15
    limit: int = 1
    # Measured rate per limit (documents/s), the most recent window at each.
    rates: dict[int, float] = field(default_factory=dict)
    _window_start: float | None = None
    _window_docs: int = 0
    _window_saturated: bool = True
    _probing_from: int | None = None
    _hold: int = 0
    _down_next: bool = True  # after a hold, probe down and up in turn
    _climbing: bool = True

    def record(self, now: float, documents: int, saturated: bool) -> int:
        """A batch of `documents` finished; `saturated`: another batch was waiting for a write slot.
        Returns the limit to use from now on."""
        if self.max_limit <= 1:
            return self.limit
        if self._window_start is None:
            self._start(now)
            return self.limit
        self._window_docs += documents
        self._window_saturated = self._window_saturated and saturated
        elapsed = now - self._window_start
        if elapsed < self.window_s:
            return self.limit
        if self._window_saturated:
            self._decide(self._window_docs / elapsed)
        self._start(now)
        return self.limit

    def _start(self, now: float) -> None:
        self._window_start = now
        self._window_docs = 0
        self._window_saturated = True

    def _decide(self, rate: float) -> None:
        self.rates[self.limit] = rate
        if self._probing_from is not None:
            base = self.rates.get(self._probing_from, 0.0)
            going_up = self.limit > self._probing_from
            # Up: keep the extra write only if it pays. Down: keep one write fewer unless it costs.
            keep = rate >= base * self.min_gain if going_up else rate * self.min_gain >= base
            if not keep:
                self.limit = self._probing_from
            self._probing_from = None
            self._climbing = keep and going_up  # a climb that paid goes on at once
            if not self._climbing:
                self._hold = self.hold_windows
            return
        if self._hold > 0:
            self._hold -= 1
            return
        if not self._climbing:
            self._down_next = not self._down_next
        if self._down_next and not self._climbing and self.limit > 1:
            self._probing_from, self.limit = self.limit, self.limit - 1
        elif self.limit < self.max_limit:
            self._probing_from, self.limit = self.limit, self.limit + 1
        self._climbing = False
