"""The worker loop: consume -> decode into the open batch -> hand full batches to the writer -> commit what
the commit gate allows.

Modelled on the Kafka Connect sink task contract: `put` (decode consumed messages into the open batch,
`convert.py`), `flush` (hand the batch to the writer, which makes it durable, `writer.py`), `commit`
(synchronously commit, per partition, what `commit_gate.py` says is durable with everything before it). This
thread owns the Kafka consumer and calls everything on it, rebalance callbacks included; the writer threads
own the MongoDB writes.

Backpressure without churn: while `batch.max_in_flight` batches are being written and the open one is full,
the loop waits for a write to finish instead of consuming (librdkafka's bounded prefetch holds the rest);
only when the writer has made no progress for `STALL_S` (MongoDB down) does it pause its partitions and keep
polling, so that it stays in the group and serves rebalances.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.clients.deadletters import DEFAULT_RECORD_LIMIT, DeadLetterWriter
from pipeline.clients.kafka import producer_config
from pipeline.clients.sink import MongoSink
from pipeline.clients.source import PRODUCER_ACLS, CommitFailed, KafkaSource, RefusalWatch
from pipeline.clients.topic_checks import TopicChecker
from pipeline.core.batching import BatchBuilder
from pipeline.core.coordinates import TP, format_partitions
from pipeline.core.errors import ConfigurationError, FatalError, PipelineError, PoisonMessageError, describe
from pipeline.core.naming import dead_letter_topics, is_topic_pattern
from pipeline.ingest.commit_gate import CommitBackoff, CommitGate
from pipeline.ingest.convert import Converter, Poison
from pipeline.ingest.progress import Progress, Totals
from pipeline.ingest.routing import Router
from pipeline.ingest.writer import Completion, WritePool
from pipeline.ops.config import Settings
from pipeline.ops.logs import get_logger
from pipeline.ops.metrics import Health, Metrics, MetricsServer

log = get_logger("pipeline.ingest.worker")

# How long one consume() call may block: bounds the reaction time to signals and to due batches.
MAX_POLL_S = 0.1
# consume(n, timeout) only returns early once it has n messages, so its timeout acts as a linger. It is kept
# this short whenever there is something to act on soon (a batch being written, an open batch).
SHORT_POLL_S = 0.005
# With the writer full: how long to wait for a write to finish before checking on everything else.
WAIT_FOR_WRITER_S = 0.1
# With the writer full and no write finishing for this long (MongoDB down): pause the partitions and poll.
# Until then rebalance callbacks wait (at most this long), which the group protocol tolerates.
STALL_S = 5.0
# Commits are synchronous: at most one per this interval while batches keep completing (one when idle).
COMMIT_INTERVAL_S = 0.05
# How often the consumer-lag gauge is recomputed when metrics are served.
LAG_REFRESH_S = 2.0


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
        self.topic_checks = TopicChecker(settings.kafka, timeout_s=settings.worker.startup_timeout_s)
        self.gate = CommitGate()
        self.router = Router(settings)
        self.converter = Converter(self.router, self.gate.epoch, settings.errors.tolerance)
        self.builder = BatchBuilder(settings.batch.max_messages, settings.batch.max_wait_ms / 1000)
        self._dlq_producer: Producer | None = None
        # The dead-letter producer's own refusals (no permission on its topic, or the cluster's): fatal.
        self._dlq_watch = RefusalWatch(settings.kafka, self.source.redact, needs=PRODUCER_ACLS)
        self.dead_letters = self._dead_letter_writer()
        self.writer = WritePool(
            self.sink,
            self.dead_letters,
            plan_for=self.router.plan,
            owns=self.gate.owns,
            tolerance=settings.errors.tolerance,
            initial_backoff_s=settings.retry.initial_backoff_ms / 1000,
            max_backoff_s=settings.retry.max_backoff_ms / 1000,
            max_in_flight=settings.batch.max_in_flight,
            concurrency=settings.batch.write_concurrency,
            metrics=self.metrics,
            health=self.health,
            verify_sources=settings.mongo.verify_topic_identity,
        )
        self.progress = Progress(self.metrics, settings.log.summary_interval_s, time.monotonic())
        self.commit_backoff = CommitBackoff(
            settings.retry.initial_backoff_ms / 1000, settings.retry.max_backoff_ms / 1000
        )
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._closing = False
        self._error: PipelineError | None = None
        self._checked_topics: set[str] = set()
        self._last_commit = 0.0
        self._last_lag = 0.0
        self._writer_progress = time.monotonic()
        self._caught_up = False

    @property
    def error(self) -> PipelineError | None:
        """What the worker stopped on (the first error), if it did."""
        return self._error

    @property
    def totals(self) -> Totals:
        return self.progress.totals

    @property
    def assigned(self) -> list[TP]:
        return self.gate.assigned

    # ---- lifecycle -------------------------------------------------------------------------------------
    def request_stop(self, abort: bool = False) -> None:
        """Signal-safe: finish the current work, commit, and return from run(). abort=True: stop waiting."""
        if abort:
            self._abort.set()
            self.writer.abort()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until stopped. Returns the process exit code (0 = clean stop). Raises StartupError."""
        if self._stop.is_set():  # stopped before it started: nothing consumed, nothing to flush
            self._close_clients()
            return 0
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
        self.sink.prepare(self.router.fixed_plans())
        if self.settings.tick.price_type == "decimal128":
            self.sink.check_decimal128()
        self._check_topics([t for t in self.settings.kafka.topics if not is_topic_pattern(t)])
        if self._serve_metrics:
            m = self.settings.metrics
            try:
                self.metrics_server = MetricsServer(self.metrics, self.health, m.host, m.port)
            except OSError as exc:
                raise FatalError(
                    f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror} (each worker on a host "
                    "needs its own metrics.port; 0 picks a free one)"
                ) from None
            self.metrics_server.start()
        self.writer.start()
        named = {t for t in self.settings.kafka.topics if not is_topic_pattern(t)}
        dead_letter = dead_letter_topics(self.settings.errors.dead_letter.topic)
        self.source.subscribe(
            self._on_assign,
            self._on_revoke,
            self._on_lost,
            skip=lambda topic: topic not in named and dead_letter(topic),
        )
        self.health.started = True
        wc = self.settings.mongo.write_concern
        log.info(
            "worker started",
            topics=",".join(self.settings.kafka.topics),
            group=self.settings.kafka.group_id,
            group_protocol=self.settings.kafka.group_protocol,
            kafka=self.settings.kafka.bootstrap_servers,
            mongo=self.sink.where,
            database=self.settings.mongo.database,
            write_concern=f"w={wc.w},j={str(wc.j).lower()}",
            write_concurrency=self.settings.batch.write_concurrency,
            metrics_port=self.metrics_server.port if self.metrics_server else None,
        )

    def _check_topics(self, topics: list[str]) -> None:
        """Before consuming a topic: its dead-letter topic exists (or is created), how large a dead letter
        it takes, and which topic the name stands for (so a re-created topic is not taken for the old one)."""
        new = [t for t in topics if t not in self._checked_topics]
        if not new:
            return
        dl = self.settings.errors.dead_letter
        dlq_topics = [t for t in (self.dead_letters.topic_for(t) for t in new) if t is not None]
        if dlq_topics:
            self.topic_checks.ensure_topics(
                dlq_topics, dl.create_topics, dl.topic_partitions, dl.topic_replication_factor
            )
            self.dead_letters.topic_limits.update(self.topic_checks.record_limits(dlq_topics))
        if self.settings.mongo.verify_topic_identity:
            self.writer.identities.update(self.topic_checks.identities(new))
        self._checked_topics.update(new)

    # ---- main loop -------------------------------------------------------------------------------------
    def _step(self) -> None:
        now = time.monotonic()
        self.health.beat()
        self.health.kafka_ok = not self.source.brokers_down
        fatal = self.source.fatal or self._dlq_watch.refusal
        if fatal is not None:
            self._fail(fatal)
            return
        self._collect_completions()
        self._commit(now)
        self._flush_if_due(now)
        if self._error is not None:
            return
        if self.writer.in_flight >= self.settings.batch.max_in_flight and self.builder.full():
            self._wait_for_writer(now)
            return
        if self.source.paused:
            self.source.resume_all()
            self.metrics.paused.set(0)
        wait = self.builder.seconds_until_due(now)
        timeout = MAX_POLL_S if wait is None else min(MAX_POLL_S, wait)
        if self.writer.in_flight or self.builder.size:
            want, timeout = self.builder.room(), min(timeout, SHORT_POLL_S)
        else:
            want = 1  # nothing pending: return as soon as one message arrives, the next call gathers the rest
        messages = self.source.consume(want, timeout)
        if messages:
            self._put(messages)
        # Caught up (fewer messages than asked for): with a write slot free, the open batch is written now
        # rather than after max_wait_ms. Under backlog consume() returns full batches and this never fires.
        self._caught_up = len(messages) < want
        self._report(now)

    def _wait_for_writer(self, now: float) -> None:
        """The writer is full and so is the open batch: wait for a write to finish. Only a writer that makes
        no progress at all (MongoDB down) makes the worker pause its partitions and poll instead."""
        if now - self._writer_progress < STALL_S:
            self.writer.wait_for_completion(WAIT_FOR_WRITER_S)
            return
        if not self.source.paused:
            log.info("writer stalled; pausing consumption (still polling to stay in the group)")
        self.source.pause(self.gate.assigned)
        self.metrics.paused.set(1)
        late = self.source.consume(self.builder.max_messages, MAX_POLL_S)
        if late:  # fetched before the pause took effect: handled like any other (bounded: one fetch)
            self._put(late)
        self._report(now)

    def _put(self, messages: list[Message]) -> None:
        batch = self.builder.open(time.monotonic())
        result = self.converter.put(messages, batch)
        if result.errors:
            for error in result.errors:
                self._consume_error(error)
        if result.poison:
            for poison in result.poison:
                self._stop_at(poison)

    def _stop_at(self, poison: Poison) -> None:
        """errors.tolerance none: nothing at or past this message is committed; the worker stops."""
        tp, offset, exc = poison.tp, poison.offset, poison.error
        self.gate.stop_at(tp, offset)
        log.error(
            "poison message", topic=tp[0], partition=tp[1], offset=offset, kind=exc.kind, reason=exc.message
        )
        self._fail(
            PoisonMessageError(
                f"cannot store the message at {tp[0]}[{tp[1]}]@{offset}: {exc.kind}: {exc.message} "
                "(errors.tolerance=none: stopping; nothing past it is committed)"
            )
        )

    def _fail(self, error: PipelineError) -> None:
        """The first error wins; once set, the loop stops consuming and shuts down."""
        if self._error is None:
            self._error = error

    def _consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fail(FatalError(f"fatal Kafka error: {self.source.redact(error.str())}"))
        elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            log.warning("subscribed topic does not exist (yet)", error=error.str())
        else:
            log.warning("Kafka consume error", error=self.source.redact(error.str()), code=error.name())

    def _flush_if_due(self, now: float) -> None:
        """Hand the open batch to the writer when it is full or old enough (Kafka Connect's flush)."""
        if self.writer.in_flight >= self.settings.batch.max_in_flight:
            return
        # Caught up with a write slot free: write what there is now rather than wait out max_wait_ms.
        slot_free = self._caught_up and self.writer.in_flight < self.writer.limit and self.builder.size > 0
        if self.builder.due(now) or slot_free or (self._error is not None and self.builder.size):
            self._submit_open_batch()

    def _submit_open_batch(self) -> None:
        batch = self.builder.take()
        if batch is not None:
            if self.writer.in_flight == 0:
                self._writer_progress = time.monotonic()  # the stall clock starts with the writer's work
            self.gate.track(batch.seq, batch.spans(), batch.epochs)
            self.writer.submit(batch)
            self.metrics.in_flight.set(self.writer.in_flight)

    def _dead_letter_writer(self) -> DeadLetterWriter:
        dl = self.settings.errors.dead_letter
        collection = self.sink.collection(dl.collection) if dl.collection else None
        limit = DEFAULT_RECORD_LIMIT
        if dl.topic:
            conf = producer_config(self.settings.kafka, {"linger.ms": 5})
            conf["error_cb"] = self._dlq_watch
            limit = int(conf.get("message.max.bytes", DEFAULT_RECORD_LIMIT))
            try:
                self._dlq_producer = Producer(conf)
            except KafkaException as exc:
                raise ConfigurationError(f"invalid Kafka producer configuration: {describe(exc)}") from None
        return DeadLetterWriter(collection, self._dlq_producer, dl.topic, record_limit=limit)

    # ---- completions and commits -----------------------------------------------------------------------
    def _collect_completions(self) -> None:
        for completion in self.writer.take_completed():
            self._writer_progress = time.monotonic()
            self._account(completion)
        self.metrics.in_flight.set(self.writer.in_flight)

    def _account(self, c: Completion) -> None:
        batch = c.batch
        if c.dropped:
            log.info(
                "batch abandoned; its messages stay uncommitted and will be re-delivered", batch=batch.seq
            )
            return
        if c.error is not None and not isinstance(c.error, PoisonMessageError):
            self.gate.failed(batch.seq, batch.epochs)
            self._fail(c.error)
            return
        stale = self.gate.durable(batch.seq, batch.epochs, c.until)
        if c.error is not None:
            self._fail(c.error)  # poison at write time: what precedes it is durable and committed
        self.progress.account(c, {tp for tp in batch.epochs if tp not in stale})

    def _commit(self, now: float, force: bool = False) -> bool:
        """Commit every offset the gate allows. False if a transient failure left some uncommitted."""
        if not force and (now - self._last_commit < COMMIT_INTERVAL_S or not self.commit_backoff.due(now)):
            return True
        # The position is only used where everything delivered is accounted for (see the commit gate); after
        # an error, messages past it were delivered and dropped, so only what is durable counts.
        positions = self.source.positions(self.gate.assigned) if self._error is None else None
        open_tps = self.builder.current.epochs.keys() if self.builder.current else ()
        offsets = self.gate.committable(positions, open_tps)
        if not offsets:
            return True
        started = time.monotonic()
        try:
            self.source.commit(offsets)
        except CommitFailed as exc:
            if exc.rebalance:
                # Partitions are being reassigned: the revoke callback commits (or the new owner re-reads
                # them; what is already stored then counts as duplicates). Not a reason to wait here.
                log.info("commit refused during a rebalance; will retry after it", error=str(exc))
                self.commit_backoff.rebalancing(time.monotonic())
                return True
            self.metrics.retries.labels("kafka_commit").inc()
            if not exc.transient:
                self._fail(FatalError(f"offset commit failed: {exc}"))
                return False
            wait = self.commit_backoff.failed(time.monotonic())
            log.warning("offset commit failed, will retry", error=str(exc), retry_in_s=round(wait, 2))
            return False
        self._last_commit = time.monotonic()
        self.commit_backoff.succeeded()
        self.gate.committed(offsets)
        self.progress.committed(offsets, self._last_commit - started)
        return True

    def _drain(self, deadline: float, tps: list[TP] | None = None) -> bool:
        """Flush the open batch, wait for the writes (all, or those holding `tps`), commit everything
        durable. False if not all of it became durable and committed by the deadline (or on abort)."""
        if self._error is None or isinstance(self._error, PoisonMessageError):
            self._submit_open_batch()
        while not self._abort.is_set():
            self._collect_completions()
            busy = self.writer.in_flight > 0 if tps is None else self.gate.pending(tps)
            if not busy:
                break
            if time.monotonic() >= deadline:
                return False
            self.writer.wait_for_completion(min(0.1, max(0.0, deadline - time.monotonic())))
        if self._abort.is_set():
            return False
        while not self._commit(time.monotonic(), force=True):
            if self._abort.is_set() or time.monotonic() + self.commit_backoff.delay_s >= deadline:
                return False
            time.sleep(self.commit_backoff.delay_s)
        return True

    # ---- rebalance ---------------------------------------------------------------------------------------
    def _on_assign(self, tps: list[TP]) -> None:
        """Partitions added (all of them with the eager protocol, the new ones with incremental ones)."""
        self.gate.assign(tps)
        self.metrics.rebalances.labels("assign").inc()
        self._set_assigned()
        topics = sorted({t for t, _ in tps})
        try:
            self._check_topics(topics)
        except PipelineError as exc:
            # Nothing of these partitions may be consumed: stop before their first message is handled.
            self.gate.revoke(tps)
            self._fail(exc)
        except Exception as exc:
            self.gate.revoke(tps)
            self._fail(FatalError(f"cannot check topics {','.join(topics)}: {describe(exc)}"))
        log.info("partitions assigned", partitions=format_partitions(tps))

    def _on_revoke(self, tps: list[TP]) -> None:
        """Finish in-flight work of these partitions and commit it before they move; what can't be finished in
        time is dropped (the writer skips it from then on) and stays uncommitted."""
        self.metrics.rebalances.labels("revoke").inc()
        if self._abort.is_set():
            complete = False
        elif self._closing:
            complete = self._drain(time.monotonic() + 0.5, tps)
        else:
            complete = self._drain(time.monotonic() + self.settings.worker.rebalance_timeout_s, tps)
        self.gate.revoke(tps)
        self.source.release(tps)
        self._set_assigned()
        if complete:
            log.info("partitions revoked", partitions=format_partitions(tps), flushed=True)
        else:
            log.warning(
                "partitions revoked before their in-flight work was durable; it stays uncommitted and the "
                "new owner re-reads it",
                partitions=format_partitions(tps),
            )

    def _on_lost(self, tps: list[TP]) -> None:
        """Partitions were lost (session timeout): someone else may own them already. Commit nothing."""
        self.metrics.rebalances.labels("lost").inc()
        self.gate.revoke(tps)
        self.source.release(tps)
        self._set_assigned()
        log.warning(
            "partitions lost; in-flight work for them will not be committed",
            partitions=format_partitions(tps),
        )

    def _set_assigned(self) -> None:
        self.health.assigned = len(self.gate.assigned)
        self.metrics.assigned.set(self.health.assigned)

    # ---- shutdown ----------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._closing = True
        if self._error is None or isinstance(self._error, PoisonMessageError):
            timeout = 0.0 if self._abort.is_set() else self.settings.worker.shutdown_timeout_s
            complete = self._drain(time.monotonic() + timeout)
        else:
            # A fatal error: write nothing more, but commit what is already durable.
            self.writer.abort()
            self.writer.wait_idle(1.0)
            self._collect_completions()
            self._commit(time.monotonic(), force=True)
            complete = False
        if not complete:
            unfinished = self.writer.in_flight
            self.writer.abort()
            if unfinished:
                log.warning(
                    "stopping with unwritten batches; they were not committed and will be re-delivered",
                    batches=unfinished,
                )
        t = self.totals
        log.info(
            "worker stopping",
            consumed=t.consumed,
            stored=t.stored,
            duplicates=t.duplicates,
            dead_lettered=t.dead_lettered,
            filtered=t.filtered,
        )
        self._close_clients()

    def _close_clients(self) -> None:
        try:
            self.source.close()
        except Exception as exc:
            log.warning("error while leaving the consumer group", error=self.source.redact(describe(exc)))
        self.writer.stop(2.0)
        if self._dlq_producer is not None:
            try:
                self._dlq_producer.flush(5.0)
            except Exception as exc:  # e.g. a producer that could never start (no permission): not a crash
                log.warning("dead-letter producer did not flush", error=self.source.redact(describe(exc)))
            self._dlq_producer = None  # destroyed now, not at some later garbage collection
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.sink.close()

    def _report(self, now: float) -> None:
        if self.metrics_server is not None and now - self._last_lag >= LAG_REFRESH_S:
            self._last_lag = now
            self._lag()  # keeps the lag gauge fresh between summaries (cached watermarks: no broker call)
        if self.progress.summary_due(now):
            self.progress.summary(
                now, self._lag(), self.writer.in_flight, bool(self.source.paused), self.writer.limit
            )

    def _lag(self) -> int | None:
        return self.progress.lag(self.gate.assigned, self.source.watermarks, self.gate.committed_offset)
