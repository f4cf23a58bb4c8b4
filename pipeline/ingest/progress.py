"""Counting what the worker did: totals, Prometheus metrics (once per batch, never per message), the periodic
progress line and the consumer lag.

Counts follow the batches that became durable, so `consumed` is what was accounted for (stored, duplicate,
dead-lettered or filtered), never an error event or a message of a partition the worker no longer owns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.core.coordinates import TP, format_partitions
from pipeline.ingest.writer import Completion
from pipeline.ops.logs import get_logger
from pipeline.ops.metrics import Metrics

log = get_logger("pipeline.ingest.progress")


@dataclass
class Totals:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    latest_updates: int = 0
    committed_batches: int = 0


class Progress:
    def __init__(self, metrics: Metrics, summary_interval_s: float, now: float) -> None:
        self.metrics = metrics
        self.totals = Totals()
        self.summary_interval_s = summary_interval_s
        self._last_summary = now
        self._summary_consumed = 0

    def account(self, c: Completion, counted: set[TP]) -> None:
        """A durable batch: count what it held of the partitions in `counted` (those whose part of the batch
        became durable under the current assignment)."""
        batch = c.batch
        m, totals = self.metrics, self.totals
        if len(counted) < len(batch.epochs):
            stale = [tp for tp in batch.epochs if tp not in counted]
            log.info(
                "durable batch not committed for partitions no longer owned",
                batch=batch.seq,
                partitions=format_partitions(stale),
            )
        for topic, n in batch.consumed.items():
            m.consumed.labels(topic).inc(n)
            totals.consumed += n
        for topic, n in c.stored.items():
            m.stored.labels(topic).inc(n)
            totals.stored += n
        for topic, n in c.duplicates.items():
            m.duplicates.labels(topic).inc(n)
            totals.duplicates += n
        for (topic, kind), n in c.dead_lettered.items():
            m.dead_lettered.labels(topic, kind).inc(n)
            totals.dead_lettered += n
        for topic, n in batch.filtered.items():
            m.filtered.labels(topic).inc(n)
            totals.filtered += n
        if c.latest_updates:
            m.latest_updates.inc(c.latest_updates)
            totals.latest_updates += c.latest_updates
        m.batch_size.observe(batch.size)
        m.write_seconds.observe(c.seconds)
        if log.is_debug():
            log.debug(
                "batch durable",
                batch=batch.seq,
                messages=batch.size,
                stored=sum(c.stored.values()),
                duplicates=sum(c.duplicates.values()),
                dead_lettered=sum(c.dead_lettered.values()),
                write_ms=round(c.seconds * 1000, 1),
            )

    def committed(self, offsets: dict[TP, int], seconds: float) -> None:
        self.metrics.commit_seconds.observe(seconds)
        self.totals.committed_batches += 1
        for (topic, partition), offset in offsets.items():
            self.metrics.committed_offset.labels(topic, str(partition)).set(offset)

    def lag(
        self,
        assigned: list[TP],
        watermark: Callable[[TP], tuple[int, int] | None],
        committed: Callable[[TP], int | None],
    ) -> int | None:
        """Total lag (end offset minus committed) over the assigned partitions, refreshing the gauges."""
        total, known = 0, False
        for tp in assigned:
            marks = watermark(tp)
            done = committed(tp)
            if marks is None or done is None:
                continue
            lag = max(0, marks[1] - done)
            self.metrics.lag.labels(tp[0], str(tp[1])).set(lag)
            total += lag
            known = True
        return total if known else None

    def summary_due(self, now: float) -> bool:
        return now - self._last_summary >= self.summary_interval_s

    def summary(self, now: float, lag: int | None, in_flight: int, paused: bool, concurrency: int) -> None:
        elapsed = max(1e-9, now - self._last_summary)
        t = self.totals
        rate = (t.consumed - self._summary_consumed) / elapsed
        self._last_summary = now
        self._summary_consumed = t.consumed
        log.info(
            "progress",
            consumed=t.consumed,
            stored=t.stored,
            duplicates=t.duplicates,
            dead_lettered=t.dead_lettered,
            filtered=t.filtered,
            rate_per_s=round(rate, 1),
            lag=lag,
            in_flight=in_flight,
            write_concurrency=concurrency,
            paused=paused,
        )
