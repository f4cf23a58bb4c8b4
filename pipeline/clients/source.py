"""Kafka side: the consumer (group membership, batched consume, synchronous explicit commits, pause/resume).

All calls happen on the worker's main thread; librdkafka invokes the rebalance callbacks from inside
`consume()`, on that same thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.clients.kafka import consumer_config
from pipeline.core.errors import (
    FatalError,
    PipelineError,
    StartupError,
    describe,
    is_rebalance_error,
    is_transient_kafka,
    kafka_error_of,
)
from pipeline.ops.config import KafkaConfig
from pipeline.ops.logs import get_logger
from pipeline.ops.redact import redact_text

log = get_logger("pipeline.clients.source")
TP = tuple[str, int]
RebalanceCallback = Callable[[list[TP]], None]


class CommitFailed(Exception):
    def __init__(self, error: KafkaError | None, message: str) -> None:
        super().__init__(message)
        self.error = error

    @property
    def transient(self) -> bool:
        return self.error is None or is_transient_kafka(self.error)

    @property
    def rebalance(self) -> bool:
        return self.error is not None and is_rebalance_error(self.error)


class KafkaSource:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._secrets = [s.get_secret_value() for s in (config.security.sasl_password,) if s is not None]
        self._lock = threading.Lock()
        self.last_error: KafkaError | None = None
        # Set (from librdkafka's error callback) when the client can't go on: the worker stops with it.
        self.fatal: PipelineError | None = None
        self.brokers_down = False
        try:
            self.consumer = Consumer(consumer_config(config, self._on_error))
        except KafkaException as exc:
            raise StartupError(
                f"invalid Kafka consumer configuration: {self.redact(describe(exc))}"
            ) from None
        self.paused: set[TP] = set()

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def _on_error(self, error: KafkaError) -> None:
        # Called from consume()/poll(); librdkafka keeps reconnecting by itself, we only report.
        with self._lock:
            self.last_error = error
            if error.code() == KafkaError._ALL_BROKERS_DOWN:
                self.brokers_down = True
        if error.fatal():
            self.fatal = self.fatal or FatalError(f"fatal Kafka error: {self.redact(error.str())}")
            log.error("fatal Kafka client error", error=self.redact(f"{error.name()}: {error.str()}"))
        else:
            log.warning("Kafka client error (librdkafka retries by itself)", error=self.redact(error.str()))

    def check_connection(self, timeout_s: float) -> None:
        """Fetch cluster metadata within a bounded time, or raise StartupError naming the last error."""
        deadline = time.monotonic() + timeout_s
        try:
            self.consumer.list_topics(timeout=max(0.5, deadline - time.monotonic()))
        except KafkaException as exc:
            cause = self.last_error.str() if self.last_error is not None else describe(exc)
            raise StartupError(
                f"cannot reach Kafka at {self.config.bootstrap_servers} within {timeout_s:g}s: "
                f"{self.redact(cause)}"
            ) from None
        if self.last_error is not None and self.last_error.code() in (
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
            KafkaError._SSL,
        ):
            raise StartupError(
                f"Kafka at {self.config.bootstrap_servers} refused us: {self.redact(self.last_error.str())}"
            )
        self.brokers_down = False

    def subscribe(
        self, on_assign: RebalanceCallback, on_revoke: RebalanceCallback, on_lost: RebalanceCallback
    ) -> None:
        def tps(partitions: list[TopicPartition]) -> list[TP]:
            return [(p.topic, p.partition) for p in partitions]

        self.consumer.subscribe(
            list(self.config.topics),
            on_assign=lambda _c, parts: on_assign(tps(parts)),
            on_revoke=lambda _c, parts: on_revoke(tps(parts)),
            on_lost=lambda _c, parts: on_lost(tps(parts)),
        )

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = self.consumer.consume(max(1, max_messages), timeout_s)
        if messages:
            self.brokers_down = False
        return messages

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Synchronously commit exactly these next-offsets. Raises CommitFailed."""
        partitions = [
            TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()
        ]
        try:
            result = self.consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            error = kafka_error_of(exc)
            raise CommitFailed(error, self.redact(describe(exc))) from None
        for tp in result or []:
            if tp.error is not None:
                raise CommitFailed(tp.error, f"{tp.topic}[{tp.partition}]: {tp.error.str()}")

    def committed(self, tps: list[TP], timeout_s: float = 10.0) -> dict[TP, int]:
        parts = self.consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout_s)
        return {(p.topic, p.partition): p.offset for p in parts}

    def pause(self, tps: list[TP]) -> None:
        todo = [tp for tp in tps if tp not in self.paused]
        if todo:
            self.consumer.pause([TopicPartition(t, p) for t, p in todo])
            self.paused.update(todo)

    def resume_all(self) -> None:
        if self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.paused])
            self.paused.clear()

    def release(self, tps: list[TP]) -> None:
        """Resume partitions we paused before they leave us: librdkafka keeps a partition's pause flag across
        a rebalance, so a partition revoked while paused would stay paused when it is assigned again."""
        todo = [tp for tp in tps if tp in self.paused]
        if todo:
            self.consumer.resume([TopicPartition(t, p) for t, p in todo])
            self.paused.difference_update(todo)

    def seek(self, tp: TP, offset: int) -> None:
        self.consumer.seek(TopicPartition(tp[0], tp[1], offset))

    def watermarks(self, tp: TP) -> tuple[int, int] | None:
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            return None
        return (low, high) if high >= 0 else None

    def close(self) -> None:
        self.consumer.close()
