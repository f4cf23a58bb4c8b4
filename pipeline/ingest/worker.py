"""The worker loop: consume → decode → batch → durable write (writer thread) → commit next offsets.

Modelled on the Kafka Connect sink task contract: `put` (decode into the open batch), `flush` (hand the batch
to the writer, which makes it durable), `commit` (synchronously commit, per partition, offset+1 of the highest
message of every batch that is durable). The main thread owns the Kafka consumer; the writer thread owns
MongoDB. Invariant: an offset is committed only after every message below it in its partition is durably
stored, dead-lettered (durably) or deliberately filtered out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.clients.sink import CollectionPlan, MongoSink
from pipeline.clients.source import CommitFailed, KafkaSource
from pipeline.core.batching import TP, BatchBuilder
from pipeline.core.codec import (
    DataError,
    Decoder,
    TickSchema,
    check_size,
    decode_raw,
    make_document,
    make_tick_decoder,
)
from pipeline.core.deadletter import DeadLetter, DeadLetterWriter
from pipeline.core.errors import FatalError, PipelineError, PoisonMessageError, StartupError, describe
from pipeline.core.filters import Predicate, compile_filter
from pipeline.core.naming import NameError_, is_topic_pattern
from pipeline.core.offsets import OffsetTracker
from pipeline.ingest.writer import BatchWriter, Completion
from pipeline.ops.config import Settings
from pipeline.ops.logs import get_logger
from pipeline.ops.metrics import Health, Metrics, MetricsServer

log = get_logger("pipeline.ingest.worker")

# How long one consume() call may block: bounds the reaction time to signals and to due batches.
MAX_POLL_S = 0.1
# consume(n, timeout) only returns early once it has n messages, so its timeout acts as a linger. It is kept
# this short whenever there is something to act on soon: a batch being written (its completion is collected
# and committed between consume() calls) or an open batch (written as soon as the writer is free). Under a
# backlog consume() returns full batches at once and this changes nothing; on a quiet stream it keeps
# produce->committed latency down to the write itself.
SHORT_POLL_S = 0.005
# How often the consumer-lag gauge is recomputed when metrics are served.
LAG_REFRESH_S = 2.0


@dataclass(slots=True)
class Route:
    """How messages of one topic are handled (resolved once per topic)."""

    collection: str
    decode: Decoder
    keep: Predicate | None


@dataclass
class Totals:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    latest_updates: int = 0
    committed_batches: int = 0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        sink: MongoSink | None = None,
        source: KafkaSource | None = None,
        metrics: Metrics | None = None,
        serve_metrics: bool | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = Health()
        self._serve_metrics = settings.metrics.enabled if serve_metrics is None else serve_metrics
        self.metrics_server: MetricsServer | None = None
        self.sink = sink or MongoSink(settings.mongo)
        self.source = source or KafkaSource(settings.kafka)
        self.router = settings.collection_router()
        self.tick_decoder = make_tick_decoder(TickSchema(**settings.tick.model_dump()))
        self.tracker = OffsetTracker()
        # collection -> how it is written; shared with the writer thread (filled before batches reference it).
        self.plans: dict[str, CollectionPlan] = {}
        self.builder = BatchBuilder(settings.batch.max_messages, settings.batch.max_wait_ms / 1000)
        self.tolerance = settings.errors.tolerance
        self._dlq_producer: Producer | None = None
        self.writer = BatchWriter(
            self.sink,
            self._dead_letter_writer(),
            tolerance=self.tolerance,
            initial_backoff_s=settings.retry.initial_backoff_ms / 1000,
            max_backoff_s=settings.retry.max_backoff_ms / 1000,
            metrics=self.metrics,
            health=self.health,
            plans=self.plans,
        )
        self.totals = Totals()
        self._routes: dict[str, Route] = {}
        self._stop = threading.Event()
        self._abort_on_stop = False
        self._closing = False
        self._error: PipelineError | None = None
        self._next_commit_at = 0.0
        self._commit_backoff = settings.retry.initial_backoff_ms / 1000
        # Once a batch fails (or stops at a poison message), later batches must never be committed: their
        # offsets would skip the failed messages. This is the seq of the last batch still safe to commit.
        self._last_trusted_seq: int | None = None
        self._last_summary = time.monotonic()
        self._last_lag = 0.0
        self._summary_consumed = 0
        self._caught_up = False

    # ---- lifecycle -------------------------------------------------------------------------------------
    def request_stop(self, abort: bool = False) -> None:
        """Signal-safe: finish the current work, commit, and return from run(). abort=True skips waiting."""
        if abort:
            self._abort_on_stop = True
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until stopped. Returns the process exit code (0 = clean stop). Raises StartupError."""
        try:
            self._startup()
        except BaseException:
            self._close_clients()
            raise
        if ready is not None:
            ready()
        try:
            while not self._stop.is_set() and self._error is None:
                self._step()
        finally:
            self._shutdown()
        if self._error is not None:
            log.error("worker stopped on error", error=str(self._error))
            return self._error.exit_code
        return 0

    def _startup(self) -> None:
        timeout = self.settings.worker.startup_timeout_s
        hello = self.sink.check_connection(timeout)
        self.health.mongo_ok = True
        if self.settings.mongo.write_concern.w == "majority" and not hello.get("setName"):
            log.warning(
                "MongoDB is not a replica set: w=majority only waits for this one server",
                mongo=self.sink.where,
            )
        self.source.check_connection(timeout)
        self.health.kafka_ok = True
        # Creating the indexes now also proves we may write there (authorization), before consuming anything.
        fixed = [t for t in self.settings.kafka.topics if not is_topic_pattern(t)]
        self.sink.prepare([self.plans[c] for c in (self._route(t).collection for t in fixed) if c])
        if self._serve_metrics:
            m = self.settings.metrics
            try:
                self.metrics_server = MetricsServer(self.metrics, self.health, m.host, m.port)
            except OSError as exc:
                raise FatalError(f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror}") from None
            self.metrics_server.start()
        self.writer.start()
        self.source.subscribe(self._on_assign, self._on_revoke, self._on_lost)
        self.health.started = True
        log.info(
            "worker started",
            topics=",".join(self.settings.kafka.topics),
            group=self.settings.kafka.group_id,
            kafka=self.settings.kafka.bootstrap_servers,
            mongo=self.sink.where,
            database=self.settings.mongo.database,
            write_concern=f"w={self.settings.mongo.write_concern.w},j={self.settings.mongo.write_concern.j}",
            metrics_port=self.metrics_server.port if self.metrics_server else None,
        )

    # ---- main loop -------------------------------------------------------------------------------------
    def _step(self) -> None:
        now = time.monotonic()
        self.health.beat()
        self.health.kafka_ok = not self.source.brokers_down
        if self.source.fatal is not None:
            self._error = self._error or self.source.fatal
            return
        self._collect_completions()
        self._commit_pending(now)
        self._flush_if_due(now)
        backlog_full = self.writer.unfinished >= self.settings.batch.max_in_flight and self.builder.full()
        if backlog_full:
            # Writer is behind and the next batch is full: stop fetching (bounded memory), keep polling so the
            # group membership stays alive and rebalance callbacks still run.
            self.source.pause(self.tracker.assigned)
            self.metrics.paused.set(1)
            late = self.source.consume(1, MAX_POLL_S)
            if late:  # fetched before the pause took effect: must be handled, or it would be skipped
                self._put(late)
            return
        if self.source.paused:
            self.source.resume_all()
            self.metrics.paused.set(0)
        wait = self.builder.seconds_until_due(now)
        timeout = MAX_POLL_S if wait is None else min(MAX_POLL_S, wait)
        room = self.builder.room()
        if self.writer.unfinished or self.builder.size:
            want, timeout = room, min(timeout, SHORT_POLL_S)
        else:
            want = 1  # nothing pending: return as soon as one message arrives, the next call gathers the rest
        messages = self.source.consume(want, timeout)
        if messages:
            self._put(messages)
        # Caught up (fewer messages than asked for) and the writer is idle: write now rather than wait out
        # max_wait_ms. Under backlog consume() returns full batches and this never fires.
        self._caught_up = len(messages) < want
        self._summary(now)

    def _put(self, messages: list[Message]) -> None:
        """Decode messages into the open batch (Kafka Connect's put)."""
        now = time.monotonic()
        batch = self.builder.open(now)
        ingested_at = datetime.now(UTC)
        tracker_epoch = self.tracker.epoch
        for message in messages:
            error = message.error()
            if error is not None:
                self._consume_error(error)
                continue
            # Never None for a message without error (the stubs type them as optional).
            topic = cast(str, message.topic())
            partition = cast(int, message.partition())
            offset = cast(int, message.offset())
            tp = (topic, partition)
            epoch = tracker_epoch(tp)
            if epoch is None:  # not ours (any more): never store or commit it
                continue
            route = self._routes.get(topic) or self._route(topic)
            value = message.value()
            try:
                fields = route.decode(value)
                if route.keep is not None and not route.keep(fields):
                    batch.add_filtered(tp, offset, epoch)
                    continue
                ts_type, ts_ms = message.timestamp()
                document = make_document(
                    fields, topic, partition, offset, ts_ms if ts_type else None, message.key(), ingested_at
                )
                if value is not None and len(value) > 512 * 1024:
                    check_size(value, document)
            except DataError as exc:
                if self.tolerance == "none":
                    self._poison(tp, offset, exc)
                    return
                batch.add_dead_letter(self._letter(message, tp, offset, exc), tp, offset, epoch)
                continue
            batch.add_document(route.collection, document, value, tp, offset, epoch)
        self.totals.consumed += len(messages)

    def _route(self, topic: str) -> Route:
        options = self.settings.topic_options(topic)
        decode: Decoder = decode_raw if options.format == "raw" else self.tick_decoder
        try:
            collection = self.router.collection_for(topic)
        except NameError_ as exc:
            # E.g. a regex subscription matched a topic named "system.x": its messages cannot be stored under
            # that name. They are dead-lettered (or stop the worker, tolerance=none), not lost.
            log.error("topic maps to an invalid collection name", topic=topic, error=str(exc))
            collection, decode = "", _rejecting(f"topic {topic!r} maps to an invalid collection name: {exc}")
        if collection:
            plan = CollectionPlan(
                collection,
                history=options.keeps_history,
                latest=options.keeps_latest,
                timeseries=options.timeseries,
            )
            if self.plans.setdefault(collection, plan) != plan:
                log.warning(
                    "topics sharing a collection have different storage options; the first one wins",
                    topic=topic,
                    collection=collection,
                )
        keep = compile_filter(options.filter) if options.filter is not None else None
        route = self._routes[topic] = Route(collection, decode, keep)
        return route

    def _letter(self, message: Message, tp: TP, offset: int, exc: DataError) -> DeadLetter:
        ts_type, ts_ms = message.timestamp()
        return DeadLetter(
            topic=tp[0],
            partition=tp[1],
            offset=offset,
            key=message.key(),
            value=message.value(),
            timestamp_ms=ts_ms if ts_type else None,
            kind=exc.kind,
            message=exc.message,
            stage="decode",
            failed_at=datetime.now(UTC),
        )

    def _poison(self, tp: TP, offset: int, exc: DataError) -> None:
        # The open batch holds only messages before the poison one (per partition): it may still be committed.
        self._last_trusted_seq = self.builder.current.seq if self.builder.current else None
        self._error = PoisonMessageError(
            f"cannot store the message at {tp[0]}[{tp[1]}]@{offset}: {exc.kind}: {exc.message} "
            "(errors.tolerance=none: stopping; nothing past it is committed)"
        )
        log.error(
            "poison message", topic=tp[0], partition=tp[1], offset=offset, kind=exc.kind, reason=exc.message
        )

    def _consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._error = FatalError(f"fatal Kafka error: {self.source.redact(error.str())}")
        elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            log.warning("subscribed topic does not exist (yet)", error=error.str())
        else:
            log.warning("Kafka consume error", error=self.source.redact(error.str()), code=error.name())

    def _flush_if_due(self, now: float) -> None:
        """Hand the open batch to the writer when it is full or old enough (Kafka Connect's flush)."""
        if self.writer.unfinished >= self.settings.batch.max_in_flight:
            return
        idle_and_caught_up = self._caught_up and self.writer.unfinished == 0 and self.builder.size > 0
        if self.builder.due(now) or idle_and_caught_up:
            batch = self.builder.take()
            if batch is not None:
                self.writer.submit(batch)
                self.metrics.in_flight.set(self.writer.unfinished)

    def _dead_letter_writer(self) -> DeadLetterWriter:
        dl = self.settings.errors.dead_letter
        collection = self.sink.collection(dl.collection) if dl.collection else None
        if dl.topic:
            from pipeline.clients.kafka import producer_config

            conf = producer_config(self.settings.kafka, {"linger.ms": 5})
            try:
                self._dlq_producer = Producer(conf)
            except KafkaException as exc:
                raise StartupError(f"invalid Kafka producer configuration: {describe(exc)}") from None
        return DeadLetterWriter(collection, self._dlq_producer, dl.topic)

    # ---- completions and commits -----------------------------------------------------------------------
    def _collect_completions(self) -> None:
        for completion in self.writer.take_completed():
            self._account(completion)
        self.metrics.in_flight.set(self.writer.unfinished)

    def _account(self, c: Completion) -> None:
        batch = c.batch
        if c.dropped:
            log.info(
                "batch abandoned; its messages stay uncommitted and will be re-delivered",
                batch=batch.seq,
                messages=batch.size,
            )
            return
        if self._last_trusted_seq is not None and batch.seq > self._last_trusted_seq:
            return
        if c.error is not None:
            self._error = self._error or c.error
            if not isinstance(c.error, PoisonMessageError):
                self._last_trusted_seq = batch.seq - 1
                return
            # Poison at write time (tolerance none): commit what precedes it in each partition, then stop.
            self._last_trusted_seq = batch.seq
        stale = self.tracker.record_durable(c.next_offsets, batch.epochs)
        if stale:
            log.info(
                "durable batch not committed for partitions no longer owned",
                batch=batch.seq,
                partitions=_fmt(stale),
            )
        m = self.metrics
        for topic, n in batch.consumed.items():
            m.consumed.labels(topic).inc(n)
        for topic, n in c.stored.items():
            m.stored.labels(topic).inc(n)
            self.totals.stored += n
        for topic, n in c.duplicates.items():
            m.duplicates.labels(topic).inc(n)
            self.totals.duplicates += n
        for (topic, kind), n in c.dead_lettered.items():
            m.dead_lettered.labels(topic, kind).inc(n)
            self.totals.dead_lettered += n
        for topic, n in batch.filtered.items():
            m.filtered.labels(topic).inc(n)
            self.totals.filtered += n
        if c.latest_updates:
            m.latest_updates.inc(c.latest_updates)
            self.totals.latest_updates += c.latest_updates
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

    def _commit_pending(self, now: float, force: bool = False) -> bool:
        """Commit every durable offset. Returns False if a transient failure left some uncommitted."""
        if not self.tracker.has_pending() or (now < self._next_commit_at and not force):
            return True
        offsets = self.tracker.take_pending()
        started = time.monotonic()
        try:
            self.source.commit(offsets)
        except CommitFailed as exc:
            self.tracker.restore(offsets)
            if exc.rebalance:
                # Partitions are being reassigned: the revoke callback retries (or the new owner re-reads
                # them; what is already stored then counts as duplicates). Not a reason to wait here.
                log.info("commit refused during a rebalance; will retry after it", error=str(exc))
                self._next_commit_at = time.monotonic() + self._commit_backoff
                return True
            self.metrics.retries.labels("kafka_commit").inc()
            if not exc.transient:
                self._error = self._error or FatalError(f"offset commit failed: {exc}")
                return False
            self._next_commit_at = time.monotonic() + self._commit_backoff
            log.warning(
                "offset commit failed, will retry", error=str(exc), retry_in_s=round(self._commit_backoff, 2)
            )
            self._commit_backoff = min(self._commit_backoff * 2, self.settings.retry.max_backoff_ms / 1000)
            return False
        self._commit_backoff = self.settings.retry.initial_backoff_ms / 1000
        self.metrics.commit_seconds.observe(time.monotonic() - started)
        self.tracker.mark_committed(offsets)
        self.totals.committed_batches += 1
        for (topic, partition), offset in offsets.items():
            self.metrics.committed_offset.labels(topic, str(partition)).set(offset)
        return True

    def _drain(self, deadline: float) -> bool:
        """Flush the open batch, wait for the writer, commit everything durable. False if not all of it."""
        batch = self.builder.take()
        if batch is not None:
            self.writer.submit(batch)
        idle = self.writer.wait_idle(deadline - time.monotonic())
        self._collect_completions()
        while not self._commit_pending(time.monotonic(), force=True):
            if time.monotonic() + self._commit_backoff >= deadline:
                return False
            time.sleep(self._commit_backoff)
        return idle

    # ---- rebalance ---------------------------------------------------------------------------------------
    def _on_assign(self, tps: list[TP]) -> None:
        self.tracker.assign(tps)
        self.metrics.rebalances.labels("assign").inc()
        self.health.assigned = len(self.tracker.assigned)
        self.metrics.assigned.set(self.health.assigned)
        if self.settings.mongo.create_indexes:
            for topic in {t for t, _ in tps}:
                self._route(topic)
        log.info("partitions assigned", partitions=_fmt(tps))

    def _on_revoke(self, tps: list[TP]) -> None:
        """Finish in-flight work and commit it before the partitions move; otherwise drop it uncommitted."""
        self.metrics.rebalances.labels("revoke").inc()
        if self._closing or self._abort_on_stop:
            complete = self._drain(time.monotonic()) if not self._abort_on_stop else False
        else:
            complete = self._drain(time.monotonic() + self.settings.worker.rebalance_timeout_s)
        if not complete:
            self._abandon_in_flight(keep=[tp for tp in self.tracker.assigned if tp not in set(tps)])
        self.tracker.revoke(tps)
        self.source.release(tps)
        self.health.assigned = len(self.tracker.assigned)
        self.metrics.assigned.set(self.health.assigned)
        log.info("partitions revoked", partitions=_fmt(tps), flushed=complete)

    def _on_lost(self, tps: list[TP]) -> None:
        """Partitions were lost (session timeout): someone else may own them already. Commit nothing."""
        self.metrics.rebalances.labels("lost").inc()
        self.tracker.revoke(tps)
        self.source.release(tps)
        self._abandon_in_flight(keep=self.tracker.assigned)
        self.health.assigned = len(self.tracker.assigned)
        log.warning("partitions lost; in-flight work for them will not be committed", partitions=_fmt(tps))

    def _abandon_in_flight(self, keep: list[TP]) -> None:
        """Drop unfinished batches. Partitions we keep are rewound to their first unfinished message so that
        nothing is skipped (the re-consumed messages that did land count as duplicates)."""
        open_batch = self.builder.take()
        pending = self.writer.unfinished
        self.writer.abort()
        self.writer.wait_idle(1.0)
        rewind: dict[TP, int] = {}
        batches = [c.batch for c in self.writer.take_completed() if c.dropped]
        if open_batch is not None:
            batches.append(open_batch)
        for batch in batches:
            for tp, first in batch.first_offsets.items():
                rewind[tp] = min(rewind.get(tp, first), first)
        if self.writer.unfinished:
            log.warning(
                "a MongoDB write is still on the wire after abort; it is harmless and won't be committed"
            )
        for tp in keep:
            if tp in rewind:
                self.source.seek(tp, rewind[tp])
        if pending or open_batch is not None:
            log.warning(
                "abandoned uncommitted work; it will be re-delivered",
                batches=pending,
                rewound=_fmt([tp for tp in keep if tp in rewind]),
            )

    # ---- shutdown ----------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._closing = True
        timeout = 0.0 if self._abort_on_stop else self.settings.worker.shutdown_timeout_s
        if self._error is None or isinstance(self._error, PoisonMessageError):
            complete = self._drain(time.monotonic() + timeout)
        else:
            # A fatal error: don't write more, but still commit what is already durable.
            self.builder.take()
            self.writer.abort()
            self.writer.wait_idle(1.0)
            self._collect_completions()
            self._commit_pending(time.monotonic(), force=True)
            complete = False
        if not complete:
            unfinished = self.writer.unfinished
            self.writer.abort()
            if unfinished:
                log.warning(
                    "stopping with unwritten batches; they were not committed and will be re-delivered",
                    batches=unfinished,
                )
        log.info(
            "worker stopping",
            consumed=self.totals.consumed,
            stored=self.totals.stored,
            duplicates=self.totals.duplicates,
            dead_lettered=self.totals.dead_lettered,
            filtered=self.totals.filtered,
        )
        self._close_clients()

    def _close_clients(self) -> None:
        try:
            self.source.close()
        except Exception as exc:
            log.warning("error while leaving the consumer group", error=str(exc))
        self.writer.stop(2.0)
        if self._dlq_producer is not None:
            self._dlq_producer.flush(5.0)
            self._dlq_producer = None  # destroyed now, not at some later garbage collection
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.sink.close()

    def _summary(self, now: float) -> None:
        if self.metrics_server is not None and now - self._last_lag >= LAG_REFRESH_S:
            self._last_lag = now
            self._lag()  # keeps the lag gauge fresh between summaries (cached watermarks: no broker call)
        if now - self._last_summary < self.settings.log.summary_interval_s:
            return
        elapsed = now - self._last_summary
        rate = (self.totals.consumed - self._summary_consumed) / elapsed
        self._last_summary = now
        self._summary_consumed = self.totals.consumed
        lag = self._lag()
        log.info(
            "progress",
            consumed=self.totals.consumed,
            stored=self.totals.stored,
            duplicates=self.totals.duplicates,
            dead_lettered=self.totals.dead_lettered,
            filtered=self.totals.filtered,
            rate_per_s=round(rate, 1),
            lag=lag,
            in_flight=self.writer.unfinished,
            paused=bool(self.source.paused),
        )

    def _lag(self) -> int | None:
        total = 0
        known = False
        for tp in self.tracker.assigned:
            marks = self.source.watermarks(tp)
            committed = self.tracker.committed.get(tp)
            if marks is None or committed is None:
                continue
            lag = max(0, marks[1] - committed)
            self.metrics.lag.labels(tp[0], str(tp[1])).set(lag)
            total += lag
            known = True
        return total if known else None

    def stats(self) -> dict[str, Any]:
        return {**self.totals.__dict__, "assigned": self.tracker.assigned}


def _rejecting(reason: str) -> Decoder:
    def decode(value: bytes | None) -> dict[str, Any]:
        raise DataError("invalid_collection_name", reason)

    return decode


def _fmt(tps: list[TP]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in sorted(tps))
