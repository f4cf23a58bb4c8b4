"""Dead letters: messages that can never be stored, kept with their original bytes and the reason.

Destinations (either or both): a Kafka topic (default "<topic>.dlq"; original key and value bytes, the reason
in headers, following Kafka Connect's convention) and a MongoDB collection (default "dead_letters", `_id` =
source coordinates, so re-delivery is idempotent there too). A batch's dead letters are durable (produce
acknowledged by all in-sync replicas, or written with the configured write concern) before its offsets are
committed.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson.binary import Binary
from confluent_kafka import KafkaError, Producer
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from pipeline.core.errors import DUPLICATE_KEY, FatalError, TransientError, is_transient_kafka
from pipeline.core.timefmt import EPOCH

# Keep dead-letter documents well under MongoDB's 16 MB limit; bigger values are kept in the Kafka DLQ whole
# and in MongoDB truncated, with their length and SHA-256.
MAX_STORED_VALUE_BYTES = 8 * 1024 * 1024
# Readable copies (value_text, or value_base64 for non-UTF-8 bytes) only for values up to this size, so that
# a document never holds two copies of a big value.
MAX_READABLE_COPY_BYTES = 64 * 1024
HEADER_PREFIX = "tickpipe.error."


@dataclass(slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    kind: str
    message: str
    stage: str  # "decode" (rejected by the pipeline) or "write" (rejected by MongoDB)
    failed_at: datetime

    def to_document(self) -> dict[str, Any]:
        value = self.value
        doc: dict[str, Any] = {
            "_id": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "error": {"kind": self.kind, "message": self.message, "stage": self.stage},
            "failed_at": self.failed_at,
            "kafka": {
                "timestamp": EPOCH + timedelta(milliseconds=self.timestamp_ms)
                if self.timestamp_ms is not None
                else None,
                "key": _bytes_field(self.key),
            },
            "value": None,
            "value_text": None,
            "value_length": None if value is None else len(value),
        }
        if value is not None:
            if len(value) > MAX_STORED_VALUE_BYTES:
                doc["value_truncated"] = True
                doc["value_sha256"] = hashlib.sha256(value).hexdigest()
                value = value[:MAX_STORED_VALUE_BYTES]
            doc["value"] = Binary(value)  # the exact original bytes
            if len(value) <= MAX_READABLE_COPY_BYTES:
                try:
                    doc["value_text"] = value.decode()
                except UnicodeDecodeError:
                    doc["value_base64"] = base64.b64encode(value).decode()
        return doc

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return [
            (HEADER_PREFIX + "topic", self.topic.encode()),
            (HEADER_PREFIX + "partition", str(self.partition).encode()),
            (HEADER_PREFIX + "offset", str(self.offset).encode()),
            (HEADER_PREFIX + "class", self.kind.encode()),
            (HEADER_PREFIX + "message", self.message.encode()[:4096]),
            (HEADER_PREFIX + "stage", self.stage.encode()),
            (HEADER_PREFIX + "time", self.failed_at.isoformat().encode()),
        ]


def _bytes_field(data: bytes | None) -> str | Binary | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return Binary(data)


class DeadLetterWriter:
    """Writes dead letters durably to the configured destinations; raises TransientError to be retried."""

    def __init__(
        self,
        collection: Collection[dict[str, Any]] | None,
        producer: Producer | None,
        topic_template: str | None,
        produce_timeout_s: float = 30.0,
    ) -> None:
        self.collection = collection
        self.producer = producer
        self.topic_template = topic_template if producer is not None else None
        self.produce_timeout_s = produce_timeout_s

    @property
    def enabled(self) -> bool:
        return self.collection is not None or self.topic_template is not None

    def topic_for(self, source_topic: str) -> str | None:
        return self.topic_template.replace("{topic}", source_topic) if self.topic_template else None

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        if self.topic_template is not None:
            self._produce(letters)
        if self.collection is not None:
            self._insert(letters)

    def _insert(self, letters: list[DeadLetter]) -> None:
        assert self.collection is not None
        try:
            self.collection.insert_many([letter.to_document() for letter in letters], ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            others = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if details.get("writeConcernErrors") or others:
                first = (others or details.get("writeConcernErrors") or [{}])[0]
                raise TransientError(
                    f"dead-letter write failed: {first.get('errmsg', 'write concern error')}"
                ) from None

    def _produce(self, letters: list[DeadLetter]) -> None:
        assert self.producer is not None
        failures: list[KafkaError] = []
        lock = threading.Lock()

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                with lock:
                    failures.append(err)

        for letter in letters:
            topic = self.topic_for(letter.topic)
            assert topic is not None
            while True:
                try:
                    self.producer.produce(
                        topic,
                        value=letter.value,
                        key=letter.key,
                        headers=letter.headers(),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
        remaining = self.producer.flush(self.produce_timeout_s)
        if remaining:
            raise TransientError(f"dead-letter topic: {remaining} message(s) not acknowledged in time")
        if failures:
            error = failures[0]
            if not is_transient_kafka(error) and error.code() != KafkaError._MSG_TIMED_OUT:
                raise FatalError(f"dead-letter topic rejected a message: {error.name()}: {error.str()}")
            raise TransientError(f"dead-letter topic: delivery failed: {error.str()}")
