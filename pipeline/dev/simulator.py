"""The ticker producer: a random-walk market simulator keyed by symbol, with delivery reports.

`pipeline produce --topics petr4,vale3 --count N [--rate R]` spreads N ticks evenly over the topics (N=0 runs
until stopped). Every message is acknowledged by all in-sync replicas (idempotent producer); any delivery
failure is reported and makes the command exit non-zero.

Ticks are stamped with the wall clock, or with a `MarketClock` (`--start T --tick-interval-ms N`, optional
session hours): market time that starts at T and advances N ms per tick of each symbol, so that a backlog
produced in seconds represents a trading session. Only the ticks' `ts` is market time; the Kafka records
keep the producer's wall-clock timestamps (retention and `offsets reset --to-time` work on those).
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.clients.kafka import produce_waiting, producer_config
from pipeline.clients.source import PRODUCER_ACLS, RefusalWatch, kafka_refusal
from pipeline.core.errors import StartupError, describe
from pipeline.core.timefmt import iso_utc
from pipeline.ops.config import KafkaConfig
from pipeline.ops.logs import get_logger
from pipeline.ops.redact import redact_text

log = get_logger("pipeline.dev.simulator")
UNASSIGNED_PARTITION = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the configured partitioner decides

# Rough reference prices (BRL) so the simulated series look like the real tickers.
BASE_PRICES = {
    "PETR4": 38.0,
    "VALE3": 62.0,
    "ITUB4": 33.0,
    "BBDC4": 15.0,
    "ABEV3": 12.5,
    "BBAS3": 28.0,
    "WEGE3": 52.0,
    "MGLU3": 9.0,
}


def symbol_for_topic(topic: str) -> str:
    """petr4 -> PETR4, ticks.vale3 -> VALE3."""
    return topic.rsplit(".", 1)[-1].upper()


class RandomWalk:
    """Geometric random walk with small steps, prices rounded to cents, volumes in round lots of 100."""

    def __init__(self, symbol: str, rng: random.Random, step_volatility: float = 0.0008) -> None:
        self.symbol = symbol
        self.rng = rng
        self.price = BASE_PRICES.get(symbol, rng.uniform(10, 100))
        self.sigma = step_volatility

    def next(self) -> tuple[float, int]:
        self.price = max(0.01, self.price * math.exp(self.rng.gauss(0.0, self.sigma)))
        volume = 100 * max(1, int(self.rng.expovariate(1 / 5)))
        return round(self.price, 2), volume


_SESSION = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Session:
    """Trading hours, every weekday (Monday to Friday; holidays are not known), in a time zone."""

    open: clock_time
    close: clock_time
    zone: ZoneInfo

    @classmethod
    def parse(cls, hours: str, zone: ZoneInfo) -> Session:
        """`10:00-17:00` in `zone`; ValueError with one line when it is not that."""
        match = _SESSION.match(hours.strip())
        if match is None:
            raise ValueError(f"session {hours!r} is not HH:MM-HH:MM (e.g. 10:00-17:00)")
        oh, om, ch, cm = (int(g) for g in match.groups())
        if oh > 23 or ch > 23 or om > 59 or cm > 59:
            raise ValueError(f"session {hours!r}: hours are 00-23, minutes 00-59")
        session = cls(clock_time(oh, om), clock_time(ch, cm), zone)
        if session.close <= session.open:
            raise ValueError(f"session {hours!r} closes before it opens")
        return session

    @property
    def length(self) -> timedelta:
        return datetime.combine(datetime.min, self.close) - datetime.combine(datetime.min, self.open)

    def opening(self, day: datetime) -> datetime:
        """The session's open on `day`'s local date (aware, UTC)."""
        local = day.astimezone(self.zone).date()
        return datetime.combine(local, self.open, self.zone).astimezone(UTC)

    def closing(self, day: datetime) -> datetime:
        local = day.astimezone(self.zone).date()
        return datetime.combine(local, self.close, self.zone).astimezone(UTC)

    def next_open(self, after: datetime) -> datetime:
        """The first session open at or after `after` (weekdays only)."""
        day = after.astimezone(self.zone)
        for _ in range(8):
            if day.weekday() < 5:
                opening = self.opening(day)
                if opening >= after:
                    return opening
            day = datetime.combine(day.date() + timedelta(days=1), clock_time(0), self.zone)
        raise AssertionError("a weekday comes within 8 days")

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        return local.weekday() < 5 and self.opening(moment) <= moment < self.closing(moment)

    def last_complete_before(self, moment: datetime) -> datetime:
        """The open of the last session that closed before `moment`."""
        day = moment.astimezone(self.zone)
        for _ in range(9):
            if day.weekday() < 5 and self.closing(day) <= moment:
                return self.opening(day)
            day = datetime.combine(day.date() - timedelta(days=1), clock_time(12), self.zone)
        raise AssertionError("a weekday comes within 9 days")


class MarketClock:
    """Market time: starts at `start` and advances `interval` per tick; with a session, only its hours of
    weekdays are used (a start outside them moves to the next open, and the close jumps to the next open)."""

    def __init__(self, start: datetime, interval: timedelta, session: Session | None = None) -> None:
        if interval <= timedelta(0):
            raise ValueError("the tick interval must be positive")
        self.interval = interval
        self.session = session
        start = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
        self.current = self._within(start.astimezone(UTC))

    def _within(self, moment: datetime) -> datetime:
        if self.session is None or self.session.contains(moment):
            return moment
        return self.session.next_open(moment)

    def next(self) -> datetime:
        """The current market time, then advance."""
        now = self.current
        self.current = self._within(now + self.interval)
        return now


# The shortest wait between paced sends (see TickProducer.run).
PACE_STEP_S = 0.005


def encode_tick(symbol: str, price: float, volume: int, ts: str) -> bytes:
    return orjson.dumps({"symbol": symbol, "price": price, "volume": volume, "ts": ts})


@dataclass
class ProduceReport:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    first_error: str | None = None
    # (topic, partition) -> delivered offsets, when requested (tests and benchmarks check against them).
    offsets: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.sent


class TickProducer:
    def __init__(
        self,
        kafka: KafkaConfig,
        topics: list[str],
        *,
        seed: int | None = None,
        record_offsets: bool = False,
        extra_config: dict[str, Any] | None = None,
        spread: bool = False,
        clock: MarketClock | None = None,
    ) -> None:
        if not topics:
            raise ValueError("at least one topic is needed")
        self.topics = topics
        self.clock = clock  # None: ticks carry the wall clock
        rng = random.Random(seed)
        self.walks = {topic: RandomWalk(symbol_for_topic(topic), rng) for topic in topics}
        self.keys = {topic: symbol_for_topic(topic).encode() for topic in topics}
        self.record_offsets = record_offsets
        self.report = ProduceReport()
        self._lock = threading.Lock()
        secrets = [p.get_secret_value() for p in (kafka.security.sasl_password,) if p is not None]
        # Refusals (credentials, certificate, ACLs) end the run at once with their cause, instead of every
        # message failing only after message.timeout.ms.
        self.watch = RefusalWatch(kafka, lambda text: redact_text(text, secrets), needs=PRODUCER_ACLS)
        try:
            self.producer = Producer({**producer_config(kafka, extra_config), "error_cb": self.watch})
        except KafkaException as exc:
            raise StartupError(f"invalid Kafka producer configuration: {describe(exc)}") from None
        # Keyed by symbol, every tick of a one-symbol topic lands in one partition (per-symbol order, the
        # realistic default). `spread` assigns partitions round-robin instead (the key stays the symbol).
        self.partitions: dict[str, int] = self._partition_counts() if spread else {}
        self._next_partition: dict[str, int] = dict.fromkeys(self.partitions, 0)

    def _partition_counts(self) -> dict[str, int]:
        counts = {}
        for topic in self.topics:
            try:
                meta = self.producer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                self.producer.poll(0)
                self.watch.raise_if_refused()
                raise StartupError(f"cannot read metadata of topic {topic!r}: {describe(exc)}") from None
            error = meta.topics[topic].error
            if error is not None:
                refusal = kafka_refusal(error, self.watch.config, self.watch.redact, needs=PRODUCER_ACLS)
                if refusal is not None:
                    raise refusal
            partitions = meta.topics[topic].partitions
            if not partitions:
                raise StartupError(f"topic {topic!r} has no partitions (does it exist?)")
            counts[topic] = len(partitions)
        return counts

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None:
                self.report.failed += 1
                if self.report.first_error is None:
                    self.report.first_error = f"{err.name()}: {err.str()}"
                if self.watch.refusal is None:
                    self.watch.refusal = kafka_refusal(
                        err, self.watch.config, self.watch.redact, needs=PRODUCER_ACLS
                    )
                return
            self.report.delivered += 1
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if self.record_offsets and topic is not None and partition is not None and offset is not None:
                self.report.offsets.setdefault((topic, partition), []).append(offset)

    def send_one(self, topic: str, now: datetime | None = None, value: bytes | None = None) -> None:
        """Send one simulated tick (or an explicit value) to `topic`."""
        if value is None:
            walk = self.walks[topic]
            price, volume = walk.next()
            value = encode_tick(walk.symbol, price, volume, iso_utc(now or datetime.now(UTC)))
        partition = UNASSIGNED_PARTITION  # let the partitioner choose (by key)
        if self.partitions:
            n = self._next_partition[topic]
            self._next_partition[topic] = n + 1
            partition = n % self.partitions[topic]
        produce_waiting(
            self.producer,
            topic,
            value=value,
            key=self.keys.get(topic),
            partition=partition,
            on_delivery=self._delivered,
        )
        self.report.sent += 1

    def run(
        self,
        count: int,
        rate: float | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ProduceReport:
        """Send `count` ticks round-robin over the topics (0 = until `stop` is set), paced at `rate`/s. Each
        round sends one tick per topic, all stamped with the same time (the wall clock, or the next time of
        the market clock)."""
        started = time.monotonic()
        stop = stop or threading.Event()
        i = 0
        while (count == 0 or i < count) and not stop.is_set():
            if rate:
                due = started + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    # At least PACE_STEP_S: what fell due meanwhile goes out together (a paced run of
                    # thousands per second would otherwise wake up for every round).
                    self.producer.poll(min(max(delay, PACE_STEP_S), 0.1))
                    self.watch.raise_if_refused()
                    continue
            now = self.clock.next() if self.clock is not None else datetime.now(UTC)
            chunk = len(self.topics) if count == 0 else min(len(self.topics), count - i)
            for k in range(chunk):
                self.send_one(self.topics[(i + k) % len(self.topics)], now)
            i += chunk
            if i % 1000 < chunk:
                self.producer.poll(0)
                self.watch.raise_if_refused()
                if progress is not None:
                    progress(i)
        self.flush()
        self.report.seconds = time.monotonic() - started
        if progress is not None:
            progress(i)
        return self.report

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every delivery report; raises the refusal (PipelineError) as soon as one is seen."""
        deadline = time.monotonic() + timeout_s
        remaining = len(self.producer)
        while remaining:
            remaining = self.producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
            self.watch.raise_if_refused()
            if time.monotonic() >= deadline:
                break
        if remaining:
            with self._lock:
                self.report.failed += remaining
                self.report.first_error = (
                    self.report.first_error or f"{remaining} message(s) not acknowledged in time"
                )
