"""How many bulk writes to keep in flight: measured, not assumed (pure: the caller passes the clock).

Servers differ: a single-threaded one is fastest with one write at a time (a second one only makes the two
compete), one that converts documents on several threads before a single-writer store (FerretDB over
SQLite) may gain from two, a replica set or a sharded cluster from several. With
`batch.write_concurrency: auto` the writer starts at one and runs trials: the current limit against one
more (or, after a failed trial, one fewer), keeping the candidate only if throughput rises by at least
`min_gain` (one fewer: unless it costs that much). Then it holds for a while before the next trial (servers
and loads change).

A trial measures the two limits in the order A B B A, one window each. A server's speed drifts within
seconds (it slows as its collections and indexes grow; a shared machine's neighbours come and go), and
comparing a window with the one before it mistakes that drift for the effect of the limit; in A B B A a
steady drift weighs on both sides alike. A window starts with the first write begun after the limit
changed (writes begun before ran under the old limit) and lasts at least `window_s` and `min_writes`
completed writes. Windows in which the writer was not saturated (no batch waiting for a write slot) say
nothing about the server: the trial is abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Trial:
    base: int
    candidate: int
    # The limits still to measure, one window each: A B B A with A the base.
    schedule: list[int]
    docs: dict[int, int] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)

    def rate(self, limit: int) -> float:
        return self.docs.get(limit, 0) / self.seconds[limit] if self.seconds.get(limit) else 0.0

    def keeps_candidate(self, min_gain: float) -> bool:
        base, candidate = self.rate(self.base), self.rate(self.candidate)
        if self.candidate > self.base:  # one more write only if it pays
            return candidate >= base * min_gain
        return candidate * min_gain >= base  # one fewer unless it costs


@dataclass
class ConcurrencyTuner:
    max_limit: int
    window_s: float = 1.0
    min_writes: int = 3
    min_gain: float = 1.08
    # Seconds to stay at a limit after a trial, before the next one; after an abandoned trial (the writer
    # was not saturated), before trying again.
    hold_s: float = 30.0
    retry_s: float = 5.0
    limit: int = 1
    # The limit the latest trial kept (`limit` differs from it while a trial measures its candidate).
    kept: int = 1
    # Measured rate per limit (documents/s), from the most recent trial that measured it.
    rates: dict[int, float] = field(default_factory=dict)
    _trial: _Trial | None = None
    _hold_until: float = float("-inf")
    _switched_at: float = float("-inf")
    _window_start: float | None = None
    _window_docs: int = 0
    _window_writes: int = 0
    _down_next: bool = False  # after a hold, try one fewer and one more in turn

    def record(self, now: float, documents: int, saturated: bool, started: float | None = None) -> int:
        """A write of `documents` begun at `started` finished at `now`; `saturated`: another batch was waiting
        for a write slot. Returns the limit to use from now on."""
        if self.max_limit <= 1:
            return self.limit
        if self._trial is None:
            if now < self._hold_until:
                return self.limit
            self._begin_trial()
        if not saturated:
            self._end_trial(now, keep=False)
            return self.limit
        if self._window_start is None:
            # The window opens at the first write begun under this limit (it counts from there).
            if started is None or started >= self._switched_at:
                self._window_start, self._window_docs, self._window_writes = now, 0, 0
            return self.limit
        self._window_docs += documents
        self._window_writes += 1
        elapsed = now - self._window_start
        if elapsed >= self.window_s and self._window_writes >= self.min_writes:
            self._close_window(now, elapsed)
        return self.limit

    def _begin_trial(self) -> None:
        down = self.limit > 1 and (self._down_next or self.limit == self.max_limit)
        candidate = self.limit - 1 if down else self.limit + 1
        self._down_next = not self._down_next
        self._trial = _Trial(self.limit, candidate, [self.limit, candidate, candidate, self.limit])
        self._window_start = None
        self._switched_at = float("-inf")  # measuring the current limit: every write counts

    def _close_window(self, now: float, elapsed: float) -> None:
        trial = self._trial
        assert trial is not None
        measured = trial.schedule.pop(0)
        trial.docs[measured] = trial.docs.get(measured, 0) + self._window_docs
        trial.seconds[measured] = trial.seconds.get(measured, 0.0) + elapsed
        if not trial.schedule:
            self._end_trial(now, keep=trial.keeps_candidate(self.min_gain))
            return
        self._window_start = now  # the next window of the same limit goes on from here
        self._window_docs = self._window_writes = 0
        if trial.schedule[0] != self.limit:
            self._switch(now, trial.schedule[0])

    def _end_trial(self, now: float, keep: bool) -> None:
        trial = self._trial
        assert trial is not None
        self._trial = None
        complete = not trial.schedule
        if complete:
            self.rates[trial.base] = trial.rate(trial.base)
            self.rates[trial.candidate] = trial.rate(trial.candidate)
        winner = trial.candidate if keep else trial.base
        self.kept = winner
        if winner != self.limit:
            self._switch(now, winner)
        climbing = keep and trial.candidate > trial.base and winner < self.max_limit
        # A trial that paid for one more write goes on at once; otherwise hold.
        self._hold_until = float("-inf") if climbing else now + (self.hold_s if complete else self.retry_s)
        if climbing:
            self._down_next = False

    def _switch(self, now: float, limit: int) -> None:
        self.limit = limit
        self._switched_at = now
        self._window_start = None
