"""The dead-letter record: a message that can never be stored, with its original bytes and the reason (pure).

It has two shapes, one per destination: a MongoDB document (`_id` = the message's coordinates, so re-delivery
is idempotent there too; values over 8 MiB are truncated, with their length and SHA-256) and a Kafka record
(the original key and value, the reason in `tickpipe.error.*` headers as Kafka Connect does; a value that
would exceed what the dead-letter topic accepts is truncated the same way, so a dead letter is never refused
for its size).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson.binary import Binary

from pipeline.core.codec import decode_key, encode_key
from pipeline.core.coordinates import document_id
from pipeline.core.timefmt import from_epoch_ms, millis_utc

# Keep dead-letter documents well under MongoDB's 16 MB limit; bigger values are truncated there, with their
# length and SHA-256.
MAX_STORED_VALUE_BYTES = 8 * 1024 * 1024
# Readable copies (value_text, or value_base64 for non-UTF-8 bytes) only for values up to this size, so that
# a document never holds two copies of a big value.
MAX_READABLE_COPY_BYTES = 64 * 1024
HEADER_PREFIX = "tickpipe.error."
# What a Kafka record adds to its key, value and headers (record and batch framing), with room to spare.
RECORD_OVERHEAD_BYTES = 512


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

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    def to_document(self) -> dict[str, Any]:
        value = self.value
        doc: dict[str, Any] = {
            "_id": document_id(self.topic, self.partition, self.offset),
            "error": {"kind": self.kind, "message": self.message, "stage": self.stage},
            "failed_at": self.failed_at,
            "kafka": {
                "timestamp": from_epoch_ms(self.timestamp_ms) if self.timestamp_ms is not None else None,
                "key": decode_key(self.key),
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

    def kafka_record(self, max_bytes: int) -> tuple[bytes | None, list[tuple[str, str | bytes | None]]]:
        """The value and headers for the dead-letter topic, within `max_bytes` for the whole record: a value
        that does not fit is cut, and headers say so with its full length and SHA-256."""
        headers = self.headers()
        value = self.value
        fixed = RECORD_OVERHEAD_BYTES + len(self.key or b"") + _headers_size(headers)
        if value is None or fixed + len(value) <= max_bytes:
            return value, headers
        headers += [
            (HEADER_PREFIX + "value.truncated", b"true"),
            (HEADER_PREFIX + "value.length", str(len(value)).encode()),
            (HEADER_PREFIX + "value.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        room = max(0, max_bytes - RECORD_OVERHEAD_BYTES - len(self.key or b"") - _headers_size(headers))
        return value[:room], headers


def _headers_size(headers: list[tuple[str, str | bytes | None]]) -> int:
    return sum(len(name) + len(value or b"") + 8 for name, value in headers)


def letter_for_message(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    timestamp_ms: int | None,
    kind: str,
    reason: str,
    stage: str = "decode",
) -> DeadLetter:
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        timestamp_ms=timestamp_ms,
        kind=kind,
        message=reason,
        stage=stage,
        failed_at=datetime.now(UTC),
    )


def letter_for_document(document: dict[str, Any], value: bytes | None, kind: str, reason: str) -> DeadLetter:
    """A document that was built but can't be stored as it is (refused by MongoDB, or its coordinates hold a
    different message): the letter carries the message's original key and value bytes."""
    coordinates = document["_id"]
    kafka = document.get("kafka") or {}
    stamp = kafka.get("timestamp")
    if isinstance(stamp, datetime):
        timestamp_ms: int | None = millis_utc(stamp)
    else:
        timestamp_ms = int(stamp) if stamp is not None else None  # DatetimeMS
    return letter_for_message(
        coordinates["topic"],
        coordinates["partition"],
        coordinates["offset"],
        encode_key(kafka.get("key")),
        value,
        timestamp_ms,
        kind,
        reason,
        stage="write",
    )
