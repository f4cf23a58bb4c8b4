"""Writes dead letters durably to their destinations: a Kafka topic (default `<topic>.dlq`) and/or a MongoDB
collection (default `dead_letters`). A batch's offsets are committed only after its dead letters are durable:
produced and acknowledged by all in-sync replicas, and inserted with the configured write concern.

A dead letter is never refused for its size: its Kafka record is cut to what the topic accepts (see
`DeadLetter.kafka_record`); a broker that still finds it too large gets it again, cut to half.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from pipeline.clients.kafka import produce_waiting
from pipeline.core.deadletter import DeadLetter
from pipeline.core.errors import DUPLICATE_KEY_CODES, FatalError, TransientError, is_transient_kafka
from pipeline.core.write_outcome import write_concern_error

# librdkafka's default `message.max.bytes`: the largest record the producer sends unless told otherwise.
DEFAULT_RECORD_LIMIT = 1_000_000
# Below this a value is not cut further: the letter is sent with its headers only (length and SHA-256).
MIN_RECORD_LIMIT = 4096


class DeadLetterTopicError(TransientError):
    """The dead-letter *Kafka topic* did not take the letters (retried; never reported as MongoDB's)."""


class DeadLetterWriter:
    def __init__(
        self,
        collection: Collection[dict[str, Any]] | None,
        producer: Producer | None,
        topic_template: str | None,
        produce_timeout_s: float = 30.0,
        record_limit: int = DEFAULT_RECORD_LIMIT,
    ) -> None:
        self.collection = collection
        self.producer = producer
        self.topic_template = topic_template if producer is not None else None
        self.produce_timeout_s = produce_timeout_s
        self.record_limit = record_limit
        # dead-letter topic -> the largest record it accepts (its max.message.bytes), when known
        self.topic_limits: dict[str, int] = {}
        self._lock = threading.Lock()  # one produce-and-flush at a time (flush waits for every message)

    def topic_for(self, source_topic: str) -> str | None:
        return self.topic_template.replace("{topic}", source_topic) if self.topic_template else None

    def limit_for(self, topic: str) -> int:
        return min(self.record_limit, self.topic_limits.get(topic, self.record_limit))

    def produce(self, letters: Sequence[DeadLetter]) -> None:
        if letters and self.topic_template is not None:
            with self._lock:
                self._produce(letters)

    def insert(self, letters: Sequence[DeadLetter]) -> None:
        if letters and self.collection is not None:
            self._insert(letters)

    def _insert(self, letters: Sequence[DeadLetter]) -> None:
        assert self.collection is not None
        try:
            self.collection.insert_many([letter.to_document() for letter in letters], ordered=False)
        except BulkWriteError as exc:
            # A duplicate key: the same letter, stored by an earlier delivery of its message.
            details = exc.details
            others = [e for e in details.get("writeErrors", []) if e.get("code") not in DUPLICATE_KEY_CODES]
            reason = others[0].get("errmsg") if others else write_concern_error(details)
            if reason is not None:
                raise TransientError(f"dead-letter collection write failed: {reason}") from None

    def _produce(self, letters: Sequence[DeadLetter]) -> None:
        assert self.producer is not None
        limits = {id(letter): self.limit_for(self._topic(letter)) for letter in letters}
        todo = list(letters)
        while todo:
            too_large = self._send(todo, limits)
            todo = []
            for letter in too_large:
                limit = limits[id(letter)]
                if limit <= MIN_RECORD_LIMIT:
                    raise FatalError(
                        f"dead-letter topic {self._topic(letter)} refuses even a {limit}-byte record "
                        f"(MSG_SIZE_TOO_LARGE): check its max.message.bytes"
                    )
                limits[id(letter)] = max(MIN_RECORD_LIMIT, limit // 2)
                todo.append(letter)

    def _topic(self, letter: DeadLetter) -> str:
        topic = self.topic_for(letter.topic)
        assert topic is not None
        return topic

    def _send(self, letters: Sequence[DeadLetter], limits: dict[int, int]) -> list[DeadLetter]:
        """Produce and wait for every acknowledgement; returns the letters the broker found too large."""
        assert self.producer is not None
        failures: list[tuple[DeadLetter, KafkaError]] = []
        lock = threading.Lock()

        def on_delivery(letter: DeadLetter) -> Any:
            def delivered(err: KafkaError | None, _msg: Any) -> None:
                if err is not None:
                    with lock:
                        failures.append((letter, err))

            return delivered

        too_large: list[DeadLetter] = []
        for letter in letters:
            value, headers = letter.kafka_record(limits[id(letter)])
            try:
                produce_waiting(
                    self.producer,
                    self._topic(letter),
                    value=value,
                    key=letter.key,
                    headers=headers,
                    on_delivery=on_delivery(letter),
                )
            except KafkaException as exc:  # refused before sending (e.g. above message.max.bytes)
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    too_large.append(letter)
                    continue
                raise DeadLetterTopicError(f"dead-letter topic {self._topic(letter)}: {exc}") from None
        remaining = self.producer.flush(self.produce_timeout_s)
        if remaining:
            topics = ",".join(sorted({self._topic(letter) for letter in letters}))
            raise DeadLetterTopicError(
                f"dead-letter topic {topics}: {remaining} message(s) not acknowledged within "
                f"{self.produce_timeout_s:g}s"
            )
        for letter, error in failures:
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                too_large.append(letter)
                continue
            where = f"dead-letter topic {self._topic(letter)}"
            if not is_transient_kafka(error) and error.code() not in (
                KafkaError._MSG_TIMED_OUT,
                KafkaError.UNKNOWN_TOPIC_OR_PART,
            ):
                raise FatalError(f"{where} refused a dead letter: {error.name()}: {error.str()}")
            raise DeadLetterTopicError(f"{where}: delivery failed: {error.name()}: {error.str()}")
        return too_large
