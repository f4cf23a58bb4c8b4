"""Unit tests for pipeline.core.deadletter.DeadLetter: the stored document and Kafka headers (no servers)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import bson
import pytest
from bson.binary import Binary

from pipeline.core.codec import MAX_BSON_BYTES
from pipeline.core.deadletter import (
    HEADER_PREFIX,
    MAX_READABLE_COPY_BYTES,
    MAX_STORED_VALUE_BYTES,
    DeadLetter,
)

FAILED_AT = datetime(2024, 5, 2, 13, 0, 0, 123000, tzinfo=UTC)


def make(
    value: bytes | None = b'{"symbol": 1}', key: bytes | None = b"PETR4", **overrides: object
) -> DeadLetter:
    fields: dict[str, object] = {
        "topic": "petr4",
        "partition": 2,
        "offset": 41,
        "key": key,
        "value": value,
        "timestamp_ms": 1_714_654_800_000,
        "kind": "invalid_field",
        "message": "symbol 1 does not match",
        "stage": "decode",
        "failed_at": FAILED_AT,
    }
    fields.update(overrides)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def test_document_for_a_utf8_value() -> None:
    value = '{"symbol": "ação"}'.encode()
    doc = make(value=value).to_document()
    assert doc == {
        "_id": {"topic": "petr4", "partition": 2, "offset": 41},
        "error": {"kind": "invalid_field", "message": "symbol 1 does not match", "stage": "decode"},
        "failed_at": FAILED_AT,
        "kafka": {"timestamp": datetime(2024, 5, 2, 13, 0, tzinfo=UTC), "key": "PETR4"},
        "value": Binary(value),
        "value_text": '{"symbol": "ação"}',
        "value_length": len(value),
    }
    assert isinstance(doc["value"], Binary)
    assert bytes(doc["value"]) == value


def test_document_for_a_non_utf8_value_keeps_bytes_and_base64() -> None:
    value = b"\xff\xfe\x00binary\x80"
    doc = make(value=value).to_document()
    assert bytes(doc["value"]) == value
    assert doc["value_text"] is None
    assert base64.b64decode(doc["value_base64"]) == value
    assert doc["value_length"] == len(value)
    assert "value_truncated" not in doc


def test_document_for_an_empty_value() -> None:
    doc = make(value=b"").to_document()
    assert bytes(doc["value"]) == b""
    assert doc["value_text"] == ""
    assert doc["value_length"] == 0


def test_document_for_a_tombstone() -> None:
    doc = make(value=None, kind="null_value").to_document()
    assert doc["value"] is None
    assert doc["value_text"] is None
    assert doc["value_length"] is None
    assert "value_base64" not in doc
    assert "value_truncated" not in doc
    assert doc["error"]["kind"] == "null_value"


def test_value_at_the_limit_is_not_truncated() -> None:
    value = b"\x80" * MAX_STORED_VALUE_BYTES
    doc = make(value=value).to_document()
    assert "value_truncated" not in doc
    assert len(doc["value"]) == MAX_STORED_VALUE_BYTES


def test_value_above_the_limit_is_truncated_with_length_and_sha256() -> None:
    value = b"\x80" * MAX_STORED_VALUE_BYTES + b"tail"
    doc = make(value=value).to_document()
    assert doc["value_truncated"] is True
    assert doc["value_length"] == len(value)
    assert doc["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert bytes(doc["value"]) == value[:MAX_STORED_VALUE_BYTES]


def test_large_values_keep_exact_bytes_without_a_second_readable_copy() -> None:
    value = b"a" * (MAX_STORED_VALUE_BYTES + 10)
    doc = make(value=value).to_document()
    assert doc["value_truncated"] is True
    assert bytes(doc["value"]) == value[:MAX_STORED_VALUE_BYTES]
    assert doc["value_text"] is None and "value_base64" not in doc
    small = make(value=b"a" * MAX_READABLE_COPY_BYTES).to_document()
    assert small["value_text"] == "a" * MAX_READABLE_COPY_BYTES
    big = make(value=b"a" * (MAX_READABLE_COPY_BYTES + 1)).to_document()
    assert bytes(big["value"]) == b"a" * (MAX_READABLE_COPY_BYTES + 1) and big["value_text"] is None


@pytest.mark.parametrize(
    "value",
    [b"a" * (MAX_STORED_VALUE_BYTES + 1), b"a" * MAX_STORED_VALUE_BYTES, b"\xff" * (7 * 1024 * 1024)],
    ids=["utf8-over-limit", "utf8-at-limit", "binary-7MiB"],
)
def test_dead_letter_document_fits_in_a_mongodb_document(value: bytes) -> None:
    assert len(bson.encode(make(value=value).to_document())) <= MAX_BSON_BYTES


def test_binary_key_and_missing_key_and_timestamp() -> None:
    doc = make(key=b"\xff\x01").to_document()
    assert doc["kafka"]["key"] == Binary(b"\xff\x01")
    doc = make(key=None, timestamp_ms=None).to_document()
    assert doc["kafka"] == {"timestamp": None, "key": None}


def test_document_round_trips_through_bson_with_exact_bytes() -> None:
    value = b"\x00\x01\xfe{not json"
    decoded = bson.decode(bson.encode(make(value=value, key=b"\x9c").to_document()))
    assert decoded["value"] == value
    assert decoded["kafka"]["key"] == b"\x9c"
    assert decoded["_id"] == {"topic": "petr4", "partition": 2, "offset": 41}


def test_write_stage_is_recorded() -> None:
    doc = make(stage="write", kind="mongo_rejected").to_document()
    assert doc["error"] == {"kind": "mongo_rejected", "message": "symbol 1 does not match", "stage": "write"}


def test_headers_follow_the_error_header_convention() -> None:
    headers = make().headers()
    assert headers == [
        (HEADER_PREFIX + "topic", b"petr4"),
        (HEADER_PREFIX + "partition", b"2"),
        (HEADER_PREFIX + "offset", b"41"),
        (HEADER_PREFIX + "class", b"invalid_field"),
        (HEADER_PREFIX + "message", b"symbol 1 does not match"),
        (HEADER_PREFIX + "stage", b"decode"),
        (HEADER_PREFIX + "time", b"2024-05-02T13:00:00.123000+00:00"),
    ]
    assert HEADER_PREFIX == "tickpipe.error."


def test_header_message_is_limited_to_4096_bytes() -> None:
    headers = dict(make(message="é" * 5000).headers())
    assert len(headers[HEADER_PREFIX + "message"]) == 4096
    assert headers[HEADER_PREFIX + "message"] == ("é" * 2048).encode()


def test_headers_encode_non_ascii_utf8() -> None:
    headers = dict(make(message="preço inválido").headers())
    assert headers[HEADER_PREFIX + "message"].decode() == "preço inválido"
